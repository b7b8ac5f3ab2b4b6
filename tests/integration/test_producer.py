"""The producer against the real RabbitMQ: what it publishes, where, and how it answers."""
from __future__ import annotations

import json

import pika.exceptions
import pytest

from nias.amqp import MAX_PRIORITY, Topology
from nias.messages import JobMessage
from nias.web import INTERNAL_HEADER
from producer.app import create_app

from tests.integration.conftest import INTERNAL_TOKEN

HEADERS = {INTERNAL_HEADER: INTERNAL_TOKEN, "Content-Type": "application/json"}


def job_message(job_id: str = "3f9a2c7d1e5b4a60", **changes) -> JobMessage:
    values = dict(job_id=job_id, upload=f"jobs/{job_id}/upload.zip", sha256="ab" * 32, size=98_765, dispatch=1)
    values.update(changes)
    return JobMessage(**values)


@pytest.fixture
def producer(amqp_settings, broker):
    app = create_app(amqp_settings)
    yield app
    app.extensions["publisher"].close()


@pytest.fixture
def client(producer):
    return producer.test_client()


def waiting(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def test_a_published_job_lands_in_the_jobs_queue_as_a_persistent_message(client, broker, amqp_settings):
    message = job_message(priority=3, timeout_s=600)
    response = client.post("/api/publish", data=message.encode(), headers=HEADERS)
    assert response.status_code == 202
    assert response.get_json() == {"published": message.job_id}
    method, properties, body = broker.basic_get(Topology(amqp_settings.queue_prefix).jobs, auto_ack=True)
    assert method is not None
    assert properties.delivery_mode == 2
    assert properties.message_id == message.job_id
    assert properties.priority == 3
    assert properties.content_type == "application/json"
    assert JobMessage.decode(body) == message
    assert len(body) < 400


def test_the_jobs_queue_is_durable_with_priorities_and_dead_letters(client, open_channel, amqp_settings):
    assert client.post("/api/publish", data=job_message().encode(), headers=HEADERS).status_code == 202
    topology = Topology(amqp_settings.queue_prefix)
    arguments = {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": topology.dead_exchange}
    open_channel().queue_declare(topology.jobs, durable=True, arguments=arguments)
    for durable, changed in ((False, arguments), (True, {"x-dead-letter-exchange": topology.dead_exchange})):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            open_channel().queue_declare(topology.jobs, durable=durable, arguments=changed)
        assert caught.value.reply_code == 406  # PRECONDITION_FAILED: the queue is not declared so


def test_a_more_urgent_job_is_delivered_first(client, broker, amqp_settings):
    for job_id, priority in (("000000000000000a", 1), ("000000000000000b", 9), ("000000000000000c", 5)):
        response = client.post("/api/publish", data=job_message(job_id, priority=priority).encode(), headers=HEADERS)
        assert response.status_code == 202
    queue = Topology(amqp_settings.queue_prefix).jobs
    order = [broker.basic_get(queue, auto_ack=True)[1].message_id for _ in range(3)]
    assert order == ["000000000000000b", "000000000000000c", "000000000000000a"]


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    json.dumps({"v": 1, "type": "job", "job_id": "x"}).encode(),
    json.dumps({**json.loads(job_message().encode()), "dispatch": "1"}).encode(),
    json.dumps({**json.loads(job_message().encode()), "shell": "rm -rf /"}).encode(),
    json.dumps({**json.loads(job_message().encode()), "v": 2}).encode(),
])
def test_a_malformed_body_gets_a_400_json_error_and_nothing_is_published(client, broker, amqp_settings, body):
    response = client.post("/api/publish", data=body, headers=HEADERS)
    assert response.status_code == 400
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == "bad_message" and error["message"]
    assert waiting(broker, Topology(amqp_settings.queue_prefix).jobs) == 0


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_publish_without_the_internal_credential_is_refused_and_nothing_is_published(client, broker,
                                                                                       amqp_settings, token):
    headers = {INTERNAL_HEADER: token} if token else {}
    response = client.post("/api/publish", data=job_message().encode(), headers=headers)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "internal_only"
    assert waiting(broker, Topology(amqp_settings.queue_prefix).jobs) == 0


def test_health_is_200_with_the_broker_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"service": "producer", "name": "producer", "ok": True, "broker": True}


@pytest.fixture
def unreachable_client(make_settings, queue_prefix):
    settings = make_settings(amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", queue_prefix=queue_prefix,
                             internal_token=INTERNAL_TOKEN)
    app = create_app(settings)
    yield app.test_client()
    app.extensions["publisher"].close()


def test_health_is_503_when_the_broker_is_unreachable(unreachable_client):
    response = unreachable_client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"service": "producer", "name": "producer", "ok": False, "broker": False}


def test_a_publish_answers_503_broker_unavailable_when_the_broker_is_unreachable(unreachable_client):
    response = unreachable_client.post("/api/publish", data=job_message().encode(), headers=HEADERS)
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "broker_unavailable"
    assert "guest:guest" not in error["message"]
