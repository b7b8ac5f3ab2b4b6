"""Job states and the one table of allowed transitions.

The backend applies transitions (see `backend.jobs.apply_transition`); everything
else asks it. `running -> queued` is the retry path taken when an attempt is lost.
"""
from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.PAUSED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    # A job can end while paused: a pause request that races the job's exit, or a unit lost while paused.
    JobState.PAUSED: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


# What a user may ask for (PUT /api/jobs/<id>/state), a subset of TRANSITIONS: pause a running
# job, resume a paused one, cancel any unfinished one. Starting and ending belong to the system.
REQUESTABLE: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.PAUSED, JobState.CANCELLED}),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def allowed_targets(state: JobState, table: dict[JobState, frozenset[JobState]] = TRANSITIONS) -> list[str]:
    return sorted(target.value for target in table[JobState(state)])


def can_transition(current: JobState | str, target: JobState | str) -> bool:
    return JobState(target) in TRANSITIONS[JobState(current)]


def is_final(state: JobState | str) -> bool:
    return JobState(state) in FINAL_STATES
