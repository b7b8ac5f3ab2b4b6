"""The consumer's plain functions against a fake processing unit, backend and channel: when it
counts an attempt as lost, when it refuses to take a message at all, what each claim answer
means, and how every message in its hands is settled exactly once."""
from __future__ import annotations

import json
import threading
import time

import pika
import pytest
import requests

from consumer import worker
from consumer.__main__ import Consumer
from consumer.delivery import MAX_TRIES, TRIES_HEADER, Delivery
from consumer.worker import (Backend, Claim, Unit, Verdict, claim_with_retry, follow_run, unit_is_ready,
                             wait_for_ready_unit)
from nias.dead_letters import REASON_HEADER
from nias.errors import ServiceUnavailable
from nias.messages import JobEvent, JobMessage
from nias.settings import load_settings
from nias.internal import ClaimAnswer, RunStatus

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

    def status(self, job_id, wait_s) -> RunStatus:
        self._answer("status")
        if not self.knows_run:
            response = requests.Response()
            response.status_code = 404
            raise requests.HTTPError("no such run", response=response)
        return RunStatus(job_id=job_id, attempt=1, state="succeeded", done=True)

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
        self.published: list[tuple[str, str, bytes, pika.BasicProperties]] = []

    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.published.append((exchange, routing_key, body, properties))

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
    def claim(self, message, unit, delivered_at=None):
        raise AssertionError("a consumer whose unit is down must not claim the job")


def consumer_with(tmp_path, backend, unit) -> Consumer:
    consumer = Consumer(load_settings({"NIAS_DATA_DIR": str(tmp_path)}))
    consumer._connection = FakeConnection()
    consumer._publish_channel = FakeChannel()
    consumer.backend = backend
    consumer.unit = unit
    consumer._in_flight = 1
    return consumer


def delivered(channel: FakeChannel, tries: int | None = None) -> Delivery:
    headers = {TRIES_HEADER: tries} if tries is not None else None
    return Delivery(channel, 7, pika.BasicProperties(priority=3, headers=headers), MESSAGE.encode())


def test_a_consumer_whose_unit_is_down_hands_the_message_back_unclaimed_and_waits_for_its_unit(tmp_path):
    consumer = consumer_with(tmp_path, RefusingBackend(), FakeUnit(down_calls=3))
    channel = FakeChannel()
    consumer._handle(delivered(channel), MESSAGE)
    assert channel.settled == [("requeue", 7)]
    # it took no further message until its unit answered healthy and idle again
    assert consumer.unit.calls.count("health") == 4 and consumer._in_flight == 0


class FakeSession:
    """Answers every post with `status` and `body`, or raises `error`."""

    def __init__(self, status: int = 200, body: bytes = b"{}", error: Exception | None = None):
        self.status, self.body, self.error = status, body, error
        self.headers: dict = {}

    def post(self, url, data=None, headers=None, timeout=None) -> requests.Response:
        if self.error is not None:
            raise self.error
        response = requests.Response()
        response.status_code, response._content = self.status, self.body
        return response

    def get(self, url, timeout=None) -> requests.Response:
        return self.post(url)


def error_body(message: str) -> bytes:
    return json.dumps({"error": {"code": "some_code", "message": message}}).encode()


def claim_answer(status: int, body: bytes) -> Claim:
    backend = Backend(load_settings({}), session=FakeSession(status, body))
    return backend.claim(MESSAGE, "unit-1")


@pytest.mark.parametrize("status, body, verdict, named", [
    (200, ClaimAnswer(job_id="job1", attempt=2).encode(), Verdict.RUN, ""),
    (409, error_body("Job job1 is running."), Verdict.DROP, "is running"),
    (409, b"<html>", Verdict.DROP, "409"),
    (404, error_body("No job job1."), Verdict.DEAD, "404"),
    (400, error_body("A claim needs dispatch."), Verdict.DEAD, "needs dispatch"),
    (500, error_body("store broke"), Verdict.AGAIN, "500"),
    (502, b"<html>bad gateway</html>", Verdict.AGAIN, "502"),
    (429, b"slow down", Verdict.AGAIN, "429"),
    (200, b"not json", Verdict.AGAIN, "attempt"),
    (200, b'{"v": 1, "type": "claimed", "job_id": "job1", "attempt": "2"}', Verdict.AGAIN, "attempt"),
    (200, b"[1]", Verdict.AGAIN, "attempt"),
], ids=["claimed", "stale", "stale-without-json", "unknown", "malformed-claim", "server-error",
        "bad-gateway", "too-many", "bad-json", "attempt-not-a-number", "not-an-object"])
def test_each_claim_answer_says_whether_to_run_drop_dead_letter_or_try_again(status, body, verdict, named):
    claim = claim_answer(status, body)
    assert claim.verdict is verdict
    assert named in claim.reason
    if verdict is Verdict.RUN:
        assert claim.attempt == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_backend_that_refuses_the_internal_token_is_a_setup_error_waited_out_not_a_dead_letter(status):
    backend = Backend(load_settings({}), session=FakeSession(status, error_body("Unknown internal token.")))
    with pytest.raises(ServiceUnavailable) as caught:
        backend.claim(MESSAGE, "unit-1")
    assert "NIAS_INTERNAL_TOKEN" in caught.value.message and str(status) in caught.value.message


@pytest.mark.parametrize("error", [requests.ConnectionError("refused"), requests.ReadTimeout("no answer")],
                         ids=["refused", "timed-out"])
def test_a_backend_that_does_not_answer_the_claim_is_unavailable_not_failing(error):
    backend = Backend(load_settings({}), session=FakeSession(error=error))
    with pytest.raises(ServiceUnavailable):
        backend.claim(MESSAGE, "unit-1")


@pytest.mark.parametrize("session, healthy", [
    (FakeSession(200, b'{"ok": true, "store": true}'), True),
    (FakeSession(503, b'{"ok": false, "store": false}'), False),
    (FakeSession(200, b"[]"), False),
    (FakeSession(error=requests.ConnectionError("refused")), False),
], ids=["healthy", "store-down", "odd-answer", "unreachable"])
def test_the_backend_is_healthy_only_when_its_health_check_says_so(session, healthy):
    assert Backend(load_settings({}), session=session).is_healthy() is healthy


class ScriptedBackend:
    """Plays its answers in order: a Claim is returned, an exception raised; the last one repeats.

    Its health check says unhealthy for its first `unhealthy_checks` calls."""

    def __init__(self, *answers, unhealthy_checks: int = 0):
        self.answers = list(answers)
        self.calls = 0
        self.unhealthy_checks = unhealthy_checks
        self.health_checks = 0

    def is_healthy(self) -> bool:
        self.health_checks += 1
        return self.health_checks > self.unhealthy_checks

    def claim(self, message, unit, delivered_at=None) -> Claim:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(worker, "RETRY_DELAY_S", 0.001)
    monkeypatch.setattr(worker, "OUTAGE_DELAY_MAX_S", 0.001)


def test_a_claim_the_backend_keeps_failing_is_tried_a_few_times_then_given_back_with_the_last_error(quick_retries):
    backend = ScriptedBackend(Claim(Verdict.AGAIN, reason="claim answered HTTP 500: store broke"))
    claim = claim_with_retry(backend, MESSAGE, "unit-1", threading.Event())
    assert claim.verdict is Verdict.AGAIN and "500" in claim.reason and f"{worker.CLAIM_TRIES} tries" in claim.reason
    assert backend.calls == worker.CLAIM_TRIES


def test_a_claim_waits_for_an_unreachable_backend_without_counting_and_answers_once_it_is_back(quick_retries):
    outage = [ServiceUnavailable("the backend did not answer")] * (worker.CLAIM_TRIES * MAX_TRIES * 2)
    backend = ScriptedBackend(*outage, Claim(Verdict.AGAIN, reason="HTTP 500"), Claim(Verdict.RUN, attempt=1))
    claim = claim_with_retry(backend, MESSAGE, "unit-1", threading.Event())
    assert claim.verdict is Verdict.RUN and backend.calls == len(outage) + 2


def test_failed_claims_while_the_backend_reports_itself_unhealthy_are_waited_out_uncounted(quick_retries):
    unhealthy = worker.CLAIM_TRIES * MAX_TRIES * 2
    backend = ScriptedBackend(*[Claim(Verdict.AGAIN, reason="claim answered HTTP 500")] * (unhealthy + 1),
                              Claim(Verdict.RUN, attempt=1), unhealthy_checks=unhealthy)
    claim = claim_with_retry(backend, MESSAGE, "unit-1", threading.Event())
    assert claim.verdict is Verdict.RUN and backend.calls == unhealthy + 2


def test_a_claim_waiting_for_an_unreachable_backend_gives_up_only_when_the_consumer_stops(quick_retries):
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    backend = ScriptedBackend(ServiceUnavailable("the backend did not answer"))
    assert claim_with_retry(backend, MESSAGE, "unit-1", stop) is None


def test_an_exception_before_the_message_is_settled_hands_it_back_counted_exactly_once(tmp_path):
    consumer = consumer_with(tmp_path, ScriptedBackend(RuntimeError("injected failure")), FakeUnit())
    channel = FakeChannel()
    consumer._handle(delivered(channel, tries=1), MESSAGE)
    assert channel.settled == [("ack", 7)]
    [(exchange, queue, body, properties)] = consumer._publish_channel.published
    assert (exchange, queue, body) == ("", consumer.topology.jobs, MESSAGE.encode())
    assert properties.headers[TRIES_HEADER] == 2 and properties.priority == 3 and properties.delivery_mode == 2
    assert consumer._in_flight == 0


def test_a_message_handed_back_its_last_time_is_dead_lettered_with_the_last_error_and_the_count(tmp_path):
    consumer = consumer_with(tmp_path, ScriptedBackend(RuntimeError("injected failure")), FakeUnit())
    channel = FakeChannel()
    consumer._handle(delivered(channel, tries=MAX_TRIES - 1), MESSAGE)
    assert channel.settled == [("ack", 7)]
    [(exchange, _queue, body, properties)] = consumer._publish_channel.published
    assert exchange == consumer.topology.dead_exchange and body == MESSAGE.encode()
    reason = properties.headers[REASON_HEADER]
    assert "RuntimeError: injected failure" in reason and f"{MAX_TRIES} deliveries" in reason


def test_a_unit_whose_health_answer_is_not_an_object_is_not_ready_and_the_worker_survives_it(tmp_path):
    class OddUnit(FakeUnit):
        def health(self):
            raise TypeError("list indices must be integers or slices, not str")

    consumer = consumer_with(tmp_path, RefusingBackend(), OddUnit())
    stop_soon = threading.Timer(0.3, consumer.stop.set)
    stop_soon.start()
    channel = FakeChannel()
    consumer._handle(delivered(channel), MESSAGE)
    assert channel.settled == [("requeue", 7)] and consumer._in_flight == 0


@pytest.mark.parametrize("body, ready", [
    ({"service": "unit", "name": "unit-1", "ok": True, "busy": None}, True),
    ({"service": "unit", "name": "unit-2", "ok": True, "busy": None}, False),
    ({"service": "backend", "name": "backend", "ok": True}, False),
    ({"ok": True, "busy": None}, False),
], ids=["itself", "another-unit", "the-backend", "no-identity"])
def test_a_unit_is_ready_only_when_its_address_answers_as_that_unit(body, ready):
    unit = Unit(load_settings({"NIAS_UNIT_NAME": "unit-1"}), session=FakeSession(200, json.dumps(body).encode()))
    assert unit_is_ready(unit) is ready
