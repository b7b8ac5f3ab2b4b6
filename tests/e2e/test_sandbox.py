"""Hostile code.py files: each is stopped, its job ends in a clear state, and the next job runs."""
from __future__ import annotations

import os
import uuid

import pytest
import requests

from tests.support.projects import zip_entries
from tests.support.stack import LocalStack

SECRET = f"victim-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("sandbox"), units=1, NIAS_SANDBOX="bwrap", NIAS_JOB_PROCESSES="64",
                       NIAS_JOB_FILE_MB="20", NIAS_JOB_TMP_MB="32", NIAS_JOB_MEMORY_MB="512")
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def victim(sandboxed, tmp_path_factory):
    """Another job, with a secret in its upload and in its result."""
    folder = tmp_path_factory.mktemp("victim")
    code = f"open('output/secret.txt', 'w').write('{SECRET}')\n"
    job = sandboxed.client.submit(zip_entries(folder / "victim.zip", {"code.py": code, "data.txt": SECRET}))
    assert sandboxed.client.wait(job["id"], timeout_s=60)["state"] == "succeeded"
    return job


def run(stack, tmp_path, code: str, **fields) -> dict:
    job = stack.client.submit(zip_entries(tmp_path / f"{uuid.uuid4().hex[:6]}.zip", {"code.py": code}), **fields)
    return stack.client.wait(job["id"], timeout_s=120)


def assert_next_job_runs(stack, tmp_path) -> None:
    assert requests.get(f"{stack.unit_url(1)}/healthz", timeout=5).status_code == 200
    assert run(stack, tmp_path, "print('still fine')")["state"] == "succeeded"


def test_a_job_cannot_read_another_jobs_files_the_store_or_the_services_environment(sandboxed, victim, tmp_path):
    data = sandboxed.data_dir
    code = f"""
import os
targets = ["{data}/jobs/{victim['id']}/upload.zip", "{data}/jobs/{victim['id']}/runs/1/result.zip",
           "{data}/private/nias.db", "{data}/private/secret_key"]
for path in targets:
    try:
        print("READ", path, open(path, "rb").read()[:200])
    except OSError as exc:
        print("denied", path, exc.__class__.__name__)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print("ENV", pid, open(f"/proc/{{pid}}/environ", "rb").read()[:2000])
        except OSError:
            pass
here = os.getcwd()
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if not (root == "/" and d in ("proc", "sys", "dev")) and os.path.join(root, d) != here]
    for name in files:
        try:
            if b"{SECRET}" in open(os.path.join(root, name), "rb").read(1 << 20):
                print("FOUND", os.path.join(root, name))
        except OSError:
            pass
print("search done")
"""
    job = run(sandboxed, tmp_path, code)
    log = sandboxed.client.log(job["id"])
    assert job["state"] == "succeeded" and "search done" in log
    assert "READ" not in log
    assert "FOUND" not in log
    assert SECRET not in log
    for secret in (sandboxed.env["NIAS_INTERNAL_TOKEN"], sandboxed.admin_token, "admin-password-for-tests",
                   "guest:guest"):
        assert secret not in log
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_job_cannot_write_outside_its_folder(sandboxed, tmp_path):
    data = sandboxed.data_dir
    code = f"""
for path in ["/usr/planted.txt", "/etc/planted.txt", "/planted.txt", "/work/planted.txt",
             "{data}/jobs/planted.txt", "{data}/planted.txt"]:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("denied", path, exc.__class__.__name__)
open("/tmp/scratch.txt", "w").write("a private /tmp is fine")
open("output/ok.txt", "w").write("ok")
"""
    job = run(sandboxed, tmp_path, code)
    assert job["state"] == "succeeded"
    log = sandboxed.client.log(job["id"])
    for path in ("/usr/planted.txt", "/etc/planted.txt", "/planted.txt", "/work/planted.txt"):
        assert f"denied {path}" in log
    # The data dir is not there at all: what the job writes at its path lands in its private /tmp.
    assert not (data / "jobs" / "planted.txt").exists() and not (data / "planted.txt").exists()
    for host_path in ("/etc/planted.txt", "/planted.txt", "/usr/planted.txt"):
        assert not os.path.exists(host_path)
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_fork_bomb_is_contained_and_ends_with_its_time_limit(sandboxed, tmp_path):
    code = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    job = run(sandboxed, tmp_path, code, timeout_s=5)
    assert job["state"] == "failed" and "time limit of 5 s" in job["error"]
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_job_filling_the_disk_is_stopped_by_the_file_size_limit(sandboxed, tmp_path):
    code = "block = b'x' * (1 << 20)\nwith open('output/huge.bin', 'wb') as f:\n    for _ in range(10_000):\n        f.write(block)\n"
    job = run(sandboxed, tmp_path, code)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of the process being killed.
    assert job["state"] == "failed" and "File too large" in job["error"]
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_job_filling_its_tmp_gets_no_space_left(sandboxed, tmp_path):
    code = ("import os\nfor i in range(100):\n    open(f'/tmp/f{i}', 'wb').write(os.urandom(1 << 20))\n")
    job = run(sandboxed, tmp_path, code)
    assert job["state"] == "failed" and "No space left on device" in job["error"]
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_job_asking_for_too_much_memory_fails_cleanly(sandboxed, tmp_path):
    job = run(sandboxed, tmp_path, "block = bytearray(2 * 1024 ** 3)\n")
    assert job["state"] == "failed" and "MemoryError" in job["error"]
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_job_trying_to_kill_the_processing_unit_only_ends_itself(sandboxed, tmp_path):
    code = "import os, signal\nprint('pids I can see:', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), flush=True)\nos.kill(-1, signal.SIGKILL)\n"
    before = sandboxed.service_pid("unit-1")
    job = run(sandboxed, tmp_path, code)
    assert job["state"] == "failed"
    assert sandboxed.service_pid("unit-1") == before
    assert_next_job_runs(sandboxed, tmp_path)
