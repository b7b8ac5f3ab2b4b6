"""Services dying mid-job: the job still ends once, with one result, and the stack heals itself."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

import pika
import requests
import pytest

from nias.amqp import Topology, connect
from nias.messages import JobMessage
from nias.settings import load_settings
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, healthy, wait_until

SLOW_JOB = (
    "import time\n"
    "print('started', flush=True)\n"
    "time.sleep(4)\n"
    "open('output/done.txt', 'w').write('done')\n"
)


@pytest.fixture(scope="module")
def recovery_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("recovery"), units=2, NIAS_LEASE_S="8", NIAS_JOB_RETRIES="2",
                    NIAS_STOP_GRACE_S="3") as stack:
        yield stack


def marked_job(marker: str, seconds: float = 4) -> str:
    """A job whose child process carries `marker` on its command line, so the test can find it."""
    return (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "print('started', flush=True)\n"
        f"time.sleep({seconds})\n"
        "child.kill()\nchild.wait()\n"
        "open('output/done.txt', 'w').write('done')\n"
    )


def _running_on(client, job_id: str) -> dict:
    return wait_until(lambda: (job := client.job(job_id))["state"] == "running" and job["unit"] and job,
                      timeout_s=60, message=f"job {job_id} running")


def _code_started(client, job_id: str) -> dict:
    """The job as soon as its code.py runs (its first line has reached the backend's log)."""
    job = _running_on(client, job_id)
    wait_until(lambda: "started" in client.log(job_id), timeout_s=60, message=f"job {job_id}'s code started")
    return job


def _index(unit: str) -> int:
    return int(unit.split("-")[1])


def _unit_answer(stack: LocalStack, unit: str, path: str) -> dict | None:
    try:
        response = requests.get(f"{stack.unit_url(_index(unit))}{path}", headers=stack.internal_headers, timeout=2)
        return response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None


def _idle(stack: LocalStack, unit: str) -> bool:
    health = _unit_answer(stack, unit, "/healthz")
    return bool(health and health.get("ok") and health.get("busy") is None)


def _units(stack: LocalStack) -> list[str]:
    return [f"unit-{index}" for index in range(1, stack.units + 1)]


def _all_units_idle(stack: LocalStack) -> None:
    wait_until(lambda: all(_idle(stack, unit) for unit in _units(stack)), timeout_s=60, message="every unit idle")


def _unit_running(stack: LocalStack, job_id: str) -> str | None:
    """The unit whose health says it is running `job_id` now, if any."""
    return next((unit for unit in _units(stack) if (_unit_answer(stack, unit, "/healthz") or {}).get("busy") == job_id),
                None)


def _process(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of a process, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), fields[19]


def _processes_of(marker: str) -> set[tuple[int, str]]:
    """(pid, start time) of the processes whose command line holds `marker`, and of their parents."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        info = _process(int(entry.name))
        if marker.encode() in cmdline.split(b"\0") and info is not None:
            found.add((int(entry.name), info[2]))
            parent = _process(info[1])
            if parent is not None:
                found.add((info[1], parent[2]))
    return found


def _alive(pid: int, started: str) -> bool:
    info = _process(pid)
    return info is not None and info[2] == started and info[0] not in ("Z", "X")


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _result_text(client, job_id: str, tmp_path: Path, name: str) -> str:
    with zipfile.ZipFile(client.result(job_id, tmp_path / f"{job_id}.zip")) as result:
        return result.read(name).decode()


def test_a_job_whose_processing_unit_is_killed_runs_again_and_keeps_one_result(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    _all_units_idle(stack)
    marker = f"nias-recovery-{uuid.uuid4().hex}"
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": marked_job(marker, seconds=6)}))
    killed = _running_on(client, job["id"])["unit"]
    other = f"unit-{3 - _index(killed)}"
    wait_until(lambda: "started" in client.log(job["id"]), timeout_s=30, message="job started")
    first_attempt = wait_until(lambda: _processes_of(marker), timeout_s=10, message="attempt 1's processes")
    assert len(first_attempt) >= 2  # code.py and its child
    assert _idle(stack, other)
    old_pid = stack.kill_service(killed)
    # Well before the job would have ended by itself.
    wait_until(lambda: not any(_alive(pid, started) for pid, started in first_attempt), timeout_s=3,
               message="attempt 1's processes dying with their unit")
    ran_again_on = wait_until(lambda: _unit_running(stack, job["id"]), timeout_s=60, message="a unit running attempt 2")
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    history = client.history(job["id"])
    reasons = [t["reason"] or "" for t in history if t["to"] == "queued"]
    assert any("stopped" in reason for reason in reasons)
    runs = [t for t in history if t["to"] == "running"]
    assert [t["attempt"] for t in runs] == [1, 2]
    assert runs[0]["unit"] == killed and runs[1]["unit"] == ran_again_on
    if ran_again_on == killed:
        assert stack.service_pid(killed) != old_pid, "the retry ran on the killed unit before it was restarted"
    assert client.log(job["id"]).count("started") == 1
    assert sorted(os.listdir(stack.data_dir / "jobs" / job["id"] / "runs")) == ["2"]
    assert _result_text(client, job["id"], tmp_path, "done.txt") == "done"
    wait_until(lambda: not _processes_of(marker), timeout_s=10, message="no process of the job left")


def test_a_job_whose_consumer_is_killed_finishes_once_and_the_consumer_comes_back(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": SLOW_JOB}))
    unit = _running_on(client, job["id"])["unit"]
    old = stack.kill_service(f"consumer-{unit.split('-')[1]}")
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 1
    assert client.log(job["id"]).count("started") == 1
    consumer = f"consumer-{unit.split('-')[1]}"
    wait_until(lambda: stack.service_pid(consumer) != old, timeout_s=30, message="consumer restarted")
    assert f"{consumer} exited with code -9; restarting" in stack.log_tail(400)  # not another service's restart


@contextlib.contextmanager
def _launcher_frozen(stack: LocalStack):
    """Stop the launcher, so a service killed meanwhile stays down until the block ends."""
    os.kill(stack.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(stack.process.pid, signal.SIGCONT)


def _jobs_queue_consumers(stack: LocalStack) -> int:
    connection = connect(load_settings({}, queue_prefix=stack.prefix), attempts=3)
    try:
        return connection.channel().queue_declare(Topology(stack.prefix).jobs, passive=True).method.consumer_count
    finally:
        connection.close()


def test_a_job_ending_while_the_backend_is_down_delivers_its_result_and_the_units_times_when_it_is_back(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": SLOW_JOB}))
    unit = _code_started(client, job["id"])["unit"]  # its upload fetched: the unit needs the backend no more
    # Frozen, the backend answers nothing and takes no event; killed, it is restarted by the launcher.
    old_pid = stack.kill_service("backend", signal.SIGSTOP)
    down_at = time.time()
    try:
        # The job finishes while the backend is down: the unit holds its result and keeps offering it.
        run = wait_until(lambda: (run := _unit_answer(stack, unit, f"/api/runs/{job['id']}"))
                         and run["state"] != "running" and run, timeout_s=60,
                         message="the unit's run ending while the backend is down")
        assert run["state"] == "succeeded" and run["attempt"] == 1
        time.sleep(2)  # down a while longer: the recorded times must be the unit's, not the time of applying
        run = _unit_answer(stack, unit, f"/api/runs/{job['id']}")
        assert run["state"] == "succeeded" and not run["done"], "the unit gave up its result while the backend was down"
        assert not (stack.data_dir / "jobs" / job["id"] / "runs" / "1" / "result.zip").exists()
        assert not healthy(stack.url), "the backend answered while it was meant to be down"
    finally:
        killed_at = time.time()
        stack.kill_service("backend", signal.SIGKILL)
    wait_until(lambda: stack.service_pid("backend") != old_pid, timeout_s=30, message="backend restarted")
    done = client_when_back(client).wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 1 and done["exit_code"] == 0, done
    assert down_at < _timestamp(done["finished_at"]) < killed_at - 1.5
    assert _timestamp(done["started_at"]) < down_at
    assert 4 <= done["duration_s"] < killed_at - _timestamp(done["started_at"]) - 1.5
    assert [t["to"] for t in client.history(job["id"])] == ["queued", "running", "succeeded"]
    assert _result_text(client, job["id"], tmp_path, "done.txt") == "done"
    assert sorted(os.listdir(stack.data_dir / "jobs" / job["id"] / "runs")) == ["1"]


def client_when_back(client):
    from nias.errors import ServiceUnavailable

    def answering():
        try:
            return client.jobs(per_page=1) is not None
        except ServiceUnavailable:
            return False

    wait_until(answering, timeout_s=60, message="backend back")
    return client


def test_a_job_submitted_while_an_idle_consumer_is_down_runs_once_when_it_is_back(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    _all_units_idle(stack)
    # The other unit runs a long job, so only the killed consumer can take the new one.
    busy = client.submit(zip_entries(tmp_path / "busy.zip", {"code.py": "import time\ntime.sleep(30)\n"}))
    busy_unit = _running_on(client, busy["id"])["unit"]
    consumer = f"consumer-{3 - _index(busy_unit)}"
    try:
        wait_until(lambda: _jobs_queue_consumers(stack) == 1, timeout_s=30, message="the idle consumer listening")
        with _launcher_frozen(stack):
            old_pid = stack.kill_service(consumer)
            wait_until(lambda: _jobs_queue_consumers(stack) == 0, timeout_s=30, message="the consumer gone")
            job = client.submit(zip_entries(tmp_path / "late.zip", {"code.py": SLOW_JOB}))
            time.sleep(2)
            assert client.job(job["id"])["state"] == "queued"
        done = client.wait(job["id"], timeout_s=60)
        assert client.job(busy["id"])["state"] == "running"
    finally:
        client.set_state(busy["id"], "cancelled")
    assert stack.service_pid(consumer) != old_pid
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert done["unit"] == f"unit-{_index(consumer)}"
    assert [t["to"] for t in client.history(job["id"])].count("running") == 1
    assert client.log(job["id"]).count("started") == 1


def test_a_redelivered_message_never_starts_a_second_run_of_a_running_job(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": SLOW_JOB}))
    _running_on(client, job["id"])
    # The same message again, as RabbitMQ would redeliver it: the idle unit's consumer gets it.
    body = (stack.data_dir / "jobs" / job["id"] / "upload.zip").read_bytes()
    message = JobMessage(job_id=job["id"], upload=f"jobs/{job['id']}/upload.zip",
                         sha256=hashlib.sha256(body).hexdigest(), size=len(body), dispatch=1)
    connection = connect(load_settings({}, queue_prefix=stack.prefix), attempts=3)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", Topology(stack.prefix).jobs, message.encode(),
                              pika.BasicProperties(delivery_mode=2, message_id=job["id"]))
    finally:
        connection.close()
    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "succeeded" and done["attempts"] == 1
    assert [t["to"] for t in client.history(job["id"])].count("running") == 1
    assert client.log(job["id"]).count("started") == 1


def test_a_unit_stopped_with_sigterm_finishes_a_short_job_within_its_grace_period(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job, unit = _sigterm_unit_during(stack, tmp_path, job_seconds=1.5)
    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "succeeded" and done["attempts"] == 1
    wait_until(lambda: _answers(stack.unit_url(int(unit.split("-")[1]))), timeout_s=30, message="unit back")


def test_a_unit_stopped_with_sigterm_hands_a_long_job_back_and_it_runs_again(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job, _unit = _sigterm_unit_during(stack, tmp_path, job_seconds=8)
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    reasons = " ".join(t["reason"] or "" for t in client.history(job["id"]))
    assert "stopped during the job" in reasons


def _sigterm_unit_during(stack: LocalStack, tmp_path, job_seconds: float) -> tuple[dict, str]:
    """Start a job that sleeps `job_seconds`, then send SIGTERM to the unit running it."""
    code = f"import time\nprint('started', flush=True)\ntime.sleep({job_seconds})\nopen('output/ok','w').write('ok')\n"
    job = stack.client.submit(zip_entries(tmp_path / "sleeper.zip", {"code.py": code}))
    unit = _running_on(stack.client, job["id"])["unit"]
    wait_until(lambda: "started" in stack.client.log(job["id"]), timeout_s=30, message="job started")
    stack.kill_service(unit, signal.SIGTERM)
    return job, unit


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/healthz", timeout=2)
        return True
    except requests.RequestException:
        return False


def test_a_job_uploaded_while_the_producer_is_frozen_is_published_when_it_returns(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    stack.kill_service("producer", signal.SIGSTOP)
    try:
        job = client.submit(zip_entries(tmp_path / "p.zip", {"code.py": "pass"}))
        assert job["state"] == "queued"
        time.sleep(2)
        assert client.job(job["id"])["state"] == "queued"
    finally:
        stack.kill_service("producer", signal.SIGCONT)
    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "succeeded" and done["attempts"] == 1
