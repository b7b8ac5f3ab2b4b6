"""The consumer: takes job messages from RabbitMQ, one at a time (as many as NIAS_SLURM_MAX_JOBS for
a Slurm unit), and has its processing unit run them.

Threading follows pika 1.4.x's `basic_consumer_threaded.py`: the AMQP connection lives in the
main thread, which keeps answering heartbeats; the job is handled in a worker thread, whose
acks go back through `add_callback_threadsafe`. While a job runs the consumer cancels its
subscription, so no second message waits unseen behind a busy unit; and it subscribes again only
once its unit is healthy and idle, so a dead unit never takes (and spends) other jobs' attempts.
A unit serving several pools takes from each pool's queue on one channel, whose prefetch of one
is shared by them all (`global_qos`): it never holds two messages at once.

Every delivery is settled exactly once (`consumer/delivery.py`): the worker thread decides, the
connection's thread carries it out, and whatever the handler raises before it has decided, the
message is handed back counted. The pika callbacks never sleep: retries wait in the worker thread.
"""
from __future__ import annotations

import functools
import logging
import signal
import threading
import time

import pika.exceptions
import requests

from nias.amqp import EventSink, Topology, connect
from nias.dead_letters import reason_for
from nias.errors import BadMessage, BrokerUnavailable
from nias.logs import configure_logging
from nias.messages import ControlMessage, JobMessage, UnitDrain, decode_control
from nias.settings import Settings, load_settings, require

from consumer.delivery import Delivery, Outcome, settle
from consumer.worker import (Backend, Unit, Verdict, claim_with_retry, follow_run, unit_is_ready,
                             wait_for_ready_unit)

logger = logging.getLogger(__name__)

READY_FRESH_S = 1.0  # a unit that answered ready this recently is taken at its word


class Consumer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.topology = Topology.of_unit(settings)
        self.stop = threading.Event()
        self.backend = Backend(settings)
        self.unit = Unit(settings)
        self.events = EventSink(settings)
        self.capacity = settings.unit_capacity  # runs at once: 1, or NIAS_SLURM_MAX_JOBS for a Slurm unit
        self._in_flight = 0  # messages taken whose runs are not over
        self._count_lock = threading.Lock()
        self._connection = None
        self._channel = None
        self._publish_channel = None  # publisher confirms on: dead letters and handed-back copies
        self._tags: list[str] = []
        self.draining = threading.Event()  # an admin's drain: finish the current job, take no more
        self._ready_seen = 0.0  # when the unit last answered healthy and idle with nothing taken since

    # -- main thread -------------------------------------------------------------------
    def run(self) -> None:
        self._note_ready(wait_for_ready_unit(self.unit, self.stop))
        while not self.stop.is_set() or self._in_flight:
            try:
                self._connection = connect(self.settings, attempts=None, stop=self.stop)
            except BrokerUnavailable:
                break
            try:
                self._serve(self._connection)
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.warning("Consumer %s lost RabbitMQ (%r); reconnecting", self.settings.unit_name, exc)
                self._drop_connection()
            except Exception:  # noqa: BLE001 - a failing callback must not end the consumer
                logger.exception("Consumer %s failed while consuming; reconnecting", self.settings.unit_name)
                self._drop_connection()
        self.events.close()
        logger.info("Consumer %s stopped", self.settings.unit_name)

    def _drop_connection(self) -> None:
        """Close what is left of a failed connection: RabbitMQ requeues what it still held."""
        try:
            if self._connection.is_open:
                self._connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass
        self._channel = self._publish_channel = None
        self._tags = []
        self.stop.wait(0.5)

    def _serve(self, connection) -> None:
        channel = connection.channel()
        self.topology.declare(channel)
        # As many messages as the unit runs at once (one, for a local unit), whichever their pool.
        channel.basic_qos(prefetch_count=self.capacity, global_qos=True)
        self._publish_channel = connection.channel()
        self._publish_channel.confirm_delivery()
        control = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(control, self.topology.control_exchange)
        channel.basic_consume(control, self._on_control, auto_ack=True)
        self._channel = channel
        logger.info("Consumer %s waiting for jobs on %s", self.settings.unit_name, ", ".join(self.topology.job_queues))
        while not self.stop.is_set() or self._in_flight:
            taking = not self.stop.is_set() and not self.draining.is_set()
            if not self._tags and self._in_flight < self.capacity and taking:
                self._tags = [channel.basic_consume(queue, self._on_message) for queue in self.topology.job_queues]
            elif self._tags and not taking:
                self._unsubscribe(channel)  # drained: the queues' next messages go to the other units
            connection.process_data_events(time_limit=1)
        connection.process_data_events(time_limit=0)  # carry out a settlement decided just now
        self._unsubscribe(channel)
        connection.close()

    def _unsubscribe(self, channel) -> None:
        for tag in self._tags:
            channel.basic_cancel(tag)
        self._tags = []

    def _on_message(self, channel, method, properties, body: bytes) -> None:
        delivery = Delivery(channel, method.delivery_tag, properties, body, queue=method.routing_key)
        try:
            message = JobMessage.decode(body)
        except Exception as exc:  # noqa: BLE001 - a body that does not decode never will
            delivery.settled = True
            self._settle(delivery, Outcome.DEAD, reason_for(exc))
            return
        # Take no other message while the unit is full, until a run is over.
        with self._count_lock:
            self._in_flight += 1
            full = self._in_flight >= self.capacity
        if full:
            self._unsubscribe(channel)
        try:
            threading.Thread(target=self._handle, args=(delivery, message),
                             name=f"job-{message.job_id}", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: the message must not wait in our hands
            self._release()
            delivery.settled = True
            self._settle(delivery, Outcome.RETRY, reason_for(exc))

    def _on_control(self, _channel, _method, _properties, body: bytes) -> None:
        try:
            message = decode_control(body)
        except BadMessage as exc:
            logger.error("Ignoring a control message that does not decode: %s", exc.message)
            return
        if isinstance(message, UnitDrain):
            self._apply_drain(message)
            return
        threading.Thread(target=self._relay_control, args=(message,), daemon=True).start()

    def _apply_drain(self, message: UnitDrain) -> None:
        """Runs in the connection's thread: the main loop cancels or restarts the consumers."""
        if message.unit != self.settings.unit_name or message.drain == self.draining.is_set():
            return
        if message.drain:
            self.draining.set()
            logger.info("Consumer %s draining: the current job finishes, no new one is taken", message.unit)
        else:
            self.draining.clear()
            logger.info("Consumer %s takes jobs again", message.unit)

    def _relay_control(self, message: ControlMessage) -> None:
        try:
            if self.unit.control(message):
                logger.info("Job %s: %s relayed to %s", message.job_id, message.action, self.settings.unit_name)
        except (requests.RequestException, ValueError) as exc:
            logger.warning("Job %s: %s could not reach the unit (%s)", message.job_id, message.action, exc)

    def _settle(self, delivery: Delivery, outcome: Outcome, reason: str = "") -> None:
        if delivery.channel.is_open and (self._publish_channel is None or not self._publish_channel.is_open):
            self._publish_channel = self._connection.channel()
            self._publish_channel.confirm_delivery()
        settle(delivery, outcome, reason, self._publish_channel, self.topology)

    def _release(self) -> None:
        with self._count_lock:
            self._in_flight -= 1

    # -- worker thread -----------------------------------------------------------------
    def _schedule(self, callback) -> None:
        try:
            self._connection.add_callback_threadsafe(callback)
        except (pika.exceptions.AMQPError, AttributeError, OSError):
            logger.info("Connection gone before a callback could run; the broker will redeliver")

    def _decide(self, delivery: Delivery, outcome: Outcome, reason: str = "") -> None:
        """Have the connection's thread settle `delivery`; it is settled once, by the first decision."""
        if delivery.settled:
            return
        delivery.settled = True
        self._schedule(functools.partial(self._settle, delivery, outcome, reason))

    def _handle(self, delivery: Delivery, message: JobMessage) -> None:
        failure = "its handler ended without settling it"
        try:
            self._take(delivery, message)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the message still gets its outcome
            logger.exception("Job %s: handling its message failed", message.job_id)
            failure = reason_for(exc)
        finally:
            try:
                self._decide(delivery, Outcome.RETRY, failure)  # a no-op once it was settled
                self._note_ready(wait_for_ready_unit(self.unit, self.stop))
            finally:
                self._release()
                self._schedule(lambda: None)  # wake the main loop so it subscribes again at once

    def _note_ready(self, ready: bool) -> None:
        if ready and self.capacity == 1:
            self._ready_seen = time.monotonic()

    def _unit_is_ready(self) -> bool:
        """Asks the unit, unless it answered ready just now and nothing was taken since: a
        one-job unit is asked once between jobs, not twice."""
        seen, self._ready_seen = self._ready_seen, 0.0
        return time.monotonic() - seen < READY_FRESH_S or unit_is_ready(self.unit)

    def _take(self, delivery: Delivery, message: JobMessage) -> None:
        unit_name = self.settings.unit_name
        if not self._unit_is_ready():
            logger.warning("Job %s: processing unit %s not ready; handing the message back",
                           message.job_id, unit_name)
            self._decide(delivery, Outcome.REQUEUE)
            return
        claim = claim_with_retry(self.backend, message, unit_name, self.stop, delivery.received_at)
        if claim is None:  # stopping while the backend was away: nothing failed
            self._decide(delivery, Outcome.REQUEUE)
            return
        if claim.verdict in (Verdict.DEAD, Verdict.AGAIN):
            logger.error("Job %s: the claim failed: %s", message.job_id, claim.reason)
            self._decide(delivery, Outcome.DEAD if claim.verdict is Verdict.DEAD else Outcome.RETRY, claim.reason)
            return
        self._decide(delivery, Outcome.ACK)
        if claim.verdict is Verdict.DROP:
            logger.info("Job %s: message dropped (%s)", message.job_id, claim.reason)
            return
        logger.info("Job %s: attempt %s starts on %s", message.job_id, claim.attempt, unit_name)
        lost = follow_run(self.unit, message, claim.attempt, unit_name, self.stop, self.settings.lease_s)
        if lost is not None:
            self.events.deliver(lost)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, f"consumer-{settings.unit_name}")
    require(settings, "internal_token")
    consumer = Consumer(settings)

    def request_stop(signum, _frame) -> None:
        logger.info("Consumer %s: signal %s, stopping", settings.unit_name, signum)
        consumer.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    consumer.run()


if __name__ == "__main__":
    main()
