"""The consumer: takes one job message at a time from RabbitMQ and has its processing unit run it.

Threading follows pika 1.4.x's `basic_consumer_threaded.py`: the AMQP connection lives in the
main thread, which keeps answering heartbeats; the job is handled in a worker thread, whose
acks go back through `add_callback_threadsafe`. While a job runs the consumer cancels its
subscription, so no second message waits unseen behind a busy unit; and it subscribes again only
once its unit is healthy and idle, so a dead unit never takes (and spends) other jobs' attempts.
"""
from __future__ import annotations

import functools
import logging
import signal
import threading

import pika.exceptions
import requests

from nias.amqp import EventSink, Topology, connect
from nias.errors import BadMessage, BrokerUnavailable
from nias.logs import configure_logging
from nias.messages import ControlMessage, JobMessage
from nias.settings import Settings, load_settings, require

from consumer.worker import (Backend, Unit, Verdict, claim_with_retry, follow_run, unit_is_ready,
                             wait_for_ready_unit)

logger = logging.getLogger(__name__)


class Consumer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.topology = Topology(settings.queue_prefix)
        self.stop = threading.Event()
        self.backend = Backend(settings)
        self.unit = Unit(settings)
        self.events = EventSink(settings)
        self._busy = threading.Event()
        self._connection = None
        self._channel = None
        self._tag: str | None = None

    # -- main thread -------------------------------------------------------------------
    def run(self) -> None:
        wait_for_ready_unit(self.unit, self.stop)
        while not self.stop.is_set() or self._busy.is_set():
            try:
                self._connection = connect(self.settings, attempts=None, stop=self.stop)
            except BrokerUnavailable:
                break
            try:
                self._serve(self._connection)
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.warning("Consumer %s lost RabbitMQ (%r); reconnecting", self.settings.unit_name, exc)
                self._channel = self._tag = None
                self.stop.wait(0.5)
        self.events.close()
        logger.info("Consumer %s stopped", self.settings.unit_name)

    def _serve(self, connection) -> None:
        channel = connection.channel()
        self.topology.declare(channel)
        channel.basic_qos(prefetch_count=1)
        control = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(control, self.topology.control_exchange)
        channel.basic_consume(control, self._on_control, auto_ack=True)
        self._channel = channel
        logger.info("Consumer %s waiting for jobs on %s", self.settings.unit_name, self.topology.jobs)
        while not self.stop.is_set() or self._busy.is_set():
            if self._tag is None and not self._busy.is_set() and not self.stop.is_set():
                self._tag = channel.basic_consume(self.topology.jobs, self._on_message)
            connection.process_data_events(time_limit=1)
        if self._tag is not None:
            channel.basic_cancel(self._tag)
        connection.close()

    def _on_message(self, channel, method, properties, body: bytes) -> None:
        try:
            message = JobMessage.decode(body)
        except BadMessage as exc:
            logger.error("Dead-lettering an undecodable message (%s): %r", exc.message, body[:200])
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        # Take no other message until this one is settled and its run is over.
        channel.basic_cancel(self._tag)
        self._tag = None
        self._busy.set()
        threading.Thread(target=self._handle, args=(channel, method.delivery_tag, message),
                         name=f"job-{message.job_id}", daemon=True).start()

    def _on_control(self, _channel, _method, _properties, body: bytes) -> None:
        try:
            message = ControlMessage.decode(body)
        except BadMessage as exc:
            logger.error("Ignoring a control message that does not decode: %s", exc.message)
            return
        threading.Thread(target=self._relay_control, args=(message,), daemon=True).start()

    def _relay_control(self, message: ControlMessage) -> None:
        try:
            if self.unit.control(message):
                logger.info("Job %s: %s relayed to %s", message.job_id, message.action, self.settings.unit_name)
        except requests.RequestException as exc:
            logger.warning("Job %s: %s could not reach the unit (%s)", message.job_id, message.action, exc)

    def _settle(self, channel, delivery_tag: int, verdict: str) -> None:
        if not channel.is_open:
            return  # the broker requeues it; the next claim will tell what to do
        if verdict == "ack":
            channel.basic_ack(delivery_tag)
        elif verdict == "dead":
            channel.basic_reject(delivery_tag, requeue=False)
        else:
            channel.basic_nack(delivery_tag, requeue=True)

    # -- worker thread -----------------------------------------------------------------
    def _schedule(self, callback) -> None:
        try:
            self._connection.add_callback_threadsafe(callback)
        except (pika.exceptions.AMQPError, AttributeError, OSError):
            logger.info("Connection gone before a callback could run; the broker will redeliver")

    def _handle(self, channel, delivery_tag: int, message: JobMessage) -> None:
        unit_name = self.settings.unit_name
        try:
            if not unit_is_ready(self.unit):
                logger.warning("Job %s: processing unit %s not ready; handing the message back",
                               message.job_id, unit_name)
                self._schedule(functools.partial(self._settle, channel, delivery_tag, "requeue"))
                return
            claim = claim_with_retry(self.backend, message, unit_name, self.stop)
            if claim is None:
                self._schedule(functools.partial(self._settle, channel, delivery_tag, "requeue"))
                return
            if claim.verdict is Verdict.DEAD:
                logger.error("Job %s: unknown to the backend; dead-lettering its message", message.job_id)
                self._schedule(functools.partial(self._settle, channel, delivery_tag, "dead"))
                return
            self._schedule(functools.partial(self._settle, channel, delivery_tag, "ack"))
            if claim.verdict is Verdict.DROP:
                logger.info("Job %s: message dropped (%s)", message.job_id, claim.reason)
                return
            logger.info("Job %s: attempt %s starts on %s", message.job_id, claim.attempt, unit_name)
            lost = follow_run(self.unit, message, claim.attempt, unit_name, self.stop, self.settings.lease_s)
            if lost is not None:
                self.events.deliver(lost)
        finally:
            wait_for_ready_unit(self.unit, self.stop)
            self._busy.clear()
            self._schedule(lambda: None)  # wake the main loop so it subscribes again at once


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
