"""The consumer against the real RabbitMQ, with its unit and backend stood in by plain objects:
one message at a time, none held back unseen behind a busy unit, and heartbeats kept while a
job runs far longer than the heartbeat interval."""
from __future__ import annotations

import dataclasses
import threading
import time

import pika
import pytest

from consumer.__main__ import Consumer
from consumer.worker import Claim, Verdict
from nias.messages import JobMessage
from tests.support.stack import wait_until


class IdleUnit:
    def health(self) -> dict:
        return {"ok": True, "busy": None}


class SlowBackend:
    """Claims hang until released, so a message stays in the consumer's hands meanwhile."""

    def __init__(self):
        self.release = threading.Event()
        self.claimed: list[str] = []

    def claim(self, message: JobMessage, unit: str) -> Claim:
        self.claimed.append(message.job_id)
        self.release.wait(60)
        return Claim(Verdict.DROP, reason="released by the test")


def message(number: int) -> bytes:
    return JobMessage(job_id=f"job{number:013d}", upload="jobs/x/upload.zip", sha256="0" * 64, size=1,
                      dispatch=1).encode()


def queue_counts(channel, queue: str) -> tuple[int, int]:
    declared = channel.queue_declare(queue, passive=True).method
    return declared.message_count, declared.consumer_count


@pytest.fixture
def consumer(amqp_settings, broker):
    consumer = Consumer(amqp_settings)
    consumer.unit = IdleUnit()
    consumer.backend = SlowBackend()
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    wait_until(lambda: queue_counts(broker, consumer.topology.jobs)[1] == 1, timeout_s=20,
               message="the consumer subscribed")
    yield consumer
    consumer.stop.set()
    consumer.backend.release.set()
    thread.join(30)


def test_a_busy_consumer_holds_one_message_and_leaves_the_rest_in_the_queue_for_others(consumer, broker):
    for number in range(3):
        broker.basic_publish("", consumer.topology.jobs, message(number),
                             pika.BasicProperties(delivery_mode=2))
    wait_until(lambda: consumer.backend.claimed, timeout_s=20, message="a claim")
    time.sleep(1)  # time for a wrongly prefetched or still-subscribed consumer to take more
    ready, consumers = queue_counts(broker, consumer.topology.jobs)
    assert consumer.backend.claimed == ["job0000000000000"]
    assert ready == 2 and consumers == 0, "a busy consumer keeps no subscription and holds one message only"
    consumer.backend.release.set()
    wait_until(lambda: len(consumer.backend.claimed) == 3, timeout_s=20, message="the other messages taken")
    wait_until(lambda: queue_counts(broker, consumer.topology.jobs) == (0, 1), timeout_s=20,
               message="every message settled and the consumer subscribed again")


def test_a_consumer_keeps_its_connection_while_a_job_outlasts_several_heartbeats(amqp_settings, broker):
    settings = dataclasses.replace(amqp_settings, amqp_heartbeat_s=1)
    consumer = Consumer(settings)
    consumer.unit = IdleUnit()
    consumer.backend = SlowBackend()
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: queue_counts(broker, consumer.topology.jobs)[1] == 1, timeout_s=20,
                   message="the consumer subscribed")
        broker.basic_publish("", consumer.topology.jobs, message(7), pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: consumer.backend.claimed, timeout_s=20, message="a claim")
        connection = consumer._connection
        time.sleep(5)  # five heartbeat intervals with the job's thread busy
        assert consumer._connection is connection and connection.is_open, "the connection was lost and remade"
        consumer.backend.release.set()
        wait_until(lambda: queue_counts(broker, consumer.topology.jobs) == (0, 1), timeout_s=20,
                   message="the message settled on the same connection")
        assert consumer._connection is connection
    finally:
        consumer.stop.set()
        consumer.backend.release.set()
        thread.join(30)
