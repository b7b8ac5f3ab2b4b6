"""How a batch job's end, as Slurm reports it, becomes an attempt's outcome.

COMPLETED with exit 0 is `succeeded`; a non-zero exit is `failed` with its code; TIMEOUT,
OUT_OF_MEMORY, CANCELLED and the rest are failures said in words; NODE_FAIL, BOOT_FAIL and
PREEMPTED lose the attempt (the backend queues the job again under NIAS_JOB_RETRIES), as does a job
Slurm has forgotten with no accounting to ask.
"""
from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass

from nias.states import JobState

from process_unit.slurm import LOST_STATES, BatchJob


@dataclass(frozen=True)
class BatchOutcome:
    state: str
    exit_code: int | None = None
    error: str | None = None
    lost: str | None = None  # set: the attempt is lost, not ended


def _with_tail(reason: str, tail: deque | list) -> str:
    lines = "\n".join(tail)
    return f"{reason}.\n{lines}" if lines else f"{reason}."


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)


def read_outcome(job: BatchJob | None, *, batch_id: str, cancelled: bool, timed_out: bool, timeout_s: int,
                 memory_mb: int, tail: deque | list) -> BatchOutcome:
    """The outcome of batch job `batch_id`, whose last known state is `job` (None: Slurm forgot it)."""
    failed = JobState.FAILED.value
    if cancelled:
        return BatchOutcome(JobState.CANCELLED.value, job.exit_code if job else None, "Cancelled on request.")
    if timed_out:
        return BatchOutcome(failed, job.exit_code if job else None,
                            f"The job ran longer than its time limit of {timeout_s} s and was stopped.")
    if job is None:
        return BatchOutcome(failed, lost=f"Slurm no longer knows batch job {batch_id} and the cluster keeps no "
                                         "accounting, so its outcome is unknown.")
    if job.state in LOST_STATES:
        said = f", {job.reason}" if job.reason and job.reason != "None" else ""
        return BatchOutcome(failed, lost=f"The cluster lost batch job {batch_id} ({job.state}{said}).")
    if job.state == "COMPLETED" and not job.exit_code and job.signal is None:
        return BatchOutcome(JobState.SUCCEEDED.value, 0)
    if job.state == "TIMEOUT":
        return BatchOutcome(failed, job.exit_code, _with_tail(
            f"Slurm stopped batch job {batch_id} at its time limit (TIMEOUT; the job's limit is {timeout_s} s)", tail))
    if job.state == "OUT_OF_MEMORY":
        return BatchOutcome(failed, job.exit_code, _with_tail(
            f"code.py used more than its memory limit of {memory_mb} MB and Slurm stopped it (OUT_OF_MEMORY)", tail))
    if job.state == "CANCELLED":
        return BatchOutcome(failed, job.exit_code, f"Batch job {batch_id} was cancelled on the cluster (CANCELLED), "
                                                   "not through NIAS.")
    if job.signal is not None:
        return BatchOutcome(failed, 128 + job.signal,
                            _with_tail(f"code.py was stopped by signal {_signal_name(job.signal)}", tail))
    if job.state in ("COMPLETED", "FAILED"):
        return BatchOutcome(failed, job.exit_code, _with_tail(f"code.py exited with code {job.exit_code}", tail))
    return BatchOutcome(failed, job.exit_code, _with_tail(f"Batch job {batch_id} ended {job.state}", tail))
