"""The backend's recorder against the real RabbitMQ and a SQLite store: events in, job changes out."""
from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import pika
import pytest
from sqlalchemy import update

from backend import jobs as rules
from backend.recorder import Recorder
from backend.store import jobs as jobs_table
from nias.amqp import Topology
from nias.messages import JobEvent, UnitStatus

WAIT_S = 10.0


def eventually(check: Callable[[], object], what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"after {timeout:.0f} s: {what}")


def new_job(store) -> dict:
    job_id = uuid.uuid4().hex[:16]
    return store.insert_job(id=job_id, name="recorded", state="queued", upload=f"jobs/{job_id}/upload.zip",
                            upload_sha256="0" * 64, upload_size=10, queued_at=time.time())


@pytest.fixture
def recorder_for(sqlite_store, amqp_settings, broker):
    """Start a recorder on demand; it is stopped and its thread joined afterwards."""
    started: list[tuple[Recorder, threading.Thread]] = []

    def start() -> Recorder:
        recorder = Recorder(sqlite_store, amqp_settings)
        thread = threading.Thread(target=recorder.run, name="recorder-under-test", daemon=True)
        thread.start()
        started.append((recorder, thread))
        eventually(lambda: recorder.listening_since is not None, "the recorder is consuming")
        return recorder

    yield start
    for recorder, thread in started:
        recorder.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the recorder did not stop"


@pytest.fixture
def send(broker, amqp_settings) -> Callable[[bytes], None]:
    queue = Topology(amqp_settings.queue_prefix).events

    def publish(body: bytes) -> None:
        broker.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))

    return publish


def waiting(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def drain(channel, queue: str) -> list[bytes]:
    bodies = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def test_an_event_for_a_known_job_is_applied(sqlite_store, amqp_settings, recorder_for, send, broker):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    recorder_for()
    send(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="succeeded",
                  exit_code=0, result_size=321).encode())
    done = eventually(lambda: (j := sqlite_store.get_job(job["id"]))["state"] == "succeeded" and j,
                      "the finished event is applied")
    assert (done["exit_code"], done["result_size"]) == (0, 321)
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.events) == 0, "the event is acked")
    assert waiting(broker, topology.dead) == 0


def test_events_sent_while_the_recorder_was_down_are_applied_when_it_starts(sqlite_store, amqp_settings,
                                                                             recorder_for, send):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    send(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="failed",
                  exit_code=2, error="KeyError: 'x'").encode())
    recorder_for()
    failed = eventually(lambda: (j := sqlite_store.get_job(job["id"]))["state"] == "failed" and j,
                        "the waiting event is applied")
    assert failed["error"] == "KeyError: 'x'"


def test_a_poison_event_is_dead_lettered_and_the_next_good_event_still_applied(sqlite_store, amqp_settings,
                                                                              recorder_for, send, broker):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    recorder_for()
    not_json = b"this is not JSON"
    unknown_job = JobEvent(job_id="ffffffffffffffff", attempt=1, unit="unit-1", event=JobEvent.HEARTBEAT).encode()
    wrong_schema = b'{"v": 1, "type": "event", "job_id": "x"}'
    for body in (not_json, unknown_job, wrong_schema):
        send(body)
    send(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="succeeded",
                  exit_code=0).encode())
    eventually(lambda: sqlite_store.get_job(job["id"])["state"] == "succeeded", "the good event is applied")
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.dead) == 3, "three events are dead-lettered")
    assert drain(broker, topology.dead) == [not_json, unknown_job, wrong_schema]
    eventually(lambda: waiting(broker, topology.events) == 0, "the events queue is empty")


def test_an_event_for_a_stale_attempt_is_dropped_not_dead_lettered(sqlite_store, amqp_settings, recorder_for,
                                                                  send, broker):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    recorder_for()
    send(JobEvent(job_id=job["id"], attempt=7, unit="unit-9", event=JobEvent.FINISHED, state="succeeded").encode())
    send(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="failed",
                  exit_code=1).encode())
    eventually(lambda: sqlite_store.get_job(job["id"])["state"] == "failed", "the current attempt's event applies")
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.events) == 0, "both events are acked")
    assert waiting(broker, topology.dead) == 0


def test_a_unit_status_is_recorded(sqlite_store, recorder_for, send):
    recorder_for()
    send(UnitStatus(unit="unit-3", state="busy", job_id="abc", at=1234.5).encode())
    units = eventually(lambda: sqlite_store.list_units(), "the unit status is recorded")
    assert units == [{"name": "unit-3", "state": "busy", "job_id": "abc", "last_seen": 1234.5}]


def test_running_jobs_get_a_fresh_lease_when_the_recorder_starts(sqlite_store, amqp_settings, recorder_for):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    with sqlite_store.engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == job["id"]).values(lease_until=time.time() - 30))
    before = time.time()
    recorder_for()
    assert sqlite_store.get_job(job["id"])["lease_until"] >= before + amqp_settings.lease_s
    assert rules.expire_leases(sqlite_store, amqp_settings) == 0
