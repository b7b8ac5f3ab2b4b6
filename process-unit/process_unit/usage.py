"""What a finished job used: its CPU time and peak memory, from the kernel's `wait4` accounting.

`MeasuredPopen` reaps its child with `os.wait4` instead of `os.waitpid`, so the resource usage of
the job's process and of every descendant it waited for (bwrap waits for the job) is kept when the
child is reaped, wherever that happens: `wait()`, `wait(timeout)` or `poll()`.
"""
from __future__ import annotations

import os
import resource
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
