"""Applying job events from RabbitMQ to the job store.

Events wait in a durable queue while the backend is down and are applied when it is back.
An event is acked only after the store has it. Every event must be signed by the unit it names
(a key derived from the internal token) and come from the unit that holds the attempt.

What can never succeed (an event that does not decode, names no known job, is not signed by its
unit, comes from a unit that does not hold the attempt, or asks for a transition the table forbids)
is dead-lettered at once with its reason. What might succeed later is tried again a bounded number
of times (`MAX_TRIES`, a short backoff through `connection.call_later`), then dead-lettered with
the last error; while the store itself does not answer, events wait uncounted, as they would for a
stopped backend. The pika callback never sleeps: a held event keeps one prefetch slot only.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict

import pika.exceptions

from nias.amqp import Topology, connect
from nias.dead_letters import preview, publish_dead_letter, reason_for
from nias.errors import BadMessage, BrokerUnavailable, ForeignEvent, InvalidTransition, JobNotFound
from nias.messages import UnitDrain, UnitStatus, decode_event, unit_key
from nias.settings import Settings

from backend import jobs as job_rules
from backend.metrics import EVENTS_APPLIED, EVENTS_DEAD_LETTERED
from backend.store import Store

logger = logging.getLogger(__name__)

# Errors no retry can cure: the event goes to the dead letters at once.
NEVER_APPLICABLE = (BadMessage, JobNotFound, ForeignEvent, InvalidTransition)
MAX_TRIES = 5  # of one event, while the store answers
RETRY_DELAY_S = 0.2  # doubled on each try
OUTAGE_DELAY_MAX_S = 10.0
REMEMBERED_FAILURES = 10_000
PREFETCH = 50


def record_event(store: Store, settings: Settings, body: bytes, send_control=None) -> None:
    """Decode, verify and apply one event body; NEVER_APPLICABLE errors mean it belongs in the dead letters."""
    event = decode_event(body, key_for=functools.partial(unit_key, settings.internal_token))
    if isinstance(event, UnitStatus):
        store.record_unit(event.unit, event.state.value, event.job_id, event.at,
                          event.sandbox.value if event.sandbox else None, pools=event.pools, host=event.host,
                          cpus=event.cpus, memory_mb=event.memory_mb, gpus=event.gpus, python=event.python,
                          executor=event.executor, pause_refusal=event.pause_refusal)
        unit = store.get_unit(event.unit) if send_control is not None else None
        if unit is not None and unit.get("draining"):  # a drain message may have been missed: say it again
            send_control(UnitDrain(unit=event.unit, drain=True))
    else:
        job_rules.apply_event(store, settings, event, send_control)


class Recorder:
    def __init__(self, store: Store, settings: Settings, send_control=None):
        self._store = store
        self._settings = settings
        self._send_control = send_control
        self._topology = Topology(settings.queue_prefix)
        self._stop = threading.Event()
        self._connection = None
        self._dead_channel = None
        self._failures: OrderedDict[str, int] = OrderedDict()  # body digest -> failed tries
        self._outage_delay = RETRY_DELAY_S
        self.listening_since: float | None = None  # None while heartbeats cannot reach us

    def hears_heartbeats_for(self) -> float:
        """How long the recorder has been listening without a break (0 while it is not)."""
        since = self.listening_since
        return time.monotonic() - since if since is not None else 0.0

    def start(self) -> None:
        threading.Thread(target=self.run, name="recorder", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    # -- the pika callback and what it schedules (all on the recorder's thread) --------------------
    def _on_event(self, channel, method, properties, body: bytes) -> None:
        try:
            record_event(self._store, self._settings, body, self._send_control)
        except NEVER_APPLICABLE as exc:
            self._dead_letter(channel, method.delivery_tag, properties, body, reason_for(exc))
            return
        except Exception as exc:  # noqa: BLE001 - anything else might succeed on a later try
            self._try_again_later(channel, method.delivery_tag, properties, body, exc)
            return
        EVENTS_APPLIED.inc()
        if self._failures:
            self._failures.pop(hashlib.sha256(body).hexdigest(), None)
        self._outage_delay = RETRY_DELAY_S
        channel.basic_ack(method.delivery_tag)

    def _dead_letter(self, channel, tag: int, properties, body: bytes, reason: str) -> None:
        logger.error("Dead-lettering event %s: %s", preview(body), reason)
        publish_dead_letter(self._dead_channel, self._topology, body, properties, reason, self._topology.events)
        EVENTS_DEAD_LETTERED.inc()
        channel.basic_ack(tag)

    def _try_again_later(self, channel, tag: int, properties, body: bytes, exc: Exception) -> None:
        if not self._store.ping():
            # The store is down: every event would fail. They wait, uncounted, as for a stopped backend.
            delay, self._outage_delay = self._outage_delay, min(self._outage_delay * 2, OUTAGE_DELAY_MAX_S)
            logger.warning("Job store unavailable (%s); events wait %.1f s", reason_for(exc)[:200], delay)
            self._connection.call_later(delay, functools.partial(self._requeue, channel, tag))
            return
        digest = hashlib.sha256(body).hexdigest()
        tries = self._failures.pop(digest, 0) + 1
        if tries >= MAX_TRIES:
            self._dead_letter(channel, tag, properties, body,
                              f"not applied after {tries} tries; last error {reason_for(exc)}")
            return
        self._failures[digest] = tries
        while len(self._failures) > REMEMBERED_FAILURES:
            self._failures.popitem(last=False)
        logger.warning("Event %s not applied (try %s of %s): %s", preview(body), tries, MAX_TRIES, reason_for(exc))
        self._connection.call_later(RETRY_DELAY_S * 2 ** (tries - 1), functools.partial(self._requeue, channel, tag))

    @staticmethod
    def _close_quietly(connection) -> None:
        try:
            if connection.is_open:
                connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass

    def _requeue(self, channel, tag: int) -> None:
        if channel.is_open:  # else the broker has requeued it already
            channel.basic_nack(tag, requeue=True)

    # -- the connection ----------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.is_set():
            try:
                connection = connect(self._settings, attempts=None, stop=self._stop)
            except BrokerUnavailable:
                return
            try:
                self._connection = connection
                channel = connection.channel()
                self._topology.declare(channel)
                self._dead_channel = connection.channel()
                self._dead_channel.confirm_delivery()
                channel.basic_qos(prefetch_count=PREFETCH)
                channel.basic_consume(self._topology.events, self._on_event)
                # Heartbeats could not reach us until now: no running job's lease may lapse for it.
                self._store.extend_leases(time.time() + self._settings.lease_s)
                self.listening_since = time.monotonic()
                logger.info("Recorder consuming %s", self._topology.events)
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=1)
                connection.close()
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.warning("Recorder lost RabbitMQ (%r); reconnecting", exc)
                self._stop.wait(0.5)
            except Exception:  # the store failed at start: try again rather than stop recording
                logger.exception("Recorder could not start consuming; trying again")
                self._close_quietly(connection)
                self._stop.wait(1.0)
            finally:
                self.listening_since = None
