"""What an admin needs to see and do: the dead-lettered messages that no consumer could use (and
discarding them), draining a processing unit, and what the shared volume holds."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
import stat
import time

import pika.exceptions
from flask import Blueprint, current_app, jsonify, request

from nias.amqp import Topology, connect
from nias.dead_letters import reason_of
from nias.errors import BadRequest, BrokerUnavailable, NiasError
from nias.web import read_json

from backend import api_models as api
from backend.openapi import describe
from backend.auth import require_admin
from backend.summary import describe_units
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


@contextmanager
def dead_letter_channel(what: str):
    """A channel and the dead-letter queue's name; closing the channel gives back what was not acked."""
    settings = current_app.extensions["nias"].settings
    connection = connect(settings, attempts=2)
    try:
        channel = connection.channel()
        yield channel, Topology(settings.queue_prefix).dead
        channel.close()  # unacked messages go back to the queue, in order
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"The dead-letter queue could not be {what}: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()


@bp.get("/dead-letters")
@describe("Peek at the dead-lettered messages (admins)", {200: api.DeadLetters, **api.REFUSED, **api.UNAVAILABLE},
          query=api.DeadLetterQuery, tag="admin")
def list_dead_letters():
    """Peek at `<prefix>.dead` without removing anything (messages are read unacked, then released)."""
    require_admin()
    limit = parse_int_field(request.args.get("limit"), "limit", 1, 500) or 100
    with dead_letter_channel("read") as (channel, queue):
        count = channel.queue_declare(queue, passive=True).method.message_count
        messages = []
        while len(messages) < limit:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            messages.append(_describe(properties, body))
    return jsonify({"queue": queue, "count": count, "messages": messages})


@bp.put("/units/<name>/drain")
@describe("Drain a unit or bring it back (admins)", {200: api.DrainedUnit, **api.REFUSED}, body=api.DrainChange,
          tag="admin")
def put_drain(name: str):
    """`{"drain": true}`: the unit finishes its current job and takes no more until `{"drain": false}`."""
    require_admin()
    drain = read_json().get("drain")
    if not isinstance(drain, bool):
        raise BadRequest("Send {\"drain\": true} or {\"drain\": false}.", field="drain")
    nias = current_app.extensions["nias"]
    if not nias.store.set_unit_draining(name, drain):
        raise NiasError(f"No processing unit is called {name!r}.", code="unit_not_found", status=404)
    sent = nias.dispatcher.send_drain(name, drain)
    logger.info("Unit %s: %s by an admin", name, "drained" if drain else "brought back")
    unit = next(unit for unit in describe_units([nias.store.get_unit(name)], time.time()))
    return jsonify({**unit, "sent": sent})


@bp.post("/dead-letters/discard")
@describe("Discard dead letters (admins)", {200: api.Discarded, **api.REFUSED, **api.UNAVAILABLE},
          body=api.DeadLetterDiscard, tag="admin")
def discard_dead_letters():
    """`{"message_ids": [...]}` discards those dead letters, `{"all": true}` every one; answers how many went."""
    require_admin()
    body = read_json()
    wanted = body.get("message_ids")
    discard_all = body.get("all") is True
    if not discard_all and not (isinstance(wanted, list) and all(isinstance(i, str) for i in wanted) and wanted):
        raise BadRequest("Send {\"message_ids\": [...]} or {\"all\": true}.", field="message_ids")
    discarded = 0
    with dead_letter_channel("changed") as (channel, queue):
        if discard_all:
            discarded = channel.queue_purge(queue).method.message_count
        else:
            targets = set(wanted)
            while (got := channel.basic_get(queue, auto_ack=False))[0] is not None:
                if got[1].message_id in targets:
                    channel.basic_ack(got[0].delivery_tag)
                    discarded += 1
    logger.info("Dead letters: %d discarded by an admin", discarded)
    return jsonify({"discarded": discarded})


def _tree_bytes(root) -> int | None:
    """Bytes of the regular files under `root` (None when this host cannot see it)."""
    total = 0
    try:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                try:
                    info = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_nlink <= 1:
                    total += info.st_size
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size // info.st_nlink  # a hard link shares its blocks
    except OSError:
        return None
    return total if os.path.isdir(root) else None


@bp.get("/storage")
@describe("What the data volume holds (admins)", {200: api.Storage, **api.REFUSED}, tag="admin")
def get_storage():
    """What the shared volume holds: uploads, results and logs (from the store), the environments
    (from the folder, where this host sees it), and how long results are kept."""
    require_admin()
    nias = current_app.extensions["nias"]
    used = nias.store.storage_by_kind()
    env_dir = nias.settings.environments_dir
    return jsonify({**used, "environments": _tree_bytes(env_dir), "environments_dir": str(env_dir),
                    "retention_days": nias.settings.retention_days})
