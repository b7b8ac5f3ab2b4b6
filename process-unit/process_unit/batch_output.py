"""Following a batch job's output file as it grows, line by line, like a pipe.

Slurm writes the job's stdout and stderr to one file on the shared filesystem; `read` returns
what it gained, as a pipe's read does, waiting while nothing new has come, and returns `b""` once
`finish()` was called and everything up to the end of the file has been read. So the local
executor's `pump_lines` copies it into the job's log, with progress lines and bars, unchanged.
`offset` is how far it has been read: a restarted unit goes on from there.
"""
from __future__ import annotations

import threading
from pathlib import Path

WAIT_S = 0.25


class OutputFollower:
    def __init__(self, path: Path, offset: int = 0):
        self.path = path
        self.offset = offset
        self._done = threading.Event()
        self._handle = None

    def finish(self) -> None:
        """The batch job has ended: read what is left, then report the end."""
        self._done.set()

    def _open(self) -> bool:
        if self._handle is None:
            try:
                self._handle = open(self.path, "rb")
            except FileNotFoundError:
                return False
            self._handle.seek(self.offset)
        return True

    def read(self, size: int) -> bytes:
        """At most `size` bytes the file gained; waits while nothing new has come; b"" at the end."""
        while True:
            done = self._done.is_set()  # read before reading: what was written before the end is taken
            if not self._open():
                if done:
                    return b""
                self._done.wait(WAIT_S)
                continue
            piece = self._handle.read(size)
            if piece:
                self.offset += len(piece)
                return piece
            if done:
                return b""
            self._done.wait(WAIT_S)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
