"""Handing queued jobs to the producer, with the job store as the outbox.

A job is `queued` with `published < dispatch` until the producer confirms its message.
The upload path tries at once; this thread retries whatever is still unpublished, so a
job accepted while the producer or RabbitMQ is down is published when they return.
Duplicates are harmless: a consumer's claim names the dispatch it carries.
"""
from __future__ import annotations

import contextlib
import logging
import threading

import pika.exceptions
import requests

from nias.amqp import Topology, connect
from nias.errors import BrokerUnavailable, ServiceUnavailable
from nias.messages import ControlMessage, JobMessage, UnitDrain
from nias.provenance import origin_of
from nias.settings import Settings
from nias.web import internal_headers

from backend import jobs as job_rules
from backend.retention import expire_old_results
from backend.store import Store

logger = logging.getLogger(__name__)

# Short: an upload waits this long at most for the producer before the outbox takes over.
PRODUCER_TIMEOUT_S = 3


def message_for(job: dict) -> JobMessage:
    return JobMessage(
        job_id=job["id"],
        upload=job["upload"],
        sha256=job["upload_sha256"],
        size=job["upload_size"],
        dispatch=job["dispatch"],
        priority=job["queue_priority"],
        pool=job["pool"],
        timeout_s=job["timeout_s"],
        limits=job.get("limits") or {},
        params=job.get("params") or {},
        fresh_env=bool(job.get("fresh_env")),
        pins=job.get("pins") or [],
        origin=origin_of(job),
        datasets=[{key: entry[key] for key in ("name", "sha256", "size", "filename") if key in entry}
                  for entry in job.get("datasets") or []],
    )


class ProducerClient:
    def __init__(self, settings: Settings):
        self._url = settings.producer_url.rstrip("/")
        self._session = requests.Session()
        self._session.headers.update(internal_headers(settings))

    def _post(self, path: str, message: JobMessage | ControlMessage | UnitDrain) -> None:
        try:
            response = self._session.post(f"{self._url}{path}", data=message.encode(),
                                          headers={"Content-Type": "application/json"}, timeout=PRODUCER_TIMEOUT_S)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"The producer is unreachable: {exc.__class__.__name__}") from None
        if response.status_code != 202:
            what = f"job {message.job_id}" if hasattr(message, "job_id") else f"unit {message.unit}'s drain"
            raise ServiceUnavailable(f"The producer refused {what}: {response.text[:200]}")

    def publish(self, message: JobMessage) -> None:
        self._post("/api/publish", message)

    def send_control(self, message: ControlMessage | UnitDrain) -> None:
        self._post("/api/control", message)


class Dispatcher:
    """Publishes unpublished jobs; also expires the leases of units that went silent.

    A lease lapses only while the recorder is connected: during a broker outage no heartbeat
    can arrive, and silence then says nothing about the units.
    """

    def __init__(self, store: Store, settings: Settings, producer: ProducerClient | None = None):
        self.recorder = None  # set by the app: leases lapse only while the recorder can hear heartbeats
        self._store = store
        self._settings = settings
        self._producer = producer or ProducerClient(settings)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def publish_job(self, job: dict) -> bool:
        """Publish one job now; False (and a retry later) when the producer is not there."""
        with self._lock:
            try:
                self._producer.publish(message_for(job))
            except ServiceUnavailable as exc:
                logger.warning("Job %s: not published yet (%s); will retry", job["id"], exc.message)
                return False
            self._store.mark_published(job["id"], job["dispatch"])
        return True

    def publish_pending(self) -> int:
        published = 0
        for job in self._store.jobs_to_publish():
            if not self.publish_job(job):
                break
            published += 1
        return published

    def send_control(self, message: ControlMessage | UnitDrain) -> None:
        """Best effort: a control that is lost is sent again when the unit's next heartbeat disagrees."""
        if isinstance(message, UnitDrain):
            self.send_drain(message.unit, message.drain)
            return
        try:
            self._producer.send_control(message)
        except ServiceUnavailable as exc:
            logger.warning("Job %s: %s not sent now (%s); the next heartbeat retries it",
                           message.job_id, message.action, exc.message)

    def send_drain(self, unit: str, drain: bool) -> bool:
        """Best effort too: a draining unit is told again with each of its presence messages."""
        try:
            self._producer.send_control(UnitDrain(unit=unit, drain=drain))
            return True
        except ServiceUnavailable as exc:
            logger.warning("Unit %s: drain not sent now (%s)", unit, exc.message)
            return False

    def ready_messages(self, pool: str) -> int | None:
        """How many job messages wait ready in the pool's queue; None when RabbitMQ cannot say."""
        try:
            connection = connect(self._settings, attempts=1)
        except BrokerUnavailable:
            return None
        try:
            return connection.channel().queue_declare(Topology.of_backend(self._settings).jobs_queue(pool),
                                                      passive=True).method.message_count
        except (pika.exceptions.AMQPError, OSError):
            return None
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        retry_delay = 0.5
        lease_check = max(self._settings.lease_s / 4, 0.5)
        waited = 0.0
        while not self._stop.is_set():
            self._wake.wait(retry_delay)
            self._wake.clear()
            waited += retry_delay
            try:
                self.publish_pending()
                if waited >= lease_check:
                    waited = 0.0
                    if self.recorder is not None and self.recorder.hears_heartbeats_for() > lease_check:
                        job_rules.expire_leases(self._store, self._settings)
                        job_rules.settle_overdue_results(self._store, self._settings)
                    job_rules.cancel_overlong_pauses(self._store, self._settings, self.send_control)
                    job_rules.redispatch_lost_messages(self._store, self._settings, self.ready_messages)
                    expire_old_results(self._store, self._settings)
            except Exception:  # keep the outbox alive through store hiccups
                logger.exception("Dispatcher pass failed; retrying")
