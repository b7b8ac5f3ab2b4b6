"""Without bubblewrap (NIAS_SANDBOX=off) no PID namespace ends a job's children with it: the
process-group kill must. A job over its time limit, or cancelled while it runs, leaves no process."""
from __future__ import annotations

import subprocess
import zipfile

import pytest

from tests.support.projects import zip_project
from tests.support.stack import LocalStack, wait_until


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("unsandboxed"), units=1, NIAS_SANDBOX="off",
                    NIAS_KILL_GRACE_S="2") as stack:
        yield stack


def _running_processes(marker: str) -> list[str]:
    """Live (not zombie) processes whose command line holds `marker`."""
    found = subprocess.run(["pgrep", "-f", "-r", "R,S,D,T", marker], capture_output=True, text=True)
    return found.stdout.split()


def _submit_spawner(stack, tmp_path, **fields) -> tuple[dict, str]:
    """The spawner fixture: a child marked with the job's id, then both sleep far past any test."""
    job = stack.client.submit(zip_project("spawner", tmp_path / "spawner.zip"), **fields)
    marker = f"nias-spawned-by-{job['id']}"
    wait_until(lambda: _running_processes(marker), timeout_s=60, message="the job's child running")
    return job, marker


def test_the_unit_runs_jobs_outside_bubblewrap_when_the_sandbox_is_off(unsandboxed):
    assert "without a mount namespace" in unsandboxed.log_path.read_text(errors="replace")


def test_a_job_over_its_time_limit_is_killed_with_every_child_it_spawned(unsandboxed, tmp_path):
    job, marker = _submit_spawner(unsandboxed, tmp_path, timeout_s=3)
    done = unsandboxed.client.wait(job["id"], timeout_s=60)
    assert done["state"] == "failed"
    assert "time limit of 3 s" in done["error"]
    wait_until(lambda: not _running_processes(marker), timeout_s=10, message="the job's child ended")


def test_cancelling_a_running_job_kills_every_child_it_spawned(unsandboxed, tmp_path):
    job, marker = _submit_spawner(unsandboxed, tmp_path)
    response = unsandboxed.http.put(f"{unsandboxed.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"},
                                    timeout=10)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    wait_until(lambda: unsandboxed.client.job(job["id"])["result_size"], timeout_s=30, message="result recorded")
    path = unsandboxed.client.result(job["id"], tmp_path / "cancelled.zip")
    assert zipfile.ZipFile(path).read("child.txt").decode() == marker
    wait_until(lambda: not _running_processes(marker), timeout_s=10, message="the job's child ended")
