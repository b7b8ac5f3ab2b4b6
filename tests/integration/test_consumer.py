"""The consumer against the real RabbitMQ, with its unit stood in by a plain object and its backend
by a plain object or a small real HTTP server: one message at a time, none held back unseen behind
a busy unit, heartbeats kept while a job runs far longer than the heartbeat interval, and every
message settled exactly once: run, dead-lettered with its reason, or handed back counted."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pika
import pytest

from consumer.__main__ import Consumer
from consumer.delivery import MAX_TRIES
from consumer import worker
from consumer.worker import CLAIM_TRIES, Claim, Verdict
from nias.dead_letters import reason_of
from nias.messages import JobMessage
from nias.internal import ClaimAnswer, RunStatus
from tests.support.stack import free_port_block, wait_until


class IdleUnit:
    def health(self) -> dict:
        return {"ok": True, "busy": None}


class SlowBackend:
    """Claims hang until released, so a message stays in the consumer's hands meanwhile."""

    def __init__(self):
        self.release = threading.Event()
        self.claimed: list[str] = []

    def claim(self, message: JobMessage, unit: str, delivered_at: float | None = None) -> Claim:
        self.claimed.append(message.job_id)
        self.release.wait(60)
        return Claim(Verdict.DROP, reason="released by the test")


def job_id(number: int) -> str:
    return f"job{number:013d}"


def message(number: int) -> bytes:
    return JobMessage(job_id=job_id(number), upload="jobs/x/upload.zip", sha256="0" * 64, size=1,
                      dispatch=1).encode()


def queue_counts(channel, queue: str) -> tuple[int, int]:
    declared = channel.queue_declare(queue, passive=True).method
    return declared.message_count, declared.consumer_count


@contextlib.contextmanager
def running_consumer(settings, broker):
    """A consumer of an idle unit and a slow backend, running and subscribed; stopped at the end."""
    consumer = Consumer(settings)
    consumer.unit = IdleUnit()
    consumer.backend = SlowBackend()
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: queue_counts(broker, consumer.topology.jobs)[1] == 1, timeout_s=20,
                   message="the consumer subscribed")
        yield consumer
    finally:
        consumer.stop.set()
        consumer.backend.release.set()
        thread.join(30)


@pytest.fixture
def consumer(amqp_settings, broker):
    with running_consumer(amqp_settings, broker) as consumer:
        yield consumer


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


def test_a_slurm_units_consumer_holds_as_many_messages_as_its_unit_runs_batch_jobs(amqp_settings, broker):
    settings = dataclasses.replace(amqp_settings, executor="slurm", slurm_max_jobs=2)
    with running_consumer(settings, broker) as consumer:
        for number in range(4):
            broker.basic_publish("", consumer.topology.jobs, message(number), pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: len(consumer.backend.claimed) == 2, timeout_s=20, message="two claims at once")
        time.sleep(1)  # time for a wrongly prefetched or still-subscribed consumer to take more
        assert sorted(consumer.backend.claimed) == [job_id(0), job_id(1)]
        assert queue_counts(broker, consumer.topology.jobs) == (2, 0), "a full consumer keeps no subscription"
        consumer.backend.release.set()
        wait_until(lambda: len(consumer.backend.claimed) == 4, timeout_s=20, message="the other messages taken")
        wait_until(lambda: queue_counts(broker, consumer.topology.jobs) == (0, 1), timeout_s=20,
                   message="every message settled and the consumer subscribed again")


def test_a_consumer_keeps_its_connection_while_a_job_outlasts_several_heartbeats(amqp_settings, broker):
    with running_consumer(dataclasses.replace(amqp_settings, amqp_heartbeat_s=1), broker) as consumer:
        broker.basic_publish("", consumer.topology.jobs, message(7), pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: consumer.backend.claimed, timeout_s=20, message="a claim")
        connection = consumer._connection
        time.sleep(5)  # five heartbeat intervals with the job's thread busy
        assert consumer._connection is connection and connection.is_open, "the connection was lost and remade"
        consumer.backend.release.set()
        wait_until(lambda: queue_counts(broker, consumer.topology.jobs) == (0, 1), timeout_s=20,
                   message="the message settled on the same connection")
        assert consumer._connection is connection


class RunningUnit:
    """An idle unit that records each run it is given and reports it done at once."""

    def __init__(self):
        self.started: list[str] = []
        self._attempts: dict[str, int] = {}

    def health(self) -> dict:
        return {"ok": True, "busy": None}

    def start(self, message: JobMessage, attempt: int) -> None:
        self.started.append(message.job_id)
        self._attempts[message.job_id] = attempt

    def status(self, job_id: str, wait_s: float) -> RunStatus:
        return RunStatus(job_id=job_id, attempt=self._attempts[job_id], state="succeeded", done=True)


class BackendStandIn:
    """A real HTTP server where the backend would be: `answer(job_id)` gives each claim's status and body,
    and `/healthz` says whether `healthy` is set.

    Until `start()` nothing listens on its port, as when the backend is down."""

    def __init__(self, answer):
        self.answer = answer
        self.healthy = threading.Event()
        self.healthy.set()
        self.claims: list[str] = []
        self.url = f"http://127.0.0.1:{free_port_block(1)}"
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # /healthz
                healthy = stand_in.healthy.is_set()
                self.send_json(200 if healthy else 503, {"ok": healthy, "store": healthy})

            def do_POST(self) -> None:  # /internal/jobs/<job_id>/claim
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                claimed = self.path.split("/")[3]
                stand_in.claims.append(claimed)
                self.send_json(*stand_in.answer(claimed))

            def send_json(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def runs(job_id: str) -> tuple[int, dict]:
    return 200, json.loads(ClaimAnswer(job_id=job_id, attempt=1).encode())


@pytest.fixture
def start_consumer(amqp_settings, broker):
    """Start a consumer with the given backend (a stand-in's URL or a plain object) and unit."""
    started: list[tuple[Consumer, threading.Thread]] = []

    def start(backend, unit) -> Consumer:
        if isinstance(backend, BackendStandIn):
            consumer = Consumer(dataclasses.replace(amqp_settings, backend_url=backend.url))
        else:
            consumer = Consumer(amqp_settings)
            consumer.backend = backend
        consumer.unit = unit
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread))
        wait_until(lambda: queue_counts(broker, consumer.topology.jobs)[1] == 1, timeout_s=20,
                   message="the consumer subscribed")
        return consumer

    yield start
    for consumer, thread in started:
        consumer.stop.set()
        thread.join(30)


@pytest.fixture
def stand_in():
    stand_ins: list[BackendStandIn] = []

    def make(answer) -> BackendStandIn:
        stand_ins.append(BackendStandIn(answer))
        return stand_ins[-1]

    yield make
    for backend in stand_ins:
        backend.stop()


def publish(broker, queue: str, body: bytes) -> None:
    broker.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))


def dead_letters(channel, queue: str) -> dict[bytes, str]:
    """Every dead letter's body and the reason it carries, taken off the queue."""
    letters = {}
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return letters
        letters[body] = reason_of(properties)[0]


def settled_and_subscribed(broker, consumer: Consumer) -> bool:
    return queue_counts(broker, consumer.topology.jobs) == (0, 1) and consumer._in_flight == 0


def test_an_undecodable_job_message_is_dead_lettered_with_its_reason_and_the_next_job_still_runs(
        start_consumer, stand_in, broker):
    backend = stand_in(runs)
    backend.start()
    unit = RunningUnit()
    consumer = start_consumer(backend, unit)
    publish(broker, consumer.topology.jobs, b"this is not a job")
    publish(broker, consumer.topology.jobs, message(1))
    wait_until(lambda: unit.started == [job_id(1)], timeout_s=20, message="the next job run")
    wait_until(lambda: queue_counts(broker, consumer.topology.dead)[0] == 1, timeout_s=20,
               message="the undecodable message dead-lettered")
    reason = dead_letters(broker, consumer.topology.dead)[b"this is not a job"]
    assert reason is not None and "not JSON" in reason, reason
    wait_until(lambda: settled_and_subscribed(broker, consumer), timeout_s=20, message="everything settled")


def test_a_job_the_backend_does_not_know_is_dead_lettered_with_a_reason_naming_the_404(
        start_consumer, stand_in, broker):
    backend = stand_in(lambda job: (404, {"error": {"code": "job_not_found", "message": f"No job {job}."}}))
    backend.start()
    consumer = start_consumer(backend, RunningUnit())
    publish(broker, consumer.topology.jobs, message(2))
    wait_until(lambda: queue_counts(broker, consumer.topology.dead)[0] == 1, timeout_s=20,
               message="the unknown job's message dead-lettered")
    reason = dead_letters(broker, consumer.topology.dead)[message(2)]
    assert reason is not None and "404" in reason and f"No job {job_id(2)}." in reason, reason
    assert consumer.unit.started == []
    wait_until(lambda: settled_and_subscribed(broker, consumer), timeout_s=20, message="everything settled")


def test_a_claim_the_backend_fails_every_time_ends_dead_lettered_with_the_error_and_the_count_without_blocking_the_queue(
        start_consumer, stand_in, broker):
    failing = job_id(3)
    backend = stand_in(lambda job: (500, {"error": {"code": "internal_error", "message": "store broke"}})
                       if job == failing else runs(job))
    backend.start()
    unit = RunningUnit()
    consumer = start_consumer(backend, unit)
    publish(broker, consumer.topology.jobs, message(3))
    publish(broker, consumer.topology.jobs, message(4))
    wait_until(lambda: unit.started == [job_id(4)], timeout_s=60,
               message="the healthy job published after the failing one run")
    wait_until(lambda: queue_counts(broker, consumer.topology.dead)[0] == 1, timeout_s=60,
               message="the failing job's message dead-lettered")
    reason = dead_letters(broker, consumer.topology.dead)[message(3)]
    assert reason is not None and "500" in reason and f"{MAX_TRIES} deliveries" in reason, reason
    assert backend.claims.count(failing) == MAX_TRIES * CLAIM_TRIES
    assert unit.started == [job_id(4)]
    wait_until(lambda: settled_and_subscribed(broker, consumer), timeout_s=20, message="everything settled")


def test_a_claim_waits_out_a_backend_that_is_unreachable_and_the_job_runs_once_it_is_back(
        start_consumer, stand_in, broker):
    backend = stand_in(runs)  # not started: connections to it are refused
    unit = RunningUnit()
    consumer = start_consumer(backend, unit)
    publish(broker, consumer.topology.jobs, message(5))
    wait_until(lambda: queue_counts(broker, consumer.topology.jobs) == (0, 0), timeout_s=20,
               message="the message in the consumer's hands")
    time.sleep(6)  # longer than every bounded retry of failed answers would take
    assert queue_counts(broker, consumer.topology.dead)[0] == 0
    assert queue_counts(broker, consumer.topology.jobs) == (0, 0), "the message is held while the backend is away"
    backend.start()
    wait_until(lambda: unit.started == [job_id(5)], timeout_s=30, message="the job run once the backend is back")
    wait_until(lambda: settled_and_subscribed(broker, consumer), timeout_s=20, message="everything settled")
    assert queue_counts(broker, consumer.topology.dead)[0] == 0


def test_a_claim_waits_out_a_backend_whose_store_is_down_and_the_job_runs_once_it_is_back(
        start_consumer, stand_in, broker, monkeypatch):
    monkeypatch.setattr(worker, "OUTAGE_DELAY_MAX_S", 0.2)  # many claims in a short outage
    backend = stand_in(lambda job: runs(job) if backend.healthy.is_set()
                       else (500, {"error": {"code": "internal_error", "message": "Something went wrong."}}))
    backend.healthy.clear()
    backend.start()
    unit = RunningUnit()
    consumer = start_consumer(backend, unit)
    publish(broker, consumer.topology.jobs, message(8))
    wait_until(lambda: len(backend.claims) >= MAX_TRIES * CLAIM_TRIES + 1, timeout_s=60,
               message="more failed claims than a counted message is allowed")
    assert queue_counts(broker, consumer.topology.dead)[0] == 0
    assert unit.started == []
    backend.healthy.set()
    wait_until(lambda: unit.started == [job_id(8)], timeout_s=30, message="the job run once the store is back")
    wait_until(lambda: settled_and_subscribed(broker, consumer), timeout_s=20, message="everything settled")
    assert queue_counts(broker, consumer.topology.dead)[0] == 0


class FailingOnceBackend:
    """Raises out of its first claim, as a bug in the handler would; then lets every job run."""

    def __init__(self):
        self.claims: list[str] = []

    def claim(self, message: JobMessage, unit: str, delivered_at: float | None = None) -> Claim:
        self.claims.append(message.job_id)
        if len(self.claims) == 1:
            raise RuntimeError("injected failure")
        return Claim(Verdict.RUN, attempt=1)


def test_an_exception_in_the_handler_leaves_no_message_unsettled_and_the_message_comes_back_to_run(
        start_consumer, broker):
    unit = RunningUnit()
    consumer = start_consumer(FailingOnceBackend(), unit)
    publish(broker, consumer.topology.jobs, message(6))
    wait_until(lambda: unit.started == [job_id(6)], timeout_s=20,
               message="the message handed back after the exception and run")
    wait_until(lambda: settled_and_subscribed(broker, consumer), timeout_s=20, message="everything settled")
    publish(broker, consumer.topology.jobs, message(7))
    wait_until(lambda: unit.started == [job_id(6), job_id(7)], timeout_s=20,
               message="the next message taken: no delivery holds the prefetch slot")
    assert consumer.backend.claims == [job_id(6), job_id(6), job_id(7)]
    assert queue_counts(broker, consumer.topology.dead)[0] == 0
