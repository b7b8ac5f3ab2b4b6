"""RabbitMQ going away and coming back: uploads are still accepted, nothing is dropped, and
every service reconnects by itself."""
from __future__ import annotations

import time

import pytest

from tests.support.projects import zip_entries
from tests.support.proxy import TcpProxy
from tests.support.stack import LocalStack


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory):
    proxy = TcpProxy(("127.0.0.1", 5672))
    stack = LocalStack(tmp_path_factory.mktemp("outage"), units=1,
                       NIAS_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
                       NIAS_AMQP_HEARTBEAT_S="2")
    stack.start()
    yield stack, proxy
    if proxy.is_cut:
        proxy.restore()
    stack.stop()


def test_an_upload_made_while_rabbitmq_is_down_is_accepted_and_runs_once_it_is_back(outage_stack, tmp_path):
    stack, proxy = outage_stack
    client = stack.client
    before = client.wait(client.submit(zip_entries(tmp_path / "a.zip", {"code.py": "pass"}))["id"], timeout_s=60)
    assert before["state"] == "succeeded"

    proxy.cut()
    job = client.submit(zip_entries(tmp_path / "b.zip", {"code.py": "open('output/x','w').write('back')"}))
    assert job["state"] == "queued"
    time.sleep(3)
    assert client.job(job["id"])["state"] == "queued"

    proxy.restore()
    done = client.wait(job["id"], timeout_s=90)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 1
