"""A processing unit on another host: its own network (it reaches the broker and the backend only
at their addresses on a veth link) and its own mount namespace (a tmpfs over the stack's data dir,
work dirs and environments), started with `make unit`. Every job here runs in the pool only it
serves, so every file of theirs crossed over HTTP."""
from __future__ import annotations

import glob
import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.projects import zip_entries
from tests.support.remote_host import RemoteHost
from tests.support.stack import LocalStack, wait_until

pytestmark = pytest.mark.e2e

POOLS = "default,remote,gpu"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("remote-stack"), units=1, NIAS_POOLS=POOLS, NIAS_LEASE_S="8",
                    NIAS_MAX_UPLOAD_MB="300", NIAS_MAX_UNPACKED_MB="400", NIAS_AMQP_HEARTBEAT_S="5") as stack:
        yield stack


@pytest.fixture(scope="module")
def remote(stack, tmp_path_factory):
    stack_dirs = [stack.data_dir] + [Path(p) for p in glob.glob("/var/tmp/nias-*") if "nias-remote-" not in p]
    with RemoteHost(hide=stack_dirs) as host:
        broker_port = host.forward(5672)
        backend_port = host.forward(stack.port)
        host.unit_env = {
            "NIAS_AMQP_URL": f"amqp://guest:guest@{host.address}:{broker_port}/%2F",
            "NIAS_BACKEND_URL": f"http://{host.address}:{backend_port}",
            "NIAS_INTERNAL_TOKEN": stack.env["NIAS_INTERNAL_TOKEN"],
            "NIAS_QUEUE_PREFIX": stack.prefix,
            "NIAS_UNIT_POOLS": "remote",
            "NIAS_LEASE_S": "8",
        }
        host.log = host.home / "unit.log"
        host.start_unit("remote-1", host.unit_env, host.log)
        try:
            wait_until(lambda: remote_unit_online(stack), timeout_s=90, message="the remote unit announcing itself")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{host.log.read_text(errors='replace')[-3000:]}") from None
        yield host


def remote_unit_online(stack: LocalStack, name: str = "remote-1") -> dict | None:
    units = stack.http.get(f"{stack.url}/api/units", timeout=10).json()["units"]
    return next((u for u in units if u["name"] == name and u["state"] != "offline"), None)


def submit(stack: LocalStack, tmp_path: Path, files: dict, **fields) -> dict:
    project = zip_entries(tmp_path / "project.zip", files)
    return stack.client.submit(project, pool=fields.pop("pool", "remote"), **fields)


def finished(stack: LocalStack, job_id: str, timeout_s: float = 180) -> dict:
    return stack.client.wait(job_id, timeout_s=timeout_s)


def result_files(stack: LocalStack, job_id: str) -> dict[str, bytes]:
    response = stack.http.get(f"{stack.url}/api/jobs/{job_id}/result", timeout=60)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def log_of(stack: LocalStack, job_id: str) -> str:
    return stack.http.get(f"{stack.url}/api/jobs/{job_id}/log", timeout=30).text


def test_the_remote_host_sees_neither_the_data_dir_nor_the_loopback_services(stack, remote):
    listing = remote.run(["ls", "-A", str(stack.data_dir)])
    assert listing.returncode == 0 and listing.stdout.strip() == ""
    probe = remote.run(["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {stack.port}), 2)"])
    assert probe.returncode != 0 and "refused" in probe.stderr.lower()


def test_the_remote_unit_says_what_it_has_and_which_pools_it_serves(stack, remote):
    unit = remote_unit_online(stack)
    assert unit["pools"] == ["remote"]
    assert unit["cpus"] >= 1 and unit["memory_mb"] > 0 and unit["host"]
    assert unit["python"].count(".") == 2 and unit["gpus"] == []
    pools = {pool["name"]: pool for pool in stack.http.get(f"{stack.url}/api/summary", timeout=10).json()["pools"]}
    assert pools["remote"]["units"] == ["remote-1"] and pools["remote"]["online"] == 1
    assert pools["default"]["units"] == ["unit-1"]


def test_a_trivial_job_runs_on_the_remote_unit_and_its_result_comes_back(stack, remote, tmp_path):
    job = submit(stack, tmp_path, {"code.py": "import os\nos.makedirs('output', exist_ok=True)\n"
                                              "open('output/answer.txt', 'w').write('42')\nprint('done here')\n"})
    assert job["pool"] == "remote"
    done = finished(stack, job["id"])
    assert (done["state"], done["unit"]) == ("succeeded", "remote-1"), done
    assert result_files(stack, job["id"])["answer.txt"] == b"42"
    assert "done here" in log_of(stack, job["id"])


def test_a_200_mib_upload_reaches_the_remote_unit_intact(stack, remote, tmp_path):
    data = os.urandom(200 * 1024 * 1024)
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    project = tmp_path / "big.zip"
    with zipfile.ZipFile(project, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("code.py", "import hashlib, os\nos.makedirs('output', exist_ok=True)\n"
                                    "open('output/sha.txt', 'w').write(hashlib.sha256(open('data.bin', 'rb').read())"
                                    ".hexdigest())\n")
        archive.writestr("data.bin", data)
    del data
    job = stack.client.submit(project, pool="remote")
    done = finished(stack, job["id"], timeout_s=300)
    assert done["state"] == "succeeded", done
    assert result_files(stack, job["id"])["sha.txt"].decode() == digest


def test_a_failing_job_on_the_remote_unit_fails_with_its_exit_code_and_stderr(stack, remote, tmp_path):
    job = submit(stack, tmp_path, {"code.py": "import sys\nprint('bad input file', file=sys.stderr)\nsys.exit(3)\n"})
    done = finished(stack, job["id"])
    assert (done["state"], done["exit_code"], done["unit"]) == ("failed", 3, "remote-1")
    assert "bad input file" in done["error"]


def test_the_live_log_of_a_remote_job_is_read_while_it_runs(stack, remote, tmp_path):
    job = submit(stack, tmp_path, {"code.py": "import time\nfor n in range(60):\n"
                                              "    print(f'tick {n}', flush=True)\n    time.sleep(0.5)\n"})
    wait_until(lambda: "tick 2" in log_of(stack, job["id"]), timeout_s=60, message="the log while running")
    assert stack.client.job(job["id"])["state"] == "running"
    first = stack.http.get(f"{stack.url}/api/jobs/{job['id']}/log", timeout=30)
    size = int(first.headers["X-Log-Size"])
    wait_until(lambda: stack.http.get(f"{stack.url}/api/jobs/{job['id']}/log", params={"offset": size},
                                      timeout=30).text.strip(), timeout_s=30, message="more of the log from an offset")
    stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"}, timeout=30)
    assert finished(stack, job["id"])["state"] == "cancelled"


def test_pause_resume_and_cancel_reach_a_job_on_the_remote_unit(stack, remote, tmp_path):
    job = submit(stack, tmp_path, {"code.py": "import time\nfor n in range(600):\n"
                                              "    print(f'step {n}', flush=True)\n    time.sleep(0.2)\n"})
    wait_until(lambda: "step 1" in log_of(stack, job["id"]), timeout_s=60, message="the job running")
    state = lambda wanted: stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": wanted},  # noqa: E731
                                           timeout=30)
    assert state("paused").status_code == 200
    wait_until(lambda: stack.client.job(job["id"])["state"] == "paused", timeout_s=20, message="paused")
    time.sleep(2)  # the unit applies the pause; the log then stands still
    paused_size = len(log_of(stack, job["id"]))
    time.sleep(2)
    assert len(log_of(stack, job["id"])) == paused_size
    assert state("running").status_code == 200
    wait_until(lambda: len(log_of(stack, job["id"])) > paused_size, timeout_s=30, message="the log growing again")
    assert state("cancelled").status_code == 200
    done = finished(stack, job["id"])
    assert done["state"] == "cancelled"
    wait_until(lambda: remote_unit_online(stack)["state"] == "idle", timeout_s=30, message="the unit idle again")


def test_a_pool_without_a_live_unit_keeps_its_job_queued_and_says_so(stack, remote, tmp_path):
    job = submit(stack, tmp_path, {"code.py": "print('on a gpu')\n"}, pool="gpu")
    time.sleep(2)
    waiting = stack.client.job(job["id"])
    assert (waiting["state"], waiting["waiting_for"]) == ("queued", "waiting for a unit in pool gpu")
    stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"}, timeout=30)


def test_a_job_for_an_undeclared_pool_is_refused_and_nothing_is_queued(stack, remote, tmp_path):
    before = stack.client.jobs(per_page=1)["total"]
    project = zip_entries(tmp_path / "p.zip", {"code.py": "print(1)\n"})
    with open(project, "rb") as handle:
        response = stack.http.post(f"{stack.url}/api/jobs", files={"file": ("p.zip", handle)},
                                   data={"pool": "nope"}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_pool" and "default, remote, gpu" in error["message"]
    assert stack.client.jobs(per_page=1)["total"] == before


def test_a_remote_unit_killed_while_it_sends_a_result_loses_the_attempt_and_the_job_ends_once(stack, remote, tmp_path):
    job = submit(stack, tmp_path, {"code.py": "import os\nos.makedirs('output', exist_ok=True)\n"
                                              "open('output/noise.bin', 'wb').write(os.urandom(120 * 1024 * 1024))\n"})
    runs = stack.data_dir / "jobs" / job["id"] / "runs"
    wait_until(lambda: list(runs.glob("*/result-*.part")), timeout_s=120, interval_s=0.01,
               message="the result being received")
    remote.kill_unit("remote-1")
    assert not (runs / "1" / "result.zip").exists()
    remote.start_unit("remote-1", remote.unit_env, remote.log)
    done = finished(stack, job["id"], timeout_s=240)
    assert (done["state"], done["attempts"]) == ("succeeded", 2), done
    assert len(result_files(stack, job["id"])["noise.bin"]) == 120 * 1024 * 1024
    history = stack.http.get(f"{stack.url}/api/jobs/{job['id']}/history", timeout=30).json()["transitions"]
    assert [t["to"] for t in history].count("succeeded") == 1
    assert [p.name for p in runs.iterdir()] == ["2"]
    assert not list(runs.glob("*/*.part"))
