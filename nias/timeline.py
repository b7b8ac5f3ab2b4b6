"""The moments one job passes on its way from upload to a final state.

Each service marks the hops it sees with its own clock (seconds since the epoch): the backend
when the upload arrives, is stored and is published, when the attempt is claimed, when the result
is kept and when the outcome is recorded; the consumer when the broker delivers the message; the
unit at each step of its run. The backend keeps them with the job (`GET /api/jobs/<id>/timings`).
Hops marked on another host carry that host's clock: keep the hosts' clocks synchronised (NTP)
for the hand-overs between them to mean something; the steps within one service always do.
"""
from __future__ import annotations

from enum import Enum


class Hop(str, Enum):
    RECEIVED = "received"  # backend: the upload's request began
    STORED = "stored"  # backend: the upload is on disk and the job's row written
    PUBLISHED = "published"  # backend: the producer answered that the broker has the message
    DELIVERED = "delivered"  # consumer: the broker delivered the message
    CLAIMED = "claimed"  # backend: the attempt was granted to the consumer's unit
    ACCEPTED = "accepted"  # unit: the run request arrived
    FETCHED = "fetched"  # unit: the upload is fetched and its checksum checked
    UNPACKED = "unpacked"  # unit: the project is unpacked, params.json written and its data sets in place
    ENV_READY = "env_ready"  # unit: the environment is found (or built)
    STARTED = "started"  # unit: code.py's process is started in its box
    EXITED = "exited"  # unit: code.py ended and its output is read
    PACKED = "packed"  # unit: output/ is zipped as the result
    RESULT_STORED = "result_stored"  # backend: the result is kept
    RECORDED = "recorded"  # backend: the outcome is recorded; the job is final

    def __str__(self) -> str:
        return self.value


ORDER = list(Hop)
SUBMISSION = (Hop.RECEIVED, Hop.STORED, Hop.PUBLISHED)  # marked once per job; the rest once per attempt
UNIT_HOPS = frozenset((Hop.ACCEPTED, Hop.FETCHED, Hop.UNPACKED, Hop.ENV_READY, Hop.STARTED, Hop.EXITED, Hop.PACKED))


def clean_marks(marks: object, allowed: frozenset[Hop] = frozenset(Hop)) -> dict[str, float]:
    """The well-formed marks of `marks` (hop name: seconds since the epoch) among `allowed`."""
    if not isinstance(marks, dict):
        return {}
    names = {hop.value for hop in allowed}
    return {name: round(float(at), 6) for name, at in marks.items()
            if name in names and isinstance(at, (int, float)) and not isinstance(at, bool) and at > 0}


def for_new_attempt(timeline: dict | None) -> dict[str, float]:
    """What a job keeps of its timeline when an attempt begins: the submission's marks."""
    return {hop.value: at for hop in SUBMISSION if (at := (timeline or {}).get(hop.value)) is not None}


def breakdown(timeline: dict | None) -> list[dict]:
    """The marked hops in their order, each with the milliseconds since the hop before it."""
    rows, previous = [], None
    for hop in ORDER:
        at = (timeline or {}).get(hop.value)
        if at is None:
            continue
        rows.append({"hop": hop.value, "at": at,
                     "ms": None if previous is None else round((at - previous) * 1000, 2)})
        previous = at
    return rows
