"""A job's log: its stdout and stderr copied to `log.txt` in bounded pieces, up to a size limit,
with progress lines taken out and the start of each stderr line kept for the job's error."""
from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from pathlib import Path

logger = logging.getLogger(__name__)

TAIL_LINE_CHARS = 300  # of each stderr line in a job's error; the whole line stays in the log
LINE_BYTES = 64 * 1024  # read from a job's pipes at a time
PROGRESS_PREFIX = b"##nias progress "


class JobLog:
    """The job's stdout and stderr, appended to `log.txt` on the shared volume, up to a limit.

    Past `max_bytes` the rest is dropped with one note saying so (the job's pipes keep being
    drained, or it would block). A write that fails (a full volume) drops the rest the same way.
    """

    def __init__(self, path: Path, max_bytes: int):
        self._handle = open(path, "ab", buffering=0)
        self._lock = threading.Lock()
        self._max_bytes = max_bytes
        self.written = 0  # bytes in the log
        self.produced = 0  # bytes the job wrote, kept or not
        self.failure: str | None = None

    def write(self, data: bytes) -> None:
        with self._lock:
            self.produced += len(data)
            if self.failure is not None:
                return
            if self.written + len(data) > self._max_bytes:
                self.failure = f"the log reached its limit of {self._max_bytes // (1024 * 1024)} MB"
                data = (f"\n[nias] The log reached its limit of {self._max_bytes // (1024 * 1024)} MB "
                        "(NIAS_MAX_LOG_MB); the rest of stdout and stderr is dropped.\n").encode()
            try:
                self._handle.write(data)
                self.written += len(data)
            except OSError as exc:
                self.failure = f"writing the log failed: {exc.strerror or exc}"
                logger.error("Log %s: %s; the rest is dropped", self._handle.name, self.failure)

    def note(self, text: str) -> None:
        """A line of NIAS's own; written even past the limit, so the log says how the job ended."""
        line = f"[nias] {text}\n".encode()
        with self._lock:
            if self._handle.closed:
                return
            try:
                self._handle.write(line)
                self.written += len(line)
            except OSError:
                pass

    def close(self) -> None:
        """Close the log; a pipe still held open by a job's leftover process writes nowhere after this."""
        with self._lock:
            self.failure = self.failure or "closed"
            self._handle.close()


def parse_progress(line: bytes) -> tuple[float, str] | None:
    """`##nias progress 0.42 filtering channel 3` -> (0.42, "filtering channel 3"); None if not one."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    fraction, _, message = line[len(PROGRESS_PREFIX):].decode(errors="replace").strip().partition(" ")
    try:
        value = float(fraction)
    except ValueError:
        return None
    if value != value:  # NaN
        return None
    return min(max(value, 0.0), 1.0), message.strip()[:200]


def _tail_line(piece: bytes, whole: bool) -> str:
    text = piece.decode(errors="replace").rstrip()
    return text if whole and len(text) <= TAIL_LINE_CHARS else text[:TAIL_LINE_CHARS] + " [...]"


def pump_lines(stream, log: JobLog, tail: deque | None, on_progress=None) -> None:
    """Copy a job's pipe to its log in pieces of at most LINE_BYTES, whatever its lines' length.

    Only the start of each line reaches the stderr tail (the job's error): a line of any length
    costs the unit LINE_BYTES of memory, and the error a few hundred characters.
    """
    starts_line = True
    for piece in iter(functools.partial(stream.readline, LINE_BYTES), b""):
        first, starts_line = starts_line, piece.endswith(b"\n")
        if on_progress is not None and first and starts_line:
            progress = parse_progress(piece)
            if progress is not None:
                on_progress(*progress)
                continue  # progress lines do not clutter the log
        log.write(piece)
        if tail is not None and first:
            tail.append(_tail_line(piece, whole=starts_line))
    stream.close()
