"""Poison messages go to the dead-letter queue and the consumers carry on."""
from __future__ import annotations

import json

import pika

from nias.amqp import Topology, connect
from nias.messages import JobMessage
from nias.settings import load_settings
from tests.support.projects import zip_entries
from tests.support.stack import wait_until


def _dead_letters(prefix: str) -> list[bytes]:
    connection = connect(load_settings({}, queue_prefix=prefix), attempts=3)
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _props, body = channel.basic_get(Topology(prefix).dead, auto_ack=False)
            if method is None:
                break
            bodies.append(body)
        return bodies  # unacked: they return to the queue when the channel closes
    finally:
        connection.close()


def _publish(prefix: str, body: bytes) -> None:
    connection = connect(load_settings({}, queue_prefix=prefix), attempts=3)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", Topology(prefix).jobs, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def test_undecodable_and_unknown_job_messages_are_dead_lettered_and_work_goes_on(stack, client, tmp_path):
    unknown = JobMessage(job_id="ffffffffffffffff", upload="jobs/ffffffffffffffff/upload.zip", sha256="0" * 64,
                         size=1, dispatch=1).encode()
    poison = [b"not json at all", json.dumps({"v": 1, "type": "job", "job_id": 3}).encode(), unknown]
    for body in poison:
        _publish(stack.prefix, body)
    wait_until(lambda: len(_dead_letters(stack.prefix)) >= len(poison), timeout_s=30, message="dead letters")
    assert sorted(_dead_letters(stack.prefix)) == sorted(poison)
    job = client.wait(client.submit(zip_entries(tmp_path / "ok.zip", {"code.py": "pass"}))["id"], timeout_s=60)
    assert job["state"] == "succeeded"
    admin_view = stack.http.get(f"{stack.url}/api/admin/dead-letters", timeout=10).json()
    assert admin_view["count"] == len(poison)
    assert sorted(m["body"].encode() for m in admin_view["messages"]) == sorted(poison)
    reasons = {m["body"].encode(): m["reason"] for m in admin_view["messages"]}
    assert "not JSON" in reasons[poison[0]]
    assert "'job_id' has the wrong type" in reasons[poison[1]]
    assert "404" in reasons[poison[2]] and "ffffffffffffffff" in reasons[poison[2]]
    assert {m["queue"] for m in admin_view["messages"]} == {f"{stack.prefix}.jobs"}
    assert len(_dead_letters(stack.prefix)) == len(poison)  # looking did not remove them
