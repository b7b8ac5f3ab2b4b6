"""A job's log lines as the unit writes them: times, streams, progress bars, relative paths."""
from __future__ import annotations

from collections import deque

import pytest

from nias.job_log import LogStream, parse_line
from process_unit import joblog
from process_unit.joblog import JobLog, ProgressFeed, parse_bar, pump_lines


class Pipe:
    """A job's pipe that hands out its bytes in the pieces the job wrote them."""

    def __init__(self, *pieces: bytes):
        self.pieces = list(pieces)

    def read1(self, _size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    def close(self) -> None:
        pass


def pumped(tmp_path, *pieces: bytes, stream=LogStream.ERR, paths=None, report=None):
    tmp_path.mkdir(exist_ok=True)
    log = JobLog(tmp_path / "log.txt", 10**6)
    if paths:
        log.hide_paths(paths)
    tail: deque[str] = deque(maxlen=12)
    pump_lines(Pipe(*pieces), log, tail, ProgressFeed(report), stream)
    log.close()
    raw = (tmp_path / "log.txt").read_bytes().decode()
    return [parse_line(line) for line in raw.split("\n")[:-1]], list(tail)


@pytest.fixture(autouse=True)
def every_bar_state_written(monkeypatch):
    monkeypatch.setattr(joblog, "LIVE_EVERY_S", 0)


def test_each_line_carries_its_utc_time_and_its_stream(tmp_path):
    lines, _ = pumped(tmp_path, b"hello\nwor", b"ld\n", stream=LogStream.OUT)
    assert [(line.stream, line.text) for line in lines] == [(LogStream.OUT, "hello"), (LogStream.OUT, "world")]
    assert all(line.at and line.at.endswith("Z") and not line.live for line in lines)


def test_a_carriage_return_bar_is_written_live_while_it_runs_then_once_as_its_final_line(tmp_path):
    lines, tail = pumped(tmp_path, b"\rfilter:  10%|#    | 1/10", b"\rfilter:  50%|###  | 5/10",
                         b"\rfilter: 100%|#####| 10/10\n")
    assert [(line.text, line.live) for line in lines] == [
        ("filter:  10%|#    | 1/10", True), ("filter:  50%|###  | 5/10", True), ("filter: 100%|#####| 10/10", False)]
    assert tail == ["filter: 100%|#####| 10/10"]


def test_a_bar_feeds_the_progress_unless_the_script_reports_its_own(tmp_path):
    seen = []
    pumped(tmp_path, b"\rfilter:  40%|##   | 4/10", b"\rfilter: 100%|#####| 10/10\n", report=lambda *p: seen.append(p))
    assert seen[0] == (0.4, "filter") and seen[-1] == (1.0, "filter")
    own = []
    lines, _ = pumped(tmp_path / "own", b"##nias progress 0.2 reading\n", b"\r 70%|###  |\n", stream=LogStream.OUT,
                      report=lambda *p: own.append(p))
    assert own == [(0.2, "reading")] and [line.text for line in lines] == [" 70%|###  |"]


def test_paths_of_the_units_work_dir_are_shown_relative_to_the_project(tmp_path):
    project = "/var/tmp/nias/work/unit-1/job1-1/project"
    lines, tail = pumped(tmp_path, f'  File "{project}/eeg/code.py", line 3, in <module>\n'.encode(),
                         f"cwd {project}\n".encode(), paths={project: ""})
    assert [line.text for line in lines] == ['  File "eeg/code.py", line 3, in <module>', "cwd ."]
    assert tail[0] == '  File "eeg/code.py", line 3, in <module>'


@pytest.mark.parametrize("text, expected", [
    ("train:  45%|####5     | 45/100 [00:02<00:03]", (0.45, "train")),
    ("100%|##########| 3/3", (1.0, "")),
    ("50% done", None),
    ("%|", None),
])
def test_a_bar_is_read_from_its_percentage_before_the_pipe(text, expected):
    assert parse_bar(text) == expected


def test_a_line_of_an_older_log_is_read_as_output_or_nias_by_its_prefix():
    assert parse_line("[nias] Limits: memory 64").stream is LogStream.NIAS
    assert parse_line("plain").stream is LogStream.OUT and parse_line("plain").at is None
