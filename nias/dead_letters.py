"""Dead letters with their reason, and bounded previews of message bodies for the logs.

A consumer that can never use a message republishes it to the dead exchange (`<prefix>.dead`)
with headers saying why, where from and when, then acks it: the reason travels with the message
and admins read it at `GET /api/admin/dead-letters`. No log line ever holds a whole body.
"""
from __future__ import annotations

import time

import pika

from nias.amqp import PERSISTENT, Topology
from nias.errors import NiasError

REASON_HEADER = "x-nias-reason"
QUEUE_HEADER = "x-nias-queue"
AT_HEADER = "x-nias-dead-at-ms"  # pika sends no float headers: milliseconds since the epoch
MAX_REASON = 1000
PREVIEW_BYTES = 200


def preview(body: bytes | str) -> str:
    """The first bytes of a body and its size, for a log line."""
    raw = body.encode(errors="replace") if isinstance(body, str) else body
    more = f"... ({len(raw)} bytes)" if len(raw) > PREVIEW_BYTES else f" ({len(raw)} bytes)"
    return f"{raw[:PREVIEW_BYTES]!r}{more}"


def reason_for(exc: BaseException) -> str:
    """A dead letter's reason for an exception: a NiasError's code and message, else its type and text."""
    return f"{exc.code}: {exc.message}" if isinstance(exc, NiasError) else f"{exc.__class__.__name__}: {exc}"


def dead_letter_properties(properties: pika.BasicProperties | None, reason: str, queue: str) -> pika.BasicProperties:
    headers = dict((properties.headers if properties is not None else None) or {})
    headers.update({REASON_HEADER: reason[:MAX_REASON], QUEUE_HEADER: queue, AT_HEADER: int(time.time() * 1000)})
    return pika.BasicProperties(
        delivery_mode=PERSISTENT,
        content_type=properties.content_type if properties is not None else None,
        message_id=properties.message_id if properties is not None else None,
        headers=headers,
    )


def publish_dead_letter(channel, topology: Topology, body: bytes, properties: pika.BasicProperties | None,
                        reason: str, queue: str) -> None:
    """Put `body` in the dead-letter queue with its reason; the caller acks the original afterwards.

    `channel` should have publisher confirms on, so the ack follows a dead letter RabbitMQ has.
    """
    channel.basic_publish(topology.dead_exchange, "", body, dead_letter_properties(properties, reason, queue),
                          mandatory=True)


def reason_of(properties: pika.BasicProperties) -> tuple[str | None, str | None, float | None]:
    """(reason, queue, when) of a dead letter: ours if we wrote it, else RabbitMQ's `x-death`."""
    headers = properties.headers or {}
    if REASON_HEADER in headers:
        reason = headers[REASON_HEADER]
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        queue = headers.get(QUEUE_HEADER)
        queue = queue.decode(errors="replace") if isinstance(queue, bytes) else queue
        at = headers.get(AT_HEADER)
        return reason, queue, at / 1000 if isinstance(at, int) else None
    first = (headers.get("x-death") or [{}])[0]
    when = first.get("time")
    return first.get("reason"), first.get("queue"), when.timestamp() if hasattr(when, "timestamp") else None
