"""RabbitMQ helpers shared by every service: connecting, the topology, and a confirmed publisher.

Topology (all durable, all classic queues; see docs/lifecycle.md for why):
- `<prefix>.jobs` (the `default` pool) and `<prefix>.jobs.<pool>` (every other pool): job
  messages, `x-max-priority` so urgent jobs can jump the queue; rejected messages dead-letter
  to `<prefix>.dead`. A unit takes from the queues of the pools it serves.
- `<prefix>.events`: job events from the processing units and consumers to the backend.
- `<prefix>.dead`: poison messages, kept for an admin to inspect.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import pika
import pika.exceptions

from nias.errors import BrokerUnavailable, MessageRefused
from nias.messages import MAX_MESSAGE_BYTES, JobEvent, UnitStatus, unit_key
from nias.settings import DEFAULT_POOL, Settings

logger = logging.getLogger(__name__)

MAX_PRIORITY = 10  # 0-9 for researchers; 10 is "run next"
PERSISTENT = pika.DeliveryMode.Persistent


@dataclass(frozen=True)
class Topology:
    prefix: str
    pools: tuple[str, ...] = (DEFAULT_POOL,)  # whose job queues this service declares

    @classmethod
    def of_backend(cls, settings: Settings) -> "Topology":
        """Every pool the admin declared (NIAS_POOLS): what the backend and the producer publish to."""
        return cls(settings.queue_prefix, settings.pool_names)

    @classmethod
    def of_unit(cls, settings: Settings) -> "Topology":
        """The pools a unit serves (NIAS_UNIT_POOLS): what its consumer takes from."""
        return cls(settings.queue_prefix, settings.unit_pool_names)

    @property
    def jobs(self) -> str:
        """The default pool's job queue."""
        return self.jobs_queue(DEFAULT_POOL)

    def jobs_queue(self, pool: str) -> str:
        return f"{self.prefix}.jobs" if pool == DEFAULT_POOL else f"{self.prefix}.jobs.{pool}"

    @property
    def job_queues(self) -> list[str]:
        return [self.jobs_queue(pool) for pool in self.pools]

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def control_exchange(self) -> str:
        return f"{self.prefix}.control"

    def declare(self, channel) -> None:
        """Declare everything NIAS uses; idempotent, so every service calls it at start."""
        channel.exchange_declare(self.dead_exchange, exchange_type="fanout", durable=True)
        channel.queue_declare(self.dead, durable=True)
        channel.queue_bind(self.dead, self.dead_exchange)
        dead_lettered = {"x-dead-letter-exchange": self.dead_exchange}
        for queue in self.job_queues:
            channel.queue_declare(queue, durable=True, arguments={"x-max-priority": MAX_PRIORITY, **dead_lettered})
        channel.queue_declare(self.events, durable=True, arguments=dead_lettered)
        channel.exchange_declare(self.control_exchange, exchange_type="fanout", durable=True)

    def delete(self, channel) -> None:
        for queue in (*self.job_queues, self.events, self.dead):
            channel.queue_delete(queue)
        channel.exchange_delete(self.dead_exchange)
        channel.exchange_delete(self.control_exchange)


def connection_parameters(settings: Settings) -> pika.URLParameters:
    params = pika.URLParameters(settings.amqp_url)
    params.heartbeat = settings.amqp_heartbeat_s
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    return params


def connect(settings: Settings, *, attempts: int | None = 1, stop: threading.Event | None = None):
    """Open a BlockingConnection, retrying with capped backoff; `attempts=None` retries forever."""
    delay = 0.2
    tried = 0
    while True:
        tried += 1
        try:
            return pika.BlockingConnection(connection_parameters(settings))
        except (pika.exceptions.AMQPConnectionError, OSError) as exc:
            if attempts is not None and tried >= attempts:
                raise BrokerUnavailable(f"RabbitMQ is unreachable at {_redact(settings.amqp_url)}: {exc!r}") from None
            logger.warning("RabbitMQ unreachable (%r); retrying in %.1f s", exc, delay)
            if stop is not None and stop.wait(delay):
                raise BrokerUnavailable("stopped while waiting for RabbitMQ") from None
            if stop is None:
                time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class Publisher:
    """One long-lived connection with publisher confirms, safe to share between threads.

    A publish returns only once RabbitMQ has confirmed the message to disk; on a broken
    connection it reconnects and tries once more before raising BrokerUnavailable.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._topology = Topology.of_backend(settings)
        self._lock = threading.Lock()
        self._connection = None
        self._channel = None
        self._stop = threading.Event()

    def _open(self):
        if self._channel is None or not self._channel.is_open:
            self._close_quietly()
            self._connection = connect(self._settings)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
            self._topology.declare(self._channel)
        return self._channel

    def _close_quietly(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # already broken; nothing to tell
                pass
        self._connection = self._channel = None

    def publish(self, queue: str, body: bytes, *, message_id: str | None = None, priority: int = 0,
                exchange: str = "") -> None:
        """Publish to `queue` (or to a fanout `exchange`, where no listener is no error)."""
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            priority=max(0, min(MAX_PRIORITY, priority)),
        )
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._open().basic_publish(exchange, queue, body, properties, mandatory=not exchange)
                    return
                except BrokerUnavailable:
                    raise
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    raise MessageRefused(f"RabbitMQ refused the message to {queue}: {exc.__class__.__name__}") from None
                except pika.exceptions.ChannelClosedByBroker as exc:
                    self._close_quietly()
                    if exc.reply_code == 406:  # PRECONDITION_FAILED: e.g. over max_message_size
                        raise MessageRefused(f"RabbitMQ refused the message to {queue}: "
                                             f"{exc.reply_text[:200]}") from None
                    if attempt == 2:
                        raise BrokerUnavailable(f"RabbitMQ did not confirm the message: {exc!r}") from None
                    logger.warning("Publish to %s failed (%r); reconnecting", queue, exc)
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._close_quietly()
                    if attempt == 2:
                        raise BrokerUnavailable(f"RabbitMQ did not confirm the message: {exc!r}") from None
                    logger.warning("Publish to %s failed (%r); reconnecting", queue, exc)

    def is_connected(self) -> bool:
        with self._lock:
            try:
                self._open()
                return True
            except BrokerUnavailable:
                return False

    def keep_alive(self) -> None:
        """Let pika answer heartbeats on an idle connection (call every few seconds)."""
        with self._lock:
            if self._connection is not None and self._connection.is_open:
                try:
                    self._connection.process_data_events(0)
                except (pika.exceptions.AMQPError, OSError) as exc:
                    logger.warning("Idle AMQP connection lost (%r); it reopens on the next publish", exc)
                    self._close_quietly()

    def start_keepalive(self) -> None:
        """Answer heartbeats from a background thread, a third of the heartbeat interval apart."""
        interval = max(self._settings.amqp_heartbeat_s / 3, 0.5)

        def beat() -> None:
            while not self._stop.wait(interval):
                self.keep_alive()

        threading.Thread(target=beat, name="amqp-keepalive", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._close_quietly()


class EventSink:
    """Sends job events to the backend's durable events queue, signed with this unit's key."""

    def __init__(self, settings: Settings):
        self._key = unit_key(settings.internal_token, settings.unit_name)
        self._queue = Topology(settings.queue_prefix).events
        self._publisher = Publisher(settings)
        self._stop = threading.Event()

    def _publish(self, event: JobEvent | UnitStatus) -> None:
        body = event.encode(key=self._key)
        if len(body) > MAX_MESSAGE_BYTES:  # the recorder would only dead-letter it
            raise MessageRefused(f"{event} is {len(body)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
        self._publisher.publish(self._queue, body)

    def send(self, event: JobEvent | UnitStatus) -> bool:
        """Publish once; False when it was not sent (enough for heartbeats, which come again)."""
        try:
            self._publish(event)
            return True
        except BrokerUnavailable as exc:
            logger.warning("%s not sent: %s", event, exc.message)
            return False

    def deliver(self, event: JobEvent | UnitStatus) -> bool:
        """Publish, retrying while RabbitMQ is unreachable, until it confirms: an outcome is never dropped.

        Raises MessageRefused for an event refused for itself (no retry can help: the caller sends a
        smaller one); returns False only when the sink is closed meanwhile.
        """
        delay = 0.5
        while True:
            try:
                self._publish(event)
                return True
            except MessageRefused:
                raise
            except BrokerUnavailable as exc:
                logger.warning("%s not sent: %s; retrying in %.1f s", event, exc.message, delay)
            if self._stop.wait(delay):
                logger.error("Stopping with an event unsent: %s", event)
                return False
            delay = min(delay * 2, 10.0)

    def is_connected(self) -> bool:
        return self._publisher.is_connected()

    def start_keepalive(self) -> None:
        self._publisher.start_keepalive()

    def close(self) -> None:
        self._stop.set()
        self._publisher.close()
