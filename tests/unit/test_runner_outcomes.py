"""`process_unit.runner`: whatever a run raises, its attempt ends with one outcome and the unit is
free again; what a job writes reaches memory, the log and the error only in bounded pieces."""
from __future__ import annotations

import hashlib
import io
import sys
import time
import zipfile
from collections import deque
from pathlib import Path

import pytest

from nias.errors import MessageRefused, TransferFailed
from nias.messages import EventKind, JobMessage
from nias.settings import load_settings
from process_unit import runner as runner_module
from process_unit.environments import Environment
from nias.job_log import LogStream
from process_unit.joblog import LINE_BYTES, TAIL_LINE_CHARS, JobLog, pump_lines
from process_unit.runner import Runner
from process_unit.sandbox import Sandbox


class RecordedEvents:
    """Stands in for the EventSink: keeps what would be published; can refuse the first outcome."""

    def __init__(self, refuse_first_outcome: bool = False):
        self.sent: list = []
        self.refuse = refuse_first_outcome

    def send(self, event) -> bool:
        self.sent.append(event)
        return True

    def deliver(self, event) -> bool:
        if self.refuse and getattr(event, "event", None) is EventKind.FINISHED:
            self.refuse = False
            raise MessageRefused("RabbitMQ refused the message to nias.events: PRECONDITION_FAILED")
        type(event).decode(event.encode())  # what the backend would refuse, the test refuses too
        self.sent.append(event)
        return True

    def outcomes(self) -> list:
        return [e for e in self.sent if getattr(e, "event", None) is EventKind.FINISHED]


class BackendFiles:
    """Stands in for the link to the backend: uploads from a folder, logs and results kept here."""

    def __init__(self, uploads: Path):
        self.uploads = uploads
        self.logs: dict[str, bytes] = {}
        self.results: dict[str, bytes] = {}

    def fetch_upload(self, job_id, _attempt, target: Path, _sha256, _size, cancelled=None) -> None:
        target.write_bytes((self.uploads / f"{job_id}.zip").read_bytes())

    def append_log(self, job_id, _attempt, offset: int, data: bytes) -> int:
        self.logs[job_id] = self.logs.get(job_id, b"")[:offset] + data
        return len(self.logs[job_id])

    def put_result(self, job_id, _attempt, path: Path, _outcome=None) -> None:
        self.results[job_id] = path.read_bytes()


class ThisInterpreter:
    def prepare(self, _requirements, _log, fresh: bool = False, pins: list | None = None) -> Environment:
        return Environment(Path(sys.prefix), "test", True, 0.0)

    def touch(self, _environment) -> None:
        pass


@pytest.fixture
def settings(tmp_path):
    return load_settings({"NIAS_DATA_DIR": str(tmp_path / "data"), "NIAS_SANDBOX": "off", "NIAS_LEASE_S": "60",
                          "NIAS_MAX_LOG_MB": "1"})


def _message(settings, code: str, job_id: str = "job1") -> JobMessage:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("code.py", code)
    upload = settings.data_dir / "uploads" / f"{job_id}.zip"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(buffer.getvalue())
    return JobMessage(job_id=job_id, upload=f"uploads/{job_id}.zip", sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
                      size=len(buffer.getvalue()), dispatch=1)


def _run(settings, events, code: str, job_id: str = "job1"):
    sandbox = Sandbox(settings)
    sandbox.uid = None  # run as this user: pytest's folders are private to it
    unit = Runner(settings, events, ThisInterpreter(), sandbox, link=BackendFiles(settings.data_dir / "uploads"))
    run = unit.start(_message(settings, code, job_id), 1)
    assert run.done.wait(60), "the run never ended"
    return unit, run


def test_an_unexpected_error_while_packing_the_result_fails_the_attempt_and_frees_the_unit(settings, monkeypatch):
    def broken_pack(*_args, **_kwargs):
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(runner_module, "pack_output", broken_pack)
    events = RecordedEvents()
    unit, run = _run(settings, events, "print('hello')\n")
    [outcome] = events.outcomes()
    assert outcome.state == "failed"
    assert outcome.error.startswith("The processing unit failed while running the job (UnicodeEncodeError")
    assert unit.current() is None  # idle: the next start is accepted
    monkeypatch.undo()
    _, second = _run(settings, events, "print('next')\n", job_id="job2")
    assert second.state == "succeeded"


def test_an_outcome_refused_for_itself_is_sent_again_without_its_details(settings):
    events = RecordedEvents(refuse_first_outcome=True)
    unit, run = _run(settings, events, "print('hello')\n")
    [outcome] = events.outcomes()
    assert outcome.state == "succeeded" and outcome.details == {}
    assert outcome.error.startswith("The outcome could not be sent in full (RabbitMQ refused")
    assert unit.current() is None


def test_the_log_keeps_its_limit_and_says_where_it_was_cut(tmp_path):
    log = JobLog(tmp_path / "log.txt", max_bytes=1000)
    for _ in range(30):
        log.write(LogStream.OUT, "x" * 59)
    log.note("done")
    log.close()
    text = (tmp_path / "log.txt").read_text()
    assert text.count("x" * 59) == 10
    assert "The log reached its limit of 0 MB (NIAS_MAX_LOG_MB)" in text and text.endswith("[nias] done\n")
    assert log.produced == 30 * 59 and log.failure == "the log reached its limit of 0 MB"


def test_a_line_of_any_length_reaches_the_error_tail_as_its_first_characters_only(tmp_path):
    log = JobLog(tmp_path / "log.txt", max_bytes=10 * LINE_BYTES)
    stream = io.BytesIO(b"E" * (5 * LINE_BYTES) + b"\nshort line\n")
    tail: deque[str] = deque(maxlen=12)
    pump_lines(stream, log, tail)
    assert list(tail) == ["E" * TAIL_LINE_CHARS + " [...]", "short line"]
    log.close()
    lines = (tmp_path / "log.txt").read_bytes().splitlines()
    assert [len(line.split(b"] ", 1)[1]) for line in lines] == [LINE_BYTES] * 5 + [len("short line")]


class RefusingBackend(BackendFiles):
    """Takes the log, but answers every result with `status` (as the link raises it after its tries)."""

    def __init__(self, uploads: Path, status: int | None):
        super().__init__(uploads)
        self.status = status

    def put_result(self, job_id, _attempt, path: Path, _outcome=None) -> None:
        raise TransferFailed(f"Sending the result of job {job_id}: answered {self.status}", status=self.status)


def _run_against(settings, backend) -> tuple[RecordedEvents, object]:
    events = RecordedEvents()
    sandbox = Sandbox(settings)
    sandbox.uid = None
    unit = Runner(settings, events, ThisInterpreter(), sandbox, link=backend)
    run = unit.start(_message(settings, "open('output/a.txt', 'w').write('a')\n"), 1)
    assert run.done.wait(60), "the run never ended"
    return events, unit


@pytest.mark.parametrize("status", [413, 507])
def test_a_result_the_backend_cannot_keep_fails_the_job_with_the_backends_reason(settings, status):
    events, unit = _run_against(settings, RefusingBackend(settings.data_dir / "uploads", status))
    [outcome] = events.outcomes()
    assert outcome.state == "failed" and outcome.result_size is None
    assert outcome.error == f"No result was kept: Sending the result of job job1: answered {status}"
    assert unit.current() is None


def test_a_result_that_cannot_be_delivered_loses_the_attempt_so_the_job_runs_again(settings):
    events, _ = _run_against(settings, RefusingBackend(settings.data_dir / "uploads", None))
    assert events.outcomes() == []
    [lost] = [e for e in events.sent if getattr(e, "event", None) is EventKind.LOST]
    assert lost.error.startswith("The result could not be delivered to the backend: Sending the result")


def test_an_outcome_delivered_late_carries_the_time_the_run_ended(settings):
    class SlowBackend(BackendFiles):
        def put_result(self, job_id, _attempt, path: Path, _outcome=None) -> None:
            time.sleep(1.5)  # the backend takes its time: the outcome's time stays the run's
            super().put_result(job_id, _attempt, path)

    began = time.time()
    events, _ = _run_against(settings, SlowBackend(settings.data_dir / "uploads"))
    [outcome] = events.outcomes()
    assert outcome.state == "succeeded"
    assert began <= outcome.at < time.time() - 1.4
