"""One attempt as a unit runs it: what it is, where it stands, and how it ended."""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from nias.internal import RunStatus
from nias.messages import JobMessage
from nias.states import JobState
from nias.timeline import Hop

from process_unit.isolation import JobBox
from process_unit.sandbox import Limits


@dataclass
class Run:
    message: JobMessage
    attempt: int
    state: str = JobState.RUNNING.value
    exit_code: int | None = None
    error: str | None = None
    result_size: int | None = None
    result_path: Path | None = None  # the packed result, until it is delivered
    details: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen | None = None
    box: JobBox | None = None
    started: float = field(default_factory=time.monotonic)
    ended_at: float | None = None  # wall-clock time the attempt ended, whenever its outcome is delivered
    paused_since: float | None = None
    paused_total: float = 0.0
    cancelled: bool = False
    progress: float | None = None
    progress_message: str = ""
    progress_sent: float = 0.0
    execution: dict = field(default_factory=lambda: {"executor": "local"})  # where it runs (the job's `execution`)
    project: Path | None = None  # the unpacked project, once there is one
    lost: str | None = None  # why the attempt is lost (the job is queued again) instead of ending with an outcome
    timeline: dict = field(default_factory=lambda: {Hop.ACCEPTED.value: time.time()})  # nias.timeline marks

    @property
    def job_id(self) -> str:
        return self.message.job_id

    def mark(self, hop: Hop) -> None:
        """Note that the attempt has passed `hop` now (sent with its outcome)."""
        self.timeline[hop.value] = time.time()

    def fail(self, error: str) -> None:
        """End as failed with `error`; a cancelled run stays cancelled, with `error` added."""
        if self.state == JobState.CANCELLED.value:
            self.error = f"{self.error or ''} {error}".strip()
        else:
            self.state, self.error = JobState.FAILED.value, error

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def active_seconds(self) -> float:
        """Time since the run began, paused time excluded."""
        now = time.monotonic()
        paused = self.paused_total + (now - self.paused_since if self.paused_since is not None else 0.0)
        return now - self.started - paused

    def live_details(self) -> dict:
        return {"paused": self.paused, "active_s": round(self.active_seconds(), 3), "progress": self.progress,
                "message": self.progress_message, "execution": dict(self.execution)}

    def status(self) -> RunStatus:
        return RunStatus(job_id=self.job_id, attempt=self.attempt, state=self.state, done=self.done.is_set(),
                         paused=self.paused)

    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id, "attempt": self.attempt, "state": self.state, "exit_code": self.exit_code,
            "error": self.error, "result_size": self.result_size, "details": self.details,
            "done": self.done.is_set(),
        }


def exit_signal(code: int, in_bwrap: bool) -> int | None:
    """The signal that ended code.py, if one did: bubblewrap reports a child killed by N as 128 + N."""
    if code < 0:
        return -code
    if in_bwrap and code > 128 and code - 128 in signal.valid_signals():
        return code - 128
    return None


def describe_exit(code: int, tail: deque, limits: Limits, *, out_of_memory: bool = False,
                  in_bwrap: bool = False) -> str:
    """Why code.py ended, in a sentence, and the last lines of its stderr."""
    signum = exit_signal(code, in_bwrap)
    if out_of_memory:
        reason = (f"code.py used more than its memory limit of {limits.memory_mb} MB and was stopped "
                  "(the kernel killed a process of the job)")
    elif signum is None:
        reason = f"code.py exited with code {code}"
    elif signum == signal.SIGXCPU:
        reason = f"code.py used up its CPU time limit of {limits.cpu_s} s and was stopped (SIGXCPU)"
    else:
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        reason = f"code.py was stopped by signal {name}"
        if signum == signal.SIGKILL:
            reason += " (often a sign it ran out of memory)"
    lines = "\n".join(tail)
    return f"{reason}.\n{lines}" if lines else f"{reason}."
