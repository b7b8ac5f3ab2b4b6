"""The internal HTTP API between NIAS services, typed like the AMQP messages (nias/messages.py).

A consumer claims a job at the backend; a processing unit fetches the job's upload from the
backend, streams its log there while the job runs, and sends the result zip back before it
reports the outcome. Every request carries the internal token (nias/web.py); those about one
attempt also name the unit (`X-Nias-Unit`), and the backend answers 409 to a unit that does not
hold that attempt (any more). Files travel as raw bodies, with their SHA-256 in `X-Nias-Sha256`.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from nias.errors import BadMessage
from nias.messages import NAME, SHA256, Check, EventKind, JobEvent, _matching, _Message, _number

MAX_INT = 2**53
UNIT_HEADER = "X-Nias-Unit"
SHA256_HEADER = "X-Nias-Sha256"
# The outcome a unit is about to publish, sent with the result it belongs to: if the unit dies
# between the two, the backend ends the attempt with it rather than run the job again.
OUTCOME_HEADER = "X-Nias-Outcome"
OUTCOME_ERROR_CHARS = 500  # the header stays well under a server's field limit (8 KiB)
_OUTCOME_DETAILS = ("log_bytes", "env_seconds", "env_cached", "env_built_at", "run_seconds", "progress", "message",
                    "active_s")
LOG_CHUNK_BYTES = 1024 * 1024  # the most a unit sends of a log in one request
UPLOAD_CONTENT_TYPE = "application/zip"

_ATTEMPT = _number(1, 10**6, integer=True, nullable=False)
_COUNT = _number(0, MAX_INT, integer=True, nullable=False)
_NAME = _matching(NAME, "a name of letters, digits and _.:- (at most 100)")


def claim_path(job_id: str) -> str:
    return f"/internal/jobs/{job_id}/claim"


def upload_path(job_id: str) -> str:
    return f"/internal/jobs/{job_id}/upload"


def dataset_path(job_id: str, sha256: str) -> str:
    return f"/internal/jobs/{job_id}/datasets/{sha256}"


def log_path(job_id: str, attempt: int) -> str:
    return f"/internal/jobs/{job_id}/runs/{attempt}/log"


def result_path(job_id: str, attempt: int) -> str:
    return f"/internal/jobs/{job_id}/runs/{attempt}/result"


PING_PATH = "/internal/ping"


def encode_outcome(event: JobEvent) -> str:
    """The FINISHED event as a header value: its scalar details only, its error clipped."""
    details = {key: event.details[key] for key in _OUTCOME_DETAILS if key in event.details}
    if isinstance(details.get("message"), str):
        details["message"] = details["message"][:200]
    error = event.error[:OUTCOME_ERROR_CHARS] if event.error else event.error
    compact = dataclasses.replace(event, details=details, error=error)
    return base64.urlsafe_b64encode(compact.encode()).decode("ascii")


def decode_outcome(value: str) -> JobEvent:
    """The event of an OUTCOME_HEADER; BadMessage when it is not a FINISHED event."""
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise BadMessage(f"{OUTCOME_HEADER} is not base64.") from None
    event = JobEvent.decode(raw)
    if event.event is not EventKind.FINISHED or event.state is None:
        raise BadMessage(f"{OUTCOME_HEADER} holds no outcome.")
    return event


@dataclass(frozen=True)
class ClaimRequest(_Message):
    """A consumer asks the backend for the next attempt of a job whose message it received."""

    kind: ClassVar[str] = "claim"
    checks: ClassVar[dict[str, Check]] = {"dispatch": _COUNT, "unit": _NAME,
                                          "delivered_at": _number(0, MAX_INT, nullable=True)}
    dispatch: int
    unit: str
    delivered_at: float | None = None  # when the broker delivered the message (nias.timeline)


@dataclass(frozen=True)
class ClaimAnswer(_Message):
    """The backend gives the attempt to the consumer's unit."""

    kind: ClassVar[str] = "claimed"
    checks: ClassVar[dict[str, Check]] = {"job_id": _NAME, "attempt": _ATTEMPT}
    job_id: str
    attempt: int


@dataclass(frozen=True)
class FileReceipt(_Message):
    """The backend has a file of an attempt (its log so far, or its result), of this size."""

    kind: ClassVar[str] = "receipt"
    checks: ClassVar[dict[str, Check]] = {"size": _COUNT,
                                          "sha256": _matching(SHA256, "64 lowercase hex digits", nullable=True)}
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class RunStatus(_Message):
    """A unit's answer about one of its runs (`GET /api/runs/<job id>`)."""

    kind: ClassVar[str] = "run"
    checks: ClassVar[dict[str, Check]] = {"job_id": _NAME, "attempt": _ATTEMPT}
    job_id: str
    attempt: int
    state: str
    done: bool
    paused: bool = False


@dataclass(frozen=True)
class PingAnswer(_Message):
    """The backend knows this unit's token: what a unit checks before it starts."""

    kind: ClassVar[str] = "pong"
    service: str = "backend"
