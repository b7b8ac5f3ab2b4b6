"""Hostile code.py files: each is stopped, its job ends in a clear state, and the next job runs."""
from __future__ import annotations

import os
import uuid
from datetime import datetime

import pytest
import requests

from tests.support.projects import zip_entries
from tests.support.stack import LocalStack

SECRET = f"victim-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("sandbox"), units=1, NIAS_SANDBOX="bwrap", NIAS_JOB_PROCESSES="64",
                    NIAS_JOB_FILE_MB="20", NIAS_JOB_TMP_MB="32", NIAS_JOB_MEMORY_MB="512",
                    NIAS_JOB_OPEN_FILES="128") as stack:
        yield stack


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


def process_uid(pid: int) -> int:
    """The real uid of a running process, from /proc."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


def test_a_job_runs_as_a_user_that_is_not_the_services(sandboxed, tmp_path):
    job = run(sandboxed, tmp_path, "import os\nprint('uid', os.getuid(), os.geteuid(), 'gid', os.getgid())\n")
    assert job["state"] == "succeeded"
    words = sandboxed.client.log(job["id"]).split("uid ", 1)[1].split()
    uid, euid, gid = int(words[0]), int(words[1]), int(words[3])
    unit_uid = process_uid(sandboxed.service_pid("unit-1"))
    assert unit_uid == 0, "the unit must run as root here, so that it can hand jobs to their own user"
    assert uid == euid == gid and uid not in (0, unit_uid, os.getuid())
    assert_next_job_runs(sandboxed, tmp_path)


FORK_COUNTER = """
import os, time
forks = 0
try:
    while forks < 1000:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        forks += 1
except OSError as exc:
    print("refused:", exc.strerror, flush=True)
print("forks", forks, flush=True)
"""


def test_a_fork_bomb_that_counts_its_forks_stays_within_the_process_limit(sandboxed, tmp_path):
    job = run(sandboxed, tmp_path, FORK_COUNTER)
    assert job["state"] == "succeeded"
    log = sandboxed.client.log(job["id"])
    forks = int(log.split("forks ", 1)[1].split()[0])
    assert "refused: Resource temporarily unavailable" in log
    # The job's user is its own, so NIAS_JOB_PROCESSES=64 counts code.py itself and its children only.
    assert 10 <= forks and forks + 1 <= 64
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_job_cannot_connect_to_the_backend_when_the_network_is_off(sandboxed, tmp_path):
    assert requests.get(f"{sandboxed.url}/healthz", timeout=5).status_code == 200  # it listens, for the test
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {sandboxed.port}), timeout=5)
    print("CONNECTED")
except OSError as exc:
    print("no network:", exc.__class__.__name__)
"""
    job = run(sandboxed, tmp_path, code)
    log = sandboxed.client.log(job["id"])
    assert job["state"] == "succeeded" and "no network:" in log and "CONNECTED" not in log
    assert_next_job_runs(sandboxed, tmp_path)


def test_opening_more_files_than_the_open_files_limit_fails_with_emfile(sandboxed, tmp_path):
    code = """
import errno
handles = []
try:
    while len(handles) < 1000:
        handles.append(open("code.py"))
except OSError as exc:
    print("refused after", len(handles), "files:", errno.errorcode[exc.errno], flush=True)
    raise
"""
    job = run(sandboxed, tmp_path, code)
    assert job["state"] == "failed" and "Too many open files" in job["error"]
    log = sandboxed.client.log(job["id"])
    assert "EMFILE" in log and int(log.split("refused after ", 1)[1].split()[0]) < 128  # NIAS_JOB_OPEN_FILES
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_cpu_spin_over_the_cpu_time_limit_ends_failed_with_the_reason(sandboxed, tmp_path):
    job = run(sandboxed, tmp_path, "while True:\n    pass\n", cpu_s=2)
    assert job["state"] == "failed"
    assert "CPU time limit of 2 s" in job["error"], job["error"]
    ran = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    assert ran.total_seconds() < 30  # the CPU limit ended it, not the one-hour time limit
    assert_next_job_runs(sandboxed, tmp_path)


ALLOCATE_200_MB = "block = bytearray(200 * 1024 * 1024)\nprint('allocated', len(block))\n"


def test_a_job_may_ask_for_less_memory_than_the_admin_allows_and_then_fails_cleanly_above_it(sandboxed, tmp_path):
    asked = run(sandboxed, tmp_path, ALLOCATE_200_MB, memory_mb=64)
    assert asked["limits"] == {"memory_mb": 64}
    assert asked["state"] == "failed" and "MemoryError" in asked["error"]
    default = run(sandboxed, tmp_path, ALLOCATE_200_MB)
    assert default["limits"] == {}
    assert default["state"] == "succeeded" and "allocated" in sandboxed.client.log(default["id"])
    assert_next_job_runs(sandboxed, tmp_path)


def test_a_rerun_keeps_the_lower_limits_its_original_asked_for(sandboxed, tmp_path):
    original = run(sandboxed, tmp_path, ALLOCATE_200_MB, memory_mb=64)
    answer = sandboxed.http.post(f"{sandboxed.url}/api/jobs/{original['id']}/rerun", timeout=10)
    assert answer.status_code == 201 and answer.json()["limits"] == {"memory_mb": 64}
    again = sandboxed.client.wait(answer.json()["id"], timeout_s=120)
    assert again["state"] == "failed" and "MemoryError" in again["error"]
    assert_next_job_runs(sandboxed, tmp_path)


@pytest.mark.parametrize("fields,code", [({"memory_mb": "513"}, "limit_too_high"),
                                         ({"open_files": "lots"}, "bad_request"),
                                         ({"cpu_s": "0"}, "bad_request")])
def test_a_limit_above_the_admins_or_not_a_whole_number_is_refused_with_the_reason(sandboxed, tmp_path,
                                                                                  fields, code):
    project = zip_entries(tmp_path / "p.zip", {"code.py": "pass"})
    with open(project, "rb") as handle:
        answer = sandboxed.http.post(f"{sandboxed.url}/api/jobs", files={"file": ("p.zip", handle)}, data=fields,
                                     timeout=10)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == code and next(iter(fields)) in error["message"]
    assert os.listdir(sandboxed.data_dir / "uploads") == []
