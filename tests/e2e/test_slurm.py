"""Jobs of the `cluster` pool run as batch jobs on a real one-node Slurm cluster (slurmctld, slurmd
and munged on 127.0.0.1), through a Slurm unit started with `make unit`: results, exit codes, the
time limit, cancel, pause and resume, a job pending for resources with a new priority, and the unit
killed and restarted while its batch jobs run. One cluster, one stack and one unit for them all."""
from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.browser import browser, console_errors, new_page, page  # noqa: F401 (fixtures)
from tests.support.projects import zip_entries
from tests.support.slurm import SlurmUnit, in_queue, queue_state, slurm
from tests.support.stack import LocalStack, wait_until

pytestmark = pytest.mark.e2e

SLEEPER = ("import signal, sys, time, os\nos.makedirs('output', exist_ok=True)\n"
           "def stop(signum, frame):\n    open('output/terminated.txt', 'w').write(str(signum))\n    sys.exit(143)\n"
           "signal.signal(signal.SIGTERM, stop)\nprint('started', flush=True)\ntime.sleep(300)\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slurm_cluster):
    with LocalStack(tmp_path_factory.mktemp("slurm-stack"), units=1, NIAS_POOLS="default,cluster",
                    NIAS_AMQP_HEARTBEAT_S="5") as stack:
        yield stack


@pytest.fixture(scope="module")
def unit(stack, slurm_cluster):
    work = Path(slurm_cluster.root).parent / f"work-{uuid.uuid4().hex[:6]}"
    unit = SlurmUnit(stack, slurm_cluster, work, Path(slurm_cluster.root).parent / "unit.log",
                     NIAS_KILL_GRACE_S="2", NIAS_SLURM_MAX_JOBS="3")
    try:
        yield unit.start()
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{unit.log_tail()}") from None
    finally:
        unit.stop()


def submit(stack: LocalStack, tmp_path: Path, code: str, **fields) -> dict:
    return stack.client.submit(zip_entries(tmp_path / f"{uuid.uuid4().hex[:6]}.zip", {"code.py": code}),
                               pool="cluster", **fields)


def job_of(stack: LocalStack, job_id: str) -> dict:
    return stack.http.get(f"{stack.url}/api/jobs/{job_id}", timeout=10).json()


def log_of(stack: LocalStack, job_id: str) -> str:
    return stack.http.get(f"{stack.url}/api/jobs/{job_id}/log", timeout=30).text


def result_files(stack: LocalStack, job_id: str) -> dict[str, bytes]:
    response = stack.http.get(f"{stack.url}/api/jobs/{job_id}/result", timeout=60)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def batch_running(stack: LocalStack, job_id: str, marker: str = "started") -> dict:
    """Wait until the job's batch job runs and its code has printed `marker`."""
    return wait_until(lambda: (job := job_of(stack, job_id))["execution"] and job["execution"].get("slurm_state")
                      == "RUNNING" and marker in log_of(stack, job_id) and job, timeout_s=120, interval_s=0.5,
                      message=f"job {job_id} running on the cluster")


def set_state(stack: LocalStack, job_id: str, state: str):
    return stack.http.put(f"{stack.url}/api/jobs/{job_id}/state", json={"state": state}, timeout=10)


def test_a_job_of_the_cluster_pool_runs_as_a_batch_job_and_its_result_log_and_node_come_back(
        stack, unit, slurm_cluster, tmp_path):
    described = unit.online()
    assert (described["executor"], described["pools"], described["pause_refusal"]) == ("slurm", ["cluster"], None)
    job = submit(stack, tmp_path, "import os\nos.makedirs('output', exist_ok=True)\n"
                                  "open('output/answer.txt', 'w').write('42')\nprint('hello from the cluster')\n",
                 timeout_s=120)
    done = stack.client.wait(job["id"], timeout_s=180)
    assert (done["state"], done["unit"], done["exit_code"]) == ("succeeded", "hpc-1", 0), done
    execution = done["execution"]
    assert (execution["executor"], execution["slurm_state"], execution["node"]) == ("slurm", "COMPLETED", "localhost")
    assert result_files(stack, job["id"])["answer.txt"] == b"42"
    assert "hello from the cluster" in log_of(stack, job["id"])
    shown = slurm(slurm_cluster, "scontrol", "show", "job", "-o", execution["slurm_job_id"])
    assert f"JobName=nias-{job['id']} " in shown and "TimeLimit=00:02:00" in shown  # 120 s: whole minutes


def test_a_non_zero_exit_fails_the_job_with_its_code_and_the_end_of_stderr(stack, unit, tmp_path):
    job = submit(stack, tmp_path, "import sys\nprint('boom on the cluster', file=sys.stderr)\nsys.exit(3)\n")
    done = stack.client.wait(job["id"], timeout_s=180)
    assert (done["state"], done["exit_code"], done["execution"]["slurm_state"]) == ("failed", 3, "FAILED"), done
    assert "code.py exited with code 3" in done["error"] and "boom on the cluster" in done["error"]


def test_the_time_limit_is_enforced_to_the_second_not_to_slurms_whole_minute(stack, unit, slurm_cluster, tmp_path):
    job = submit(stack, tmp_path, SLEEPER, timeout_s=5)
    done = stack.client.wait(job["id"], timeout_s=180)
    assert done["state"] == "failed", done
    assert "longer than its time limit of 5 s" in done["error"]
    # NIAS stopped it (TERM, then scancel): Slurm's own one-minute limit never came into it.
    assert done["execution"]["slurm_state"] in ("FAILED", "CANCELLED") and done["execution"]["slurm_state"] != "TIMEOUT"
    assert result_files(stack, job["id"])["terminated.txt"] == b"15"
    assert not in_queue(slurm_cluster, done["execution"]["slurm_job_id"])


def test_cancelling_a_running_batch_job_terms_it_first_and_removes_it_from_the_queue(
        stack, unit, slurm_cluster, tmp_path):
    job = submit(stack, tmp_path, SLEEPER)
    batch_id = batch_running(stack, job["id"])["execution"]["slurm_job_id"]
    assert set_state(stack, job["id"], "cancelled").status_code == 200
    wait_until(lambda: not in_queue(slurm_cluster, batch_id), timeout_s=60, message="the batch job leaving squeue")
    wait_until(lambda: not job_of(stack, job["id"])["result_pending"], timeout_s=60, message="the kept result")
    assert job_of(stack, job["id"])["state"] == "cancelled"
    assert result_files(stack, job["id"])["terminated.txt"] == b"15"  # SIGTERM first, as for local jobs


def test_pause_and_resume_suspend_and_resume_the_batch_job(stack, unit, slurm_cluster, tmp_path):
    job = submit(stack, tmp_path, "import time\nprint('started', flush=True)\n"
                                  "for i in range(8):\n    time.sleep(1)\n    print('tick', i, flush=True)\n")
    batch_id = batch_running(stack, job["id"])["execution"]["slurm_job_id"]
    assert set_state(stack, job["id"], "paused").json()["state"] == "paused"
    wait_until(lambda: queue_state(slurm_cluster, batch_id) == "SUSPENDED", timeout_s=30, message="SUSPENDED")
    assert set_state(stack, job["id"], "running").json()["state"] == "running"
    wait_until(lambda: queue_state(slurm_cluster, batch_id) in ("RUNNING", "COMPLETING", ""), timeout_s=30,
               message="running again")
    done = stack.client.wait(job["id"], timeout_s=180)
    assert done["state"] == "succeeded" and "tick 7" in log_of(stack, job["id"]), done


def test_a_job_waiting_for_a_busy_node_shows_its_reason_and_takes_a_new_priority_in_slurm(
        stack, unit, slurm_cluster, tmp_path, page):
    blocker = slurm(slurm_cluster, "sbatch", "--parsable", "--exclusive", "-o", "/dev/null", "--wrap", "sleep 300")
    blocker = blocker.strip()
    try:
        wait_until(lambda: queue_state(slurm_cluster, blocker) == "RUNNING", timeout_s=60, message="the blocker")
        job = submit(stack, tmp_path, "print('ran after the blocker')\n", priority=5)
        pending = wait_until(lambda: (found := job_of(stack, job["id"]))["execution"]
                             and found["execution"].get("slurm_state") == "PENDING"
                             and found["execution"].get("reason") and found, timeout_s=120, interval_s=0.5,
                             message="the job pending on the cluster with a reason")
        assert pending["state"] == "running" and pending["execution"]["reason"] in ("Resources", "Priority")
        batch_id = pending["execution"]["slurm_job_id"]
        page.goto(f"/job.html?id={job['id']}")
        expect(page.locator('[data-fact="Slurm"] dd')).to_have_text(
            f"batch job {batch_id} · PENDING ({pending['execution']['reason']})")
        expect(page.locator("#job-headline")).to_contain_text("waiting in the cluster's queue")
        assert "Nice=400 " in slurm(slurm_cluster, "scontrol", "show", "job", "-o", batch_id)
        answer = stack.http.put(f"{stack.url}/api/jobs/{job['id']}/priority", json={"priority": 8}, timeout=10)
        assert answer.status_code == 200 and answer.json()["priority"] == 8, answer.text
        wait_until(lambda: "Nice=100 " in slurm(slurm_cluster, "scontrol", "show", "job", "-o", batch_id),
                   timeout_s=30, message="the new Nice in Slurm")
    finally:
        slurm(slurm_cluster, "scancel", blocker)
    done = stack.client.wait(job["id"], timeout_s=180)
    assert done["state"] == "succeeded" and "ran after the blocker" in log_of(stack, job["id"]), done


def test_a_unit_killed_and_restarted_adopts_its_running_batch_job_which_ends_once(stack, unit, tmp_path):
    runs = Path(unit.env["NIAS_SLURM_WORK_DIR"]) / f"runs-{uuid.uuid4().hex[:6]}.txt"
    job = submit(stack, tmp_path, f"import os, time\nopen({str(runs)!r}, 'a').write('run\\n')\n"
                                  "print('started', flush=True)\nfor i in range(10):\n    time.sleep(1)\n"
                                  "    print('tick', i, flush=True)\nos.makedirs('output', exist_ok=True)\n"
                                  "open('output/answer.txt', 'w').write('adopted')\n")
    batch_running(stack, job["id"])
    unit.kill()
    unit.start()
    done = stack.client.wait(job["id"], timeout_s=180)
    assert (done["state"], done["attempts"]) == ("succeeded", 1), done
    assert runs.read_text() == "run\n"  # ran once: adopted, not started again
    assert result_files(stack, job["id"])["answer.txt"] == b"adopted"
    log = log_of(stack, job["id"])
    assert "following batch job" in log and "tick 9" in log


def test_a_batch_job_cancelled_while_its_unit_was_down_is_cancelled_when_the_unit_returns(
        stack, unit, slurm_cluster, tmp_path):
    job = submit(stack, tmp_path, SLEEPER)
    batch_id = batch_running(stack, job["id"])["execution"]["slurm_job_id"]
    unit.kill()
    assert set_state(stack, job["id"], "cancelled").json()["state"] == "cancelled"
    assert in_queue(slurm_cluster, batch_id)  # nobody could tell the cluster while the unit was down
    unit.start()
    wait_until(lambda: not in_queue(slurm_cluster, batch_id), timeout_s=90, message="the batch job leaving squeue")
    assert job_of(stack, job["id"])["state"] == "cancelled"
