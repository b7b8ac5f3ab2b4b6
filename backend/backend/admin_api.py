"""What an admin needs to see: the dead-lettered messages that no consumer could use."""
from __future__ import annotations

import logging

import pika.exceptions
from flask import Blueprint, current_app, jsonify, request

from nias.amqp import Topology, connect
from nias.dead_letters import reason_of
from nias.errors import BrokerUnavailable

from backend import api_models as api
from backend.openapi import describe
from backend.auth import require_admin
from backend.jobs_api import iso_time
from backend.uploads import parse_int_field

logger = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/api/admin")

BODY_PREVIEW = 1000


def _describe(properties, body: bytes) -> dict:
    reason, queue, when = reason_of(properties)
    return {
        "body": body[:BODY_PREVIEW].decode(errors="replace"),
        "size": len(body),
        "message_id": properties.message_id,
        "reason": reason,  # why NIAS could not use it, or RabbitMQ's word for a message it dead-lettered
        "queue": queue,
        "dead_lettered_at": iso_time(when) if when is not None else None,
    }


@bp.get("/dead-letters")
@describe("Peek at the dead-lettered messages (admins)", {200: api.DeadLetters, **api.REFUSED, **api.UNAVAILABLE},
          query=api.DeadLetterQuery, tag="admin")
def list_dead_letters():
    """Peek at `<prefix>.dead` without removing anything (messages are read unacked, then released)."""
    require_admin()
    settings = current_app.extensions["nias"].settings
    limit = parse_int_field(request.args.get("limit"), "limit", 1, 500) or 100
    queue = Topology(settings.queue_prefix).dead
    connection = connect(settings, attempts=2)
    try:
        channel = connection.channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        messages = []
        while len(messages) < limit:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            messages.append(_describe(properties, body))
        channel.close()  # unacked messages go back to the queue, in order
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"The dead-letter queue could not be read: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()
    return jsonify({"queue": queue, "count": count, "messages": messages})
