"""Against a RabbitMQ node of the tests' own (short consumer_timeout, restartable): long jobs,
broker restarts and spent retries."""
from __future__ import annotations

import requests
import pytest

from tests.support.projects import zip_entries
from tests.support.rabbit import BrokerNode
from tests.support.stack import LocalStack, wait_until

# RabbitMQ 3.10 checks consumer timeouts about once a minute: the job must outlast that check.
CONSUMER_TIMEOUT_MS = 5000
LONG_JOB_S = 75


@pytest.fixture(scope="module")
def broker():
    node = BrokerNode(consumer_timeout_ms=CONSUMER_TIMEOUT_MS).start()
    yield node
    node.destroy()


@pytest.fixture(scope="module")
def node_stack(broker, tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("node-stack"), units=2, NIAS_AMQP_URL=broker.url,
                    NIAS_JOB_RETRIES="1", NIAS_LEASE_S="10", NIAS_AMQP_HEARTBEAT_S="5") as stack:
        yield stack


@pytest.fixture(scope="module")
def long_job(node_stack, tmp_path_factory):
    """Submitted first, so it runs on one unit while the other tests use the other."""
    code = f"import time\nprint('started', flush=True)\ntime.sleep({LONG_JOB_S})\nprint('finished', flush=True)\n"
    path = zip_entries(tmp_path_factory.mktemp("long") / "long.zip", {"code.py": code})
    job = node_stack.client.submit(path, name="longer-than-consumer-timeout")
    wait_until(lambda: node_stack.client.job(job["id"])["state"] == "running", timeout_s=60, message="long job runs")
    return job


def test_rabbitmq_restarted_while_jobs_wait_and_run_loses_nothing_and_every_service_reconnects(
        broker, node_stack, long_job, tmp_path):
    client = node_stack.client
    running = client.submit(zip_entries(tmp_path / "run.zip", {"code.py": "import time; time.sleep(4)"}))
    wait_until(lambda: client.job(running["id"])["state"] == "running", timeout_s=60, message="second job runs")
    waiting = [client.submit(zip_entries(tmp_path / f"w{i}.zip", {"code.py": f"print({i})"})) for i in range(4)]
    assert all(client.job(job["id"])["state"] == "queued" for job in waiting)

    broker.restart()

    for job in [running, *waiting]:
        done = client.wait(job["id"], timeout_s=120)
        assert done["state"] == "succeeded" and done["attempts"] == 1, done
    producer = f"http://127.0.0.1:{node_stack.producer_port}/healthz"
    wait_until(lambda: requests.get(producer, timeout=5).status_code == 200, timeout_s=30, message="producer back")
    after = client.wait(client.submit(zip_entries(tmp_path / "after.zip", {"code.py": "pass"}))["id"], timeout_s=60)
    assert after["state"] == "succeeded"


def test_a_job_lost_more_often_than_its_retries_allow_fails_with_the_reason(node_stack, long_job, tmp_path):
    client = node_stack.client
    job = client.submit(zip_entries(tmp_path / "doomed.zip", {"code.py": "import time; time.sleep(60)"}))
    for attempt in (1, 2):
        unit = wait_until(lambda: (j := client.job(job["id"]))["state"] == "running" and j["attempts"] == attempt
                          and j["unit"], timeout_s=90, message=f"attempt {attempt} running")
        node_stack.kill_service(unit)
    done = client.wait(job["id"], timeout_s=90)
    assert done["state"] == "failed" and done["attempts"] == 2
    assert "tried 2 times" in done["error"] and "stopped during the job" in done["error"]


def test_a_job_longer_than_the_brokers_consumer_timeout_completes_once(node_stack, long_job):
    client = node_stack.client
    done = client.wait(long_job["id"], timeout_s=LONG_JOB_S + 120)
    assert done["state"] == "succeeded" and done["attempts"] == 1
    assert [t["to"] for t in client.history(long_job["id"])].count("running") == 1
    log = client.log(long_job["id"])
    assert log.count("started") == 1 and "finished" in log
