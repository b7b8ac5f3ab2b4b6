"""The consumer's plain functions against a fake processing unit and a fake channel: when it
counts an attempt as lost, and when it refuses to take a message at all."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from consumer.__main__ import Consumer
from consumer.worker import follow_run, unit_is_ready, wait_for_ready_unit
from nias.messages import JobEvent, JobMessage
from nias.settings import load_settings

MESSAGE = JobMessage(job_id="job1", upload="jobs/job1/upload.zip", sha256="0" * 64, size=100, dispatch=1)


class FakeUnit:
    """A processing unit that is down for its first `down_calls` calls, then answers."""

    def __init__(self, *, down_calls: int = 0, knows_run: bool = False, start_error: Exception | None = None,
                 busy: str | None = None, ok: bool = True):
        self.down_calls = down_calls
        self.knows_run = knows_run
        self.start_error = start_error
        self.busy = busy
        self.ok = ok
        self.calls: list[str] = []

    def _answer(self, name: str) -> None:
        self.calls.append(name)
        if len([c for c in self.calls if c != "start"]) <= self.down_calls:
            raise requests.ConnectionError("connection refused")

    def start(self, message, attempt) -> None:
        self.calls.append("start")
        if self.start_error is not None:
            raise self.start_error

    def status(self, job_id, wait_s) -> dict:
        self._answer("status")
        if not self.knows_run:
            response = requests.Response()
            response.status_code = 404
            raise requests.HTTPError("no such run", response=response)
        return {"attempt": 1, "done": True}

    def health(self) -> dict:
        self._answer("health")
        return {"ok": self.ok, "busy": self.busy}


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def test_a_start_the_unit_never_answered_is_lost_only_once_the_restarted_unit_says_it_has_no_such_run():
    unit = FakeUnit(down_calls=3, start_error=requests.ConnectionError("refused"))
    lost = follow_run(unit, MESSAGE, 1, "unit-1", threading.Event(), lost_after_s=30)
    assert isinstance(lost, JobEvent) and lost.event == JobEvent.LOST
    assert unit.calls.count("status") == 4  # three unanswered polls, then the unit's 404


def test_a_start_the_unit_never_answered_is_lost_when_the_unit_stays_away_past_the_limit():
    unit = FakeUnit(down_calls=10**6, start_error=requests.ConnectionError("refused"))
    began = time.monotonic()
    lost = follow_run(unit, MESSAGE, 1, "unit-1", threading.Event(), lost_after_s=0.3)
    assert lost is not None and lost.event == JobEvent.LOST
    assert 0.3 <= time.monotonic() - began < 5.0  # at the limit, within a few polls (each 0.5 s) of it


def test_a_start_that_timed_out_but_reached_the_unit_is_followed_to_its_end():
    unit = FakeUnit(knows_run=True, start_error=requests.ReadTimeout("slow"))
    assert follow_run(unit, MESSAGE, 1, "unit-1", threading.Event(), lost_after_s=30) is None


def test_a_start_the_unit_refuses_outright_is_lost_at_once():
    unit = FakeUnit(start_error=http_error(409))
    lost = follow_run(unit, MESSAGE, 1, "unit-1", threading.Event(), lost_after_s=30)
    assert lost is not None and unit.calls == ["start"]


@pytest.mark.parametrize("unit, ready", [
    (FakeUnit(), True),
    (FakeUnit(busy="other-job"), False),
    (FakeUnit(ok=False), False),
    (FakeUnit(down_calls=1), False),
], ids=["idle", "busy", "unhealthy", "unreachable"])
def test_a_unit_is_ready_only_when_it_answers_healthy_and_idle(unit, ready):
    assert unit_is_ready(unit) is ready


def test_waiting_for_a_unit_returns_once_it_is_back():
    unit = FakeUnit(down_calls=3)
    wait_for_ready_unit(unit, threading.Event(), interval_s=0.01)
    assert unit.calls.count("health") == 4


def test_waiting_for_a_unit_that_never_comes_back_ends_when_the_consumer_stops():
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    wait_for_ready_unit(FakeUnit(down_calls=10**6), stop, interval_s=0.01)
    assert stop.is_set()


class FakeChannel:
    is_open = True

    def __init__(self):
        self.settled: list[tuple[str, int]] = []

    def basic_ack(self, tag):
        self.settled.append(("ack", tag))

    def basic_nack(self, tag, requeue):
        self.settled.append(("requeue" if requeue else "nack", tag))

    def basic_reject(self, tag, requeue):
        self.settled.append(("reject", tag))


class FakeConnection:
    def add_callback_threadsafe(self, callback):
        callback()


class RefusingBackend:
    def claim(self, message, unit):
        raise AssertionError("a consumer whose unit is down must not claim the job")


def test_a_consumer_whose_unit_is_down_hands_the_message_back_unclaimed_and_waits_for_its_unit(tmp_path):
    consumer = Consumer(load_settings({"NIAS_DATA_DIR": str(tmp_path)}))
    consumer._connection = FakeConnection()
    consumer.backend = RefusingBackend()
    consumer.unit = FakeUnit(down_calls=3)
    channel = FakeChannel()
    consumer._busy.set()
    consumer._handle(channel, 7, MESSAGE)
    assert channel.settled == [("requeue", 7)]
    # it took no further message until its unit answered healthy and idle again
    assert consumer.unit.calls.count("health") == 4 and not consumer._busy.is_set()
