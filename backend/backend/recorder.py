"""Applying job events from RabbitMQ to the job store.

Events wait in a durable queue while the backend is down and are applied when it is back.
An event is acked only after the store has it; one that cannot be decoded, or that names
no known job, is dead-lettered and the recorder carries on.
"""
from __future__ import annotations

import logging
import threading
import time

import pika.exceptions

from nias.amqp import Topology, connect
from nias.errors import BadMessage, BrokerUnavailable, JobNotFound
from nias.messages import UnitStatus, decode_event
from nias.settings import Settings

from backend import jobs as job_rules
from backend.store import Store

logger = logging.getLogger(__name__)


def record_event(store: Store, settings: Settings, body: bytes, send_control=None) -> None:
    """Decode and apply one event body; BadMessage/JobNotFound mean it belongs in the dead letters."""
    event = decode_event(body)
    if isinstance(event, UnitStatus):
        store.record_unit(event.unit, event.state, event.job_id, event.at)
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
        self.listening_since: float | None = None  # None while heartbeats cannot reach us

    def hears_heartbeats_for(self) -> float:
        """How long the recorder has been listening without a break (0 while it is not)."""
        since = self.listening_since
        return time.monotonic() - since if since is not None else 0.0

    def start(self) -> None:
        threading.Thread(target=self.run, name="recorder", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _on_event(self, channel, method, _properties, body: bytes) -> None:
        try:
            record_event(self._store, self._settings, body, self._send_control)
        except (BadMessage, JobNotFound) as exc:
            logger.error("Dead-lettering event %r: %s", body[:200], exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        except Exception:
            logger.exception("Event could not be applied; it stays queued")
            channel.basic_nack(method.delivery_tag, requeue=True)
            time.sleep(1.0)
            return
        channel.basic_ack(method.delivery_tag)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                connection = connect(self._settings, attempts=None, stop=self._stop)
            except BrokerUnavailable:
                return
            try:
                channel = connection.channel()
                self._topology.declare(channel)
                channel.basic_qos(prefetch_count=50)
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
                time.sleep(0.5)
            finally:
                self.listening_since = None
