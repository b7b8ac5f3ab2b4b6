"""The shape of a job's log (`log.txt`), written by the unit and read by the job page and the CLI.

Each line is `<UTC time> [out] text`, `[err]` for stderr or `[nias]` for NIAS's own lines (the
environment's set-up, limits, how the run ended). A line that ends in `\\r` is "live": the state of
a progress bar that the next line of the same stream replaces (the final state comes last).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import Enum


class LogStream(str, Enum):
    OUT = "out"
    ERR = "err"
    NIAS = "nias"


LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) \[(out|err|nias)\] ?(.*?)(\r?)$", re.S)


def utc_stamp(moment: float | None = None) -> str:
    """`2026-12-03T06:14:12.123Z`"""
    moment = time.time() if moment is None else moment
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def format_line(stream: LogStream, text: str, *, live: bool = False, moment: float | None = None) -> str:
    text = text.replace("\n", " ").replace("\r", "")
    return f"{utc_stamp(moment)} [{stream.value}] {text}{chr(13) if live else ''}\n"


@dataclass(frozen=True)
class LogLine:
    at: str | None  # None for a line not in the format (a log written by an older NIAS)
    stream: LogStream
    text: str
    live: bool = False


def plain_text(line: LogLine, *, times: bool = False) -> str | None:
    """A line as a terminal shows it: the job's own text, NIAS's lines marked `[nias]`, a bar's
    passing state left out (None); with `times`, its UTC time first."""
    if line.live:
        return None
    text = f"[nias] {line.text}" if line.stream is LogStream.NIAS and line.at is not None else line.text
    return f"{line.at} {text}" if times and line.at else text


def parse_line(line: str) -> LogLine:
    """One line of a log, without its newline."""
    match = LINE.match(line)
    if match is None:
        return LogLine(None, LogStream.NIAS if line.startswith("[nias] ") else LogStream.OUT, line)
    at, stream, text, live = match.groups()
    return LogLine(at, LogStream(stream), text, bool(live))
