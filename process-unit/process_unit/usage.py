"""What a finished job used: its CPU time and peak memory, from the kernel's `wait4` accounting.

`MeasuredPopen` reaps its child with `os.wait4` instead of `os.waitpid`, so the resource usage of
the job's process and of every descendant it waited for (bwrap waits for the job) is kept when the
child is reaped, wherever that happens: `wait()`, `wait(timeout)` or `poll()`.
"""
from __future__ import annotations

import os
import resource
import select
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system
    peak_memory_bytes: int  # the largest resident set of the job's processes


def usage_of(rusage: resource.struct_rusage) -> Usage:
    # Linux counts ru_maxrss in KiB.
    return Usage(rusage.ru_utime + rusage.ru_stime, rusage.ru_maxrss * 1024)


class MeasuredPopen(subprocess.Popen):
    """A Popen that keeps the reaped child's resource usage in `usage` (None until it is reaped)."""

    usage: Usage | None = None
    _pidfd: int | None = None  # see ended_within

    def _reap(self, pid: int, flags: int) -> tuple[int, int]:
        reaped, status, rusage = os.wait4(pid, flags)
        if reaped == self.pid:
            self.usage = usage_of(rusage)
        return reaped, status

    def _try_wait(self, wait_flags):
        try:
            return self._reap(self.pid, wait_flags)
        except ChildProcessError:  # already reaped elsewhere: the status and the usage are gone
            return self.pid, 0

    def _internal_poll(self, _deadstate=None, **_ignored):
        return super()._internal_poll(_deadstate, _waitpid=self._reap)

    def ended_within(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the child to end; True (and reaped) if it did.

        Woken by the kernel the moment it exits (a pidfd), where `wait(timeout)` would poll with
        sleeps that grow to 50 ms: a short job's end is seen at once.
        """
        if self.returncode is not None:
            return True
        if self._pidfd is None:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):  # no pidfd here (or already reaped): fall back
                self._pidfd = -1
        if self._pidfd >= 0:
            readable, _, _ = select.select([self._pidfd], [], [], timeout_s)
            if not readable:
                return False
            self.wait()
            return True
        try:
            self.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close_pidfd(self) -> None:
        if self._pidfd is not None and self._pidfd >= 0:
            os.close(self._pidfd)
        self._pidfd = None
