"""The backend's recorder against the real RabbitMQ and a SQLite store: events in, job changes out."""
from __future__ import annotations

import dataclasses
import json
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
from nias.dead_letters import REASON_HEADER
from nias.health import SandboxMode
from nias.messages import JobEvent, UnitStatus, unit_key
from tests.integration.conftest import INTERNAL_TOKEN

WAIT_S = 10.0


def eventually(check: Callable[[], object], what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"after {timeout:.0f} s: {what}")


def signed(message: JobEvent | UnitStatus) -> bytes:
    """Encoded and signed as the unit it names signs it."""
    return message.encode(key=unit_key(INTERNAL_TOKEN, message.unit))


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
    send(signed(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="succeeded",
                         exit_code=0, result_size=321)))
    done = eventually(lambda: (j := sqlite_store.get_job(job["id"]))["state"] == "succeeded" and j,
                      "the finished event is applied")
    assert (done["exit_code"], done["result_size"]) == (0, 321)
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.events) == 0, "the event is acked")
    assert waiting(broker, topology.dead) == 0


def test_events_sent_while_the_recorder_was_down_are_applied_when_it_starts(sqlite_store, amqp_settings,
                                                                             recorder_for, send):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    send(signed(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="failed",
                         exit_code=2, error="KeyError: 'x'")))
    recorder_for()
    failed = eventually(lambda: (j := sqlite_store.get_job(job["id"]))["state"] == "failed" and j,
                        "the waiting event is applied")
    assert failed["error"] == "KeyError: 'x'"


def test_a_poison_event_is_dead_lettered_and_the_next_good_event_still_applied(sqlite_store, amqp_settings,
                                                                              recorder_for, send, broker):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    recorder_for()
    not_json = b"this is not JSON"
    unknown_job = signed(JobEvent(job_id="ffffffffffffffff", attempt=1, unit="unit-1", event=JobEvent.HEARTBEAT))
    wrong_schema = b'{"v": 1, "type": "event", "job_id": "x"}'
    for body in (not_json, unknown_job, wrong_schema):
        send(body)
    send(signed(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="succeeded",
                         exit_code=0)))
    eventually(lambda: sqlite_store.get_job(job["id"])["state"] == "succeeded", "the good event is applied")
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.dead) == 3, "three events are dead-lettered")
    assert drain(broker, topology.dead) == [not_json, unknown_job, wrong_schema]
    eventually(lambda: waiting(broker, topology.events) == 0, "the events queue is empty")


def test_an_event_for_a_stale_attempt_is_dropped_not_dead_lettered(sqlite_store, amqp_settings, recorder_for,
                                                                  send, broker):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    recorder_for()
    send(signed(JobEvent(job_id=job["id"], attempt=7, unit="unit-9", event=JobEvent.FINISHED, state="succeeded")))
    send(signed(JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="failed",
                         exit_code=1)))
    eventually(lambda: sqlite_store.get_job(job["id"])["state"] == "failed", "the current attempt's event applies")
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.events) == 0, "both events are acked")
    assert waiting(broker, topology.dead) == 0


def test_a_unit_status_is_recorded_with_the_units_sandbox_pools_host_and_executor(sqlite_store, recorder_for, send):
    recorder_for()
    send(signed(UnitStatus(unit="unit-3", state="busy", job_id="abc", at=1234.5, sandbox=SandboxMode.NONE,
                           pools=["default", "gpu"], host="gpubox", cpus=32, memory_mb=257_000,
                           gpus=["NVIDIA A100-SXM4-40GB"], python="3.11.2", executor="slurm",
                           pause_refusal="not an operator")))
    units = eventually(lambda: sqlite_store.list_units(), "the unit status is recorded")
    assert units == [{"name": "unit-3", "state": "busy", "job_id": "abc", "last_seen": 1234.5, "sandbox": "none",
                      "pools": ["default", "gpu"], "host": "gpubox", "cpus": 32, "memory_mb": 257_000,
                      "gpus": ["NVIDIA A100-SXM4-40GB"], "python": "3.11.2", "executor": "slurm",
                      "pause_refusal": "not an operator", "draining": None}]


def test_running_jobs_get_a_fresh_lease_when_the_recorder_starts(sqlite_store, amqp_settings, recorder_for):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    with sqlite_store.engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == job["id"]).values(lease_until=time.time() - 30))
    before = time.time()
    recorder_for()
    assert sqlite_store.get_job(job["id"])["lease_until"] >= before + amqp_settings.lease_s
    assert rules.expire_leases(sqlite_store, amqp_settings) == 0


def dead_letters(channel, queue: str) -> list[tuple[bytes, str]]:
    """Every dead letter's body and reason, taken off the queue."""
    letters = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return letters
        reason = (properties.headers or {}).get(REASON_HEADER)
        letters.append((body, reason.decode() if isinstance(reason, bytes) else reason))


def resigned(body: dict, unit: str) -> bytes:
    """A hand-made event body, signed as `unit` would sign it (so only its content is wrong)."""
    from nias.messages import _signature  # the signer's own function: the test forges nothing but content
    body = {key: value for key, value in body.items() if key != "sig"}
    return json.dumps({**body, "sig": _signature(unit_key(INTERNAL_TOKEN, unit), body)}).encode()


def test_events_that_can_never_apply_are_dead_lettered_at_once_each_with_its_reason(sqlite_store, amqp_settings,
                                                                                    recorder_for, send, broker):
    job = rules.claim_job(sqlite_store, amqp_settings, new_job(sqlite_store)["id"], 1, "unit-1")
    finished = JobEvent(job_id=job["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="failed",
                        exit_code=1, error="forged")
    done_state = resigned({**json.loads(finished.encode()), "state": "done"}, "unit-1")
    poison = {
        b"this is not JSON": "not JSON",
        done_state: "state",
        signed(JobEvent(job_id="ffffffffffffffff", attempt=1, unit="unit-1", event=JobEvent.HEARTBEAT)): "job_not_found",
        finished.encode(): "not signed",
        finished.encode(key=unit_key("a guessed token", "unit-1")): "does not verify",
        signed(dataclasses.replace(finished, unit="unit-2")): "unit-1 holds",
    }
    recorder_for()
    for body in poison:
        send(body)
    topology = Topology(amqp_settings.queue_prefix)
    eventually(lambda: waiting(broker, topology.dead) == len(poison), "every poison event is dead-lettered")
    letters = dict(dead_letters(broker, topology.dead))
    assert set(letters) == set(poison)
    for body, why in poison.items():
        assert why in letters[body], f"{body[:80]!r} was dead-lettered for {letters[body]!r}"
    assert sqlite_store.get_job(job["id"])["state"] == "running", "no forged event changed the job"
    assert waiting(broker, topology.events) == 0


def test_fifty_events_that_always_fail_do_not_delay_a_healthy_jobs_heartbeats(sqlite_store, amqp_settings,
                                                                              recorder_for, send, broker):
    settings = dataclasses.replace(amqp_settings, lease_s=4)
    healthy = rules.claim_job(sqlite_store, settings, new_job(sqlite_store)["id"], 1, "unit-1")
    victim = rules.claim_job(sqlite_store, settings, new_job(sqlite_store)["id"], 1, "unit-2")
    template = json.loads(JobEvent(job_id=victim["id"], attempt=1, unit="unit-2", event=JobEvent.FINISHED,
                                   state="succeeded").encode())
    for number in range(50):
        send(resigned({**template, "state": "done", "exit_code": number}, "unit-2"))
    recorder = Recorder(sqlite_store, settings)
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    try:
        lapsed = 0
        for _ in range(16):  # heartbeats every lease / 4 for four leases, and the leases checked as the backend does
            for job, unit in ((healthy, "unit-1"), (victim, "unit-2")):
                send(signed(JobEvent(job_id=job["id"], attempt=1, unit=unit, event=JobEvent.HEARTBEAT,
                                     details={"paused": False, "active_s": 1.0})))
            time.sleep(settings.lease_s / 4)
            lapsed += rules.expire_leases(sqlite_store, settings)
        assert lapsed == 0 and sqlite_store.get_job(healthy["id"])["state"] == "running", "a lease lapsed"
        send(signed(JobEvent(job_id=healthy["id"], attempt=1, unit="unit-1", event=JobEvent.FINISHED,
                             state="succeeded", exit_code=0)))
        eventually(lambda: sqlite_store.get_job(healthy["id"])["state"] == "succeeded", "the healthy job ends")
        topology = Topology(settings.queue_prefix)
        eventually(lambda: waiting(broker, topology.dead) == 50, "the fifty are dead-lettered")
        assert sqlite_store.get_job(victim["id"])["state"] == "running"
    finally:
        recorder.stop()
        thread.join(10)
