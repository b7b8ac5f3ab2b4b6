"""The recorder's pika callback against a fake channel and store: what might succeed later is tried
a bounded number of times, never by sleeping in the callback; a store outage dead-letters nothing."""
from __future__ import annotations

import time

from backend import recorder as recorder_module
from backend.recorder import MAX_TRIES, Recorder
from nias.messages import JobEvent, unit_key
from nias.settings import load_settings

TOKEN = "unit-test-token"


class BrokenStore:
    """A store whose reads fail; `ping` says whether the store as a whole answers."""

    def __init__(self, answers: bool):
        self.answers = answers

    def get_job(self, job_id):
        raise RuntimeError("a row the code cannot read")

    def ping(self) -> bool:
        return self.answers


class FakeChannel:
    is_open = True

    def __init__(self):
        self.settled: list[tuple[str, int]] = []
        self.dead: list[tuple[bytes, dict]] = []

    def basic_ack(self, tag):
        self.settled.append(("ack", tag))

    def basic_nack(self, tag, requeue):
        self.settled.append(("requeue" if requeue else "nack", tag))

    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.dead.append((body, properties.headers))


class FakeConnection:
    """Runs `call_later` callbacks at once, noting the delays asked for."""

    def __init__(self):
        self.delays: list[float] = []

    def call_later(self, delay, callback):
        self.delays.append(delay)
        callback()


class Method:
    def __init__(self, tag: int):
        self.delivery_tag = tag


def recorder_with(store) -> tuple[Recorder, FakeChannel, FakeConnection]:
    recorder = Recorder(store, load_settings({}, internal_token=TOKEN))
    channel, connection = FakeChannel(), FakeConnection()
    recorder._connection, recorder._dead_channel = connection, channel
    return recorder, channel, connection


BODY = JobEvent(job_id="j1", attempt=1, unit="unit-1", event=JobEvent.HEARTBEAT).encode(key=unit_key(TOKEN, "unit-1"))


def test_an_event_that_keeps_failing_is_dead_lettered_after_a_bounded_number_of_tries_with_the_error(monkeypatch):
    slept = []
    monkeypatch.setattr(recorder_module.time, "sleep", slept.append)
    recorder, channel, connection = recorder_with(BrokenStore(answers=True))
    for delivery in range(1, MAX_TRIES + 1):
        recorder._on_event(channel, Method(delivery), None, BODY)
    assert channel.settled == [("requeue", tag) for tag in range(1, MAX_TRIES)] + [("ack", MAX_TRIES)]
    [(body, headers)] = channel.dead
    assert body == BODY
    assert f"{MAX_TRIES} tries" in headers["x-nias-reason"] and "RuntimeError" in headers["x-nias-reason"]
    assert connection.delays == sorted(connection.delays) and len(connection.delays) == MAX_TRIES - 1
    assert slept == [], "the callback slept"


def test_events_wait_uncounted_while_the_store_does_not_answer():
    recorder, channel, connection = recorder_with(BrokenStore(answers=False))
    for delivery in range(1, 4 * MAX_TRIES):
        recorder._on_event(channel, Method(delivery), None, BODY)
    assert channel.dead == []
    assert {verdict for verdict, _ in channel.settled} == {"requeue"}
    assert max(connection.delays) <= recorder_module.OUTAGE_DELAY_MAX_S


def test_a_callback_returns_at_once_whatever_fails():
    recorder, channel, connection = recorder_with(BrokenStore(answers=True))
    connection.call_later = lambda delay, callback: None  # held, released later by the connection
    began = time.monotonic()
    for delivery in range(50):
        recorder._on_event(channel, Method(delivery), None, BODY)
    assert time.monotonic() - began < 5  # generous: fifty callbacks that slept a second each would take 50 s
