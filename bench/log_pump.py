"""`make bench`: how fast a unit turns a job's output into log lines (process_unit/joblog.py).

Prints the throughput for plain lines (80 characters) and for a carriage-return progress bar
(10,000 updates of one line), read in the pieces a pipe hands out, without a stack.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "process-unit")]

from nias.job_log import LogStream  # noqa: E402
from process_unit.joblog import JobLog, ProgressFeed, pump_lines  # noqa: E402


class Pipe:
    def __init__(self, data: bytes, piece: int = 4096):
        self.data, self.piece, self.at = data, piece, 0

    def read1(self, _size: int) -> bytes:
        chunk = self.data[self.at:self.at + self.piece]
        self.at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


def pumped_mb_s(data: bytes, kind: LogStream) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        log = JobLog(Path(folder) / "log.txt", 1 << 40)
        started = time.perf_counter()
        pump_lines(Pipe(data), log, None, ProgressFeed(lambda *_: None), kind)
        seconds = time.perf_counter() - started
        log.close()
        return len(data) / seconds / 1e6, log.written


def main() -> None:
    lines = b"".join(b"sample %07d " % i + b"x" * 64 + b"\n" for i in range(200_000))
    bar = b"".join(b"\repochs: %3d%%|%-20s| %d/10000" % (i // 100, b"#" * (i // 500), i) for i in range(10_000)) + b"\n"
    rate, _ = pumped_mb_s(lines, LogStream.OUT)
    print(f"log lines, 80 characters each ({len(lines) / 1e6:.0f} MB): {rate:6.1f} MB/s")
    rate, written = pumped_mb_s(bar, LogStream.ERR)
    print(f"a tqdm-style bar, 10,000 updates ({len(bar) / 1e3:.0f} kB): {rate:6.1f} MB/s, {written} bytes of log")


if __name__ == "__main__":
    main()
