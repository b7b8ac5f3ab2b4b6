"""Services dying mid-job: the job still ends once, with one result, and the stack heals itself."""
from __future__ import annotations

import hashlib
import os
import signal
import time

import pika
import requests
import pytest

from nias.amqp import Topology, connect
from nias.messages import JobMessage
from nias.settings import load_settings
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until

SLOW_JOB = (
    "import time\n"
    "print('started', flush=True)\n"
    "time.sleep(4)\n"
    "open('output/done.txt', 'w').write('done')\n"
)


@pytest.fixture(scope="module")
def recovery_stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("recovery"), units=2, NIAS_LEASE_S="8", NIAS_JOB_RETRIES="2",
                       NIAS_STOP_GRACE_S="3")
    stack.start()
    yield stack
    stack.stop()


def _running_on(client, job_id: str) -> dict:
    return wait_until(lambda: (job := client.job(job_id))["state"] == "running" and job["unit"] and job,
                      timeout_s=60, message=f"job {job_id} running")


def test_a_job_whose_processing_unit_is_killed_runs_again_and_keeps_one_result(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": SLOW_JOB}))
    first = _running_on(client, job["id"])
    wait_until(lambda: "started" in client.log(job["id"]), timeout_s=30, message="job started")
    stack.kill_service(first["unit"])
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2
    reasons = [t["reason"] or "" for t in client.history(job["id"]) if t["to"] == "queued"]
    assert any("stopped" in reason for reason in reasons)
    runs = stack.data_dir / "jobs" / job["id"] / "runs"
    assert sorted(os.listdir(runs)) == ["2"]


def test_a_job_whose_consumer_is_killed_finishes_once_and_the_consumer_comes_back(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": SLOW_JOB}))
    unit = _running_on(client, job["id"])["unit"]
    old = stack.kill_service(f"consumer-{unit.split('-')[1]}")
    done = client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 1
    assert client.log(job["id"]).count("started") == 1
    wait_until(lambda: stack.service_pid(f"consumer-{unit.split('-')[1]}") != old, timeout_s=30,
               message="consumer restarted")
    assert "exited with code -9; restarting" in stack.log_tail(400)


def test_events_sent_while_the_backend_is_down_are_applied_when_it_is_back(recovery_stack, tmp_path):
    stack, client = recovery_stack, recovery_stack.client
    job = client.submit(zip_entries(tmp_path / "slow.zip", {"code.py": SLOW_JOB}))
    _running_on(client, job["id"])
    stack.kill_service("backend")
    # The job finishes while the backend is down; its outcome waits in the durable events queue.
    done_file = stack.data_dir / "jobs" / job["id"] / "runs" / "1" / "result.zip"
    wait_until(done_file.exists, timeout_s=60, message="result written while the backend is down")
    done = client_when_back(client).wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded" and done["attempts"] == 1


def client_when_back(client):
    from nias.errors import ServiceUnavailable

    def answering():
        try:
            return client.jobs(per_page=1) is not None
        except ServiceUnavailable:
            return False

    wait_until(answering, timeout_s=60, message="backend back")
    return client


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
