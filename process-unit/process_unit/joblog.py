"""A job's log: its stdout and stderr copied to `log.txt` as timestamped lines (nias/job_log.py),
up to a size limit, with progress lines taken out and the start of each stderr line kept for
the job's error.

A line that a job rewrites with carriage returns (a tqdm bar) is written as "live" lines while it
changes, each replacing the one before on the job page, then once more as the final line.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

from nias.job_log import LogStream, format_line, utc_stamp

logger = logging.getLogger(__name__)

TAIL_LINE_CHARS = 300  # of each stderr line in a job's error; the whole line stays in the log
LINE_BYTES = 64 * 1024  # read from a job's pipes at a time, and the longest piece of a line in the log
LIVE_EVERY_S = 0.5  # a bar's live line is written at most this often
PROGRESS_PREFIX = b"##nias progress "


class JobLog:
    """The job's output, appended to `log.txt` as lines of `<UTC time> [out|err|nias] text`.

    Past `max_bytes` the rest is dropped with one note saying so (the job's pipes keep being
    drained, or it would block). A write that fails (a full volume) drops the rest the same way.
    Paths of the unit's own (its work dir, the environments) are shown relative (`hide_paths`).
    """

    def __init__(self, path: Path, max_bytes: int):
        self._handle = open(path, "ab", buffering=0)
        self._lock = threading.Lock()
        self._max_bytes = max_bytes
        self._paths: list[tuple[str, str]] = []
        self.written = 0  # bytes in the log
        self.produced = 0  # bytes the job wrote, kept or not
        self.failure: str | None = None

    def hide_paths(self, replacements: dict[str, str]) -> None:
        """Show `/unit/work/job-1/project/eeg/code.py` as `eeg/code.py` from now on: longest paths first."""
        self._paths = sorted({**dict(self._paths), **replacements}.items(), key=lambda item: -len(item[0]))

    def relative(self, text: str) -> str:
        for path, shown in self._paths:
            if path in text:
                text = text.replace(f"{path}/", f"{shown}/" if shown else "").replace(path, shown or ".")
        return text

    def write(self, stream: LogStream, text: str, *, live: bool = False, produced: int | None = None) -> None:
        """One line of the job's output (`live`: a bar's state, replaced by the next line)."""
        self.write_many(stream, [(text, live, len(text) if produced is None else produced)])

    def write_many(self, stream: LogStream, lines: list[tuple[str, bool, int]]) -> None:
        """Lines that arrived together, `(text, live, bytes the job wrote for it)`: one time, one write."""
        stamp = utc_stamp()
        tag = f" [{stream.value}] "
        with self._lock:
            self.produced += sum(produced for _text, _live, produced in lines)
            if self.failure is not None:
                return
            room = self._max_bytes - self.written
            pieces = []
            for text, live, _produced in lines:
                clean = self.relative(text).replace("\n", " ").replace("\r", "")
                piece = f"{stamp}{tag}{clean}{chr(13) if live else ''}\n".encode()
                if len(piece) > room:
                    self.failure = f"the log reached its limit of {self._max_bytes // (1024 * 1024)} MB"
                    pieces.append(format_line(LogStream.NIAS, f"The log reached its limit of {self._max_bytes // (1024 * 1024)} "
                                              "MB (NIAS_MAX_LOG_MB); the rest of stdout and stderr is dropped.").encode())
                    break
                room -= len(piece)
                pieces.append(piece)
            data = b"".join(pieces)
            try:
                self._handle.write(data)
                self.written += len(data)
            except OSError as exc:
                self.failure = f"writing the log failed: {exc.strerror or exc}"
                logger.error("Log %s: %s; the rest is dropped", self._handle.name, self.failure)

    def note(self, text: str) -> None:
        """A line of NIAS's own; written even past the limit, so the log says how the job ended."""
        data = "".join(format_line(LogStream.NIAS, self.relative(line)) for line in text.splitlines() or [""])
        with self._lock:
            if self._handle.closed:
                return
            try:
                self._handle.write(data.encode())
                self.written += len(data.encode())
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


def parse_bar(text: str) -> tuple[float, str] | None:
    """`filtering:  45%|####5     | 45/100 [00:02<00:03]` -> (0.45, "filtering"); None if no bar."""
    at = text.find("%|")
    if at < 1:
        return None
    start = at
    while start > 0 and text[start - 1].isdigit() and at - start < 3:
        start -= 1
    if start == at:
        return None
    message = text[:start].strip().rstrip(":").strip()
    return min(int(text[start:at]), 100) / 100, message[:200]


class ProgressFeed:
    """Where a job's progress comes from: its `##nias progress` lines, else its progress bars."""

    def __init__(self, report=None):
        self._report = report
        self._explicit = False

    def line(self, piece: bytes) -> bool:
        """True when `piece` (a whole stdout line) was a progress line, kept out of the log."""
        progress = parse_progress(piece) if self._report is not None else None
        if progress is None:
            return False
        self._explicit = True
        self._report(*progress)
        return True

    def bar(self, text: str) -> None:
        if self._report is None or self._explicit:
            return
        progress = parse_bar(text)
        if progress is not None:
            self._report(*progress)


def _tail_line(text: str, whole: bool) -> str:
    text = text.rstrip()
    return text if whole and len(text) <= TAIL_LINE_CHARS else text[:TAIL_LINE_CHARS] + " [...]"


class _Pump:
    """Splits one pipe's bytes into the log's lines: whole lines, long ones in pieces, bars live."""

    def __init__(self, log: JobLog, stream: LogStream, tail: deque | None, progress: ProgressFeed | None):
        self.log, self.stream, self.tail, self.progress = log, stream, tail, progress
        self.pending = b""
        self.continued = False  # the pending text continues a line already partly written
        self.live_at = 0.0
        self.live_text = ""
        self.ready: list[tuple[str, bool, int]] = []  # lines of this piece of the pipe, written together

    def feed(self, chunk: bytes) -> None:
        try:
            self._split(chunk)
        finally:
            self._flush()

    def _flush(self) -> None:
        if self.ready:
            self.log.write_many(self.stream, self.ready)
            self.ready = []

    def _split(self, chunk: bytes) -> None:
        self.pending += chunk
        while (end := self.pending.find(b"\n")) >= 0:
            line, self.pending = self.pending[:end], self.pending[end + 1:]
            self._whole(line)
        if b"\r" in self.pending:
            self._live()
        while len(self.pending) >= LINE_BYTES:  # a line with no end in sight: written in pieces
            piece, self.pending = self.pending[:LINE_BYTES], self.pending[LINE_BYTES:]
            self._emit(piece, whole=False)

    def end(self) -> None:
        if self.pending:
            self._whole(self.pending)
            self.pending = b""
        self._flush()

    def _whole(self, line: bytes) -> None:
        produced = len(line) + 1
        if self.continued and not line:  # the end of a line already written in pieces
            self.continued = False
            return
        line = line.rstrip(b"\r")
        if b"\r" in line:
            line = line.rsplit(b"\r", 1)[1]  # what a terminal shows last of a rewritten line
            self.live_text = ""
        if not self.continued and self.progress is not None and self.stream is LogStream.OUT \
                and self.progress.line(line + b"\n"):
            return  # progress lines do not clutter the log
        self._emit(line, whole=True, produced=produced)
        self.continued = False

    def _live(self) -> None:
        head, _, current = self.pending.rpartition(b"\r")
        self.pending = b"\r" + current  # only what a terminal would still show is kept
        shown = current or head.rsplit(b"\r", 1)[-1]  # a bar may end each update with \r instead
        text = shown.decode(errors="replace").rstrip()
        if self.progress is not None:
            self.progress.bar(text)
        now = time.monotonic()
        if text.strip() and text != self.live_text and now - self.live_at >= LIVE_EVERY_S:
            self.live_at, self.live_text = now, text
            self.ready.append((text, True, 0))

    def _emit(self, piece: bytes, *, whole: bool, produced: int | None = None) -> None:
        text = piece.decode(errors="replace")
        if self.progress is not None and "%|" in text:
            self.progress.bar(text)
        self.ready.append((text, False, len(piece) if produced is None else produced))
        if self.tail is not None and not self.continued:
            self.tail.append(_tail_line(self.log.relative(text), whole=whole))
        self.continued = not whole


def pump_lines(stream, log: JobLog, tail: deque | None = None, progress: ProgressFeed | None = None,
               kind: LogStream = LogStream.ERR) -> None:
    """Copy a job's pipe to its log as it comes (not only at line ends, so a bar shows while it
    runs), at most LINE_BYTES at a time, whatever its lines' length.

    Only the start of each line reaches the stderr tail (the job's error): a line of any length
    costs the unit LINE_BYTES of memory, and the error a few hundred characters.
    """
    pump = _Pump(log, kind, tail, progress)
    read = stream.read1 if hasattr(stream, "read1") else stream.read
    while chunk := read(LINE_BYTES):
        pump.feed(chunk)
    pump.end()
    stream.close()
