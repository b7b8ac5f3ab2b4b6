"""One job message in a consumer's hands, and the four ways it can leave them.

Every delivery is settled exactly once, on the connection's thread:
- `ACK`: claimed (the run starts) or stale; the message is done.
- `DEAD`: it can never run (does not decode, unknown job, claim refused): it goes to the dead
  letters with its reason (`nias.dead_letters`), then the original is acked.
- `REQUEUE`: nothing failed (the unit is not ready, the consumer stops): back to the queue, uncounted.
- `RETRY`: the backend failed the claim, or handling it raised: a copy goes back to the end of the
  queue with `x-nias-tries` one higher, then the original is acked. At `MAX_TRIES` it is
  dead-lettered with the last error instead, so no message circles for ever and none blocks the
  queue while it fails.
Copies and dead letters are published with publisher confirms before the original is acked, so a
broken connection in between can only leave a duplicate (which the claim drops as stale), never a
lost message.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import Enum

import pika

from nias.amqp import PERSISTENT, Topology
from nias.dead_letters import preview, publish_dead_letter

logger = logging.getLogger(__name__)

TRIES_HEADER = "x-nias-tries"  # deliveries of this job message that failed so far
MAX_TRIES = 5  # failed deliveries of one job message before it is dead-lettered


class Outcome(str, Enum):
    ACK = "ack"
    DEAD = "dead"
    REQUEUE = "requeue"
    RETRY = "retry"


@dataclass
class Delivery:
    """A message as RabbitMQ delivered it; `settled` is set once its outcome has been decided."""

    channel: object
    tag: int
    properties: pika.BasicProperties | None
    body: bytes
    queue: str = ""  # the job queue it came from (its pool's); copies and dead letters name it
    settled: bool = False
    received_at: float = field(default_factory=time.time)  # the job's `delivered` hop (nias.timeline)

    @property
    def tries(self) -> int:
        """How many earlier deliveries of this message failed (0 for a message never handed back)."""
        value = ((self.properties.headers if self.properties is not None else None) or {}).get(TRIES_HEADER)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def retry_properties(self) -> pika.BasicProperties:
        """The properties of the copy handed back: the same message, one more failed try."""
        original = self.properties or pika.BasicProperties()
        return pika.BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=original.content_type,
            message_id=original.message_id,
            priority=original.priority,
            headers={**(original.headers or {}), TRIES_HEADER: self.tries + 1},
        )


def settle(delivery: Delivery, outcome: Outcome, reason: str, confirmed, topology: Topology) -> None:
    """Carry out `outcome` on the connection's thread; `confirmed` is a channel with publisher confirms.

    A publish RabbitMQ refuses raises (the caller reconnects, which requeues the original)."""
    channel = delivery.channel
    if not channel.is_open:
        return  # RabbitMQ requeued it with its channel; the next claim tells what to do with it
    if outcome is Outcome.RETRY and delivery.tries + 1 >= MAX_TRIES:
        outcome, reason = Outcome.DEAD, f"failed on {delivery.tries + 1} deliveries; last error: {reason}"
    if outcome is Outcome.DEAD:
        logger.error("Dead-lettering job message %s: %s", preview(delivery.body), reason)
        publish_dead_letter(confirmed, topology, delivery.body, delivery.properties, reason,
                            delivery.queue or topology.jobs)
    elif outcome is Outcome.RETRY:
        logger.warning("Handing job message %s back (failed delivery %s of %s): %s", preview(delivery.body),
                       delivery.tries + 1, MAX_TRIES, reason)
        confirmed.basic_publish("", delivery.queue or topology.jobs, delivery.body, delivery.retry_properties(),
                                mandatory=True)
    if outcome is Outcome.REQUEUE:
        channel.basic_nack(delivery.tag, requeue=True)
    else:
        channel.basic_ack(delivery.tag)
