"""Running one job at a time: unpack, prepare the environment, run code.py, keep the result.

The job runs in its own session (process group), so a timeout or a stop ends it and every
child it started. Its outcome goes to the backend as a `finished` event; while it runs, a
heartbeat event renews its lease so the backend knows this unit still holds it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from nias.amqp import EventSink
from nias.archive import ZipLimits, extract_project
from nias.errors import ExecutionFailed, NiasError, UnitBusy
from nias.messages import PRESENCE_S, ControlMessage, JobEvent, JobMessage, UnitStatus
from nias.settings import Settings
from nias.states import JobState

from process_unit.environments import EnvironmentCache
from process_unit.results import pack_output
from process_unit.sandbox import Limits, Sandbox

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 12
PROGRESS_PREFIX = b"##nias progress "
PROGRESS_EVERY_S = 0.5


@dataclass
class Run:
    message: JobMessage
    attempt: int
    state: str = JobState.RUNNING.value
    exit_code: int | None = None
    error: str | None = None
    result_size: int | None = None
    details: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen | None = None
    started: float = field(default_factory=time.monotonic)
    paused_since: float | None = None
    paused_total: float = 0.0
    cancelled: bool = False
    progress: float | None = None
    progress_message: str = ""
    progress_sent: float = 0.0

    @property
    def job_id(self) -> str:
        return self.message.job_id

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
                "message": self.progress_message}

    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id, "attempt": self.attempt, "state": self.state, "exit_code": self.exit_code,
            "error": self.error, "result_size": self.result_size, "details": self.details,
            "done": self.done.is_set(),
        }


class JobLog:
    """The job's stdout and stderr, appended line by line to `log.txt` on the shared volume.

    A write that fails (a full volume) drops the rest of the log rather than the job: the job's
    pipes must keep being drained or it would block.
    """

    def __init__(self, path: Path):
        self._handle = open(path, "ab", buffering=0)
        self._lock = threading.Lock()
        self.failure: str | None = None

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.failure is not None:
                return
            try:
                self._handle.write(data)
            except OSError as exc:
                self.failure = exc.strerror or str(exc)
                logger.error("Log %s: writing failed (%s); the rest is dropped", self._handle.name, self.failure)

    def note(self, text: str) -> None:
        self.write(f"[nias] {text}\n".encode())

    def close(self) -> None:
        self._handle.close()


def _verify_upload(path: Path, message: JobMessage) -> None:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                sha.update(block)
    except OSError:
        raise ExecutionFailed("The uploaded project is missing from the shared storage.") from None
    if sha.hexdigest() != message.sha256:
        raise ExecutionFailed("The uploaded project changed on the shared storage since it was accepted.")


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


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


def _pump(stream, log: JobLog, tail: deque | None, on_progress=None) -> None:
    for line in iter(stream.readline, b""):
        if on_progress is not None:
            progress = parse_progress(line)
            if progress is not None:
                on_progress(*progress)
                continue  # progress lines do not clutter the log
        log.write(line)
        if tail is not None:
            tail.append(line.decode(errors="replace").rstrip())
    stream.close()


class Runner:
    def __init__(self, settings: Settings, events: EventSink, environments: EnvironmentCache,
                 sandbox: Sandbox | None = None):
        self.settings = settings
        self.events = events
        self.environments = environments
        self.sandbox = sandbox or Sandbox(settings)
        self.limits = ZipLimits(settings.max_files, settings.max_unpacked_bytes, settings.max_ratio)
        self._lock = threading.Lock()
        self._current: Run | None = None
        self._recent: dict[str, Run] = {}
        self._stopping = threading.Event()

    # -- what the API asks -------------------------------------------------------------
    def start(self, message: JobMessage, attempt: int) -> Run:
        with self._lock:
            current = self._current
            if current is not None and current.job_id == message.job_id and current.attempt == attempt:
                return current  # the same request again: nothing new to start
            if current is not None and not current.done.is_set():
                raise UnitBusy(f"This unit is running job {current.job_id}.", job_id=current.job_id)
            if self._stopping.is_set():
                raise UnitBusy("This unit is stopping.")
            run = Run(message, attempt)
            self._current = run
            self._recent[run.job_id] = run
            while len(self._recent) > 50:
                self._recent.pop(next(iter(self._recent)))
        threading.Thread(target=self._perform, args=(run,), name=f"job-{run.job_id}", daemon=True).start()
        threading.Thread(target=self.announce, daemon=True).start()
        return run

    def get(self, job_id: str) -> Run | None:
        return self._recent.get(job_id)

    def current(self) -> Run | None:
        run = self._current
        return run if run is not None and not run.done.is_set() else None

    def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs; let the current one finish within `grace_s`, else hand it back."""
        self._stopping.set()
        run = self.current()
        if run is None or run.done.wait(grace_s):
            return
        logger.warning("Job %s: unit stopping; handing the job back", run.job_id)
        run.details["handed_back"] = True
        if run.process is not None:
            self._terminate(run.process)
        run.done.wait(self.settings.kill_grace_s + 5)

    def control(self, message: ControlMessage) -> bool:
        """Pause, resume or cancel the current run if it is this job's attempt; False otherwise."""
        run = self.current()
        if run is None or run.job_id != message.job_id or run.attempt != message.attempt:
            return False
        with self._lock:
            if message.action == ControlMessage.PAUSE and not run.paused and not run.cancelled:
                run.paused_since = time.monotonic()
                if run.process is not None:
                    _signal_group(run.process, signal.SIGSTOP)
            elif message.action == ControlMessage.RESUME and run.paused:
                run.paused_total += time.monotonic() - run.paused_since
                run.paused_since = None
                if run.process is not None:
                    _signal_group(run.process, signal.SIGCONT)
            elif message.action == ControlMessage.CANCEL and not run.cancelled:
                run.cancelled = True
                if run.process is not None:
                    threading.Thread(target=self._terminate, args=(run.process,), daemon=True).start()
        logger.info("Job %s: %s applied", run.job_id, message.action)
        self.events.send(self._event(run, JobEvent.HEARTBEAT, details=run.live_details()))
        return True

    def _report_progress(self, run: Run, fraction: float, message: str) -> None:
        run.progress, run.progress_message = fraction, message
        now = time.monotonic()
        if now - run.progress_sent >= PROGRESS_EVERY_S or fraction >= 1.0:
            run.progress_sent = now
            self.events.send(self._event(run, JobEvent.PROGRESS, details=run.live_details()))

    def announce(self) -> None:
        run = self.current()
        self.events.send(UnitStatus(unit=self.settings.unit_name, state="busy" if run else "idle",
                                    job_id=run.job_id if run else None, sandbox=self.sandbox.mode))

    def start_presence(self) -> None:
        """Tell the backend every few seconds that this unit is alive, and whether it is busy."""

        def loop() -> None:
            while not self._stopping.wait(PRESENCE_S):
                self.announce()

        self.announce()
        threading.Thread(target=loop, name="presence", daemon=True).start()

    # -- doing the work ----------------------------------------------------------------
    def _heartbeat(self, run: Run) -> None:
        """Renew the lease; the first one at once, so the backend can reconcile a control it sent early."""
        interval = max(self.settings.lease_s / 4, 0.5)
        while True:
            self.events.send(self._event(run, JobEvent.HEARTBEAT, details=run.live_details()))
            if run.done.wait(interval):
                return

    def _event(self, run: Run, kind: str, **fields) -> JobEvent:
        return JobEvent(job_id=run.job_id, attempt=run.attempt, unit=self.settings.unit_name, event=kind, **fields)

    def _perform(self, run: Run) -> None:
        started = time.perf_counter()
        threading.Thread(target=self._heartbeat, args=(run,), name=f"heartbeat-{run.job_id}", daemon=True).start()
        run_dir = self.settings.jobs_dir / run.job_id / "runs" / str(run.attempt)
        work = self.settings.unit_work_dir / f"{run.job_id}-{run.attempt}"
        project: Path | None = None
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            log = JobLog(run_dir / "log.txt")
        except OSError as exc:
            self._finish(run, JobState.FAILED, f"The job's folder could not be written: {exc.strerror}.")
            return
        try:
            log.note(f"Job {run.job_id}, attempt {run.attempt}, on {self.settings.unit_name}")
            shutil.rmtree(work, ignore_errors=True)
            _verify_upload(self.settings.data_dir / run.message.upload, run.message)
            try:
                project = extract_project(self.settings.data_dir / run.message.upload, work / "project", self.limits)
            except OSError as exc:
                raise ExecutionFailed(f"The project could not be unpacked: {exc.strerror or exc}.") from None
            environment = self.environments.prepare(project / "requirements.txt", log.note)
            run.details.update(env_seconds=round(environment.seconds, 4), env_cached=environment.cached)
            self._execute(run, environment.python, environment.path, project, work, log)
        except NiasError as exc:
            run.state, run.error = JobState.FAILED.value, exc.message
        except Exception as exc:  # never leave a job without an outcome
            logger.exception("Job %s: unexpected failure", run.job_id)
            run.state, run.error = JobState.FAILED.value, f"The processing unit failed: {exc.__class__.__name__}."
        if project is not None:
            try:
                run.result_size, skipped = pack_output(project / "output", run_dir / "result.zip",
                                                       self.settings.max_result_bytes)
                for name in skipped:
                    log.note(f"output/{name} is not a regular file and was left out of the result")
            except NiasError as exc:
                run.state, run.error = JobState.FAILED.value, exc.message
        if log.failure and run.state == JobState.SUCCEEDED.value:
            run.details["log_incomplete"] = log.failure
        log.close()
        shutil.rmtree(work, ignore_errors=True)
        run.details["total_seconds"] = round(time.perf_counter() - started, 4)
        run.details.update(progress=run.progress, message=run.progress_message, active_s=round(run.active_seconds(), 3))
        self._finish(run, JobState(run.state), run.error)

    def _finish(self, run: Run, state: JobState, error: str | None) -> None:
        run.state, run.error = state.value, error
        if run.details.get("handed_back"):
            event = self._event(run, JobEvent.LOST, error="The processing unit was stopped during the job.")
        else:
            event = self._event(run, JobEvent.FINISHED, state=state.value, exit_code=run.exit_code, error=error,
                                result_size=run.result_size, details=run.details)
        self.events.deliver(event)
        logger.info("Job %s: attempt %s %s", run.job_id, run.attempt, state.value)
        run.done.set()
        self.announce()

    def _job_environment(self, run: Run, python: Path, project: Path, work: Path) -> dict[str, str]:
        """What the job sees: its own environment and folders, none of the services' variables."""
        tmp = work / "tmp"
        tmp.mkdir(exist_ok=True)
        return {
            "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(project),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "VIRTUAL_ENV": str(python.parent.parent),
            "MPLBACKEND": "Agg",
            "NIAS_JOB_ID": run.job_id,
        }

    def _wait(self, run: Run, process: subprocess.Popen, timeout: float) -> bool:
        """Wait for the job; True if it used up its time limit (paused time does not count)."""
        while True:
            remaining = timeout - run.active_seconds()
            if remaining <= 0 and not run.paused:
                return True
            try:
                process.wait(timeout=min(max(remaining, 0.05), 1.0))
                return False
            except subprocess.TimeoutExpired:
                continue

    def _execute(self, run: Run, python: Path, environment: Path, project: Path, work: Path, log: JobLog) -> None:
        timeout = min(run.message.timeout_s or self.settings.job_timeout_s, self.settings.job_timeout_s)
        env = self._job_environment(run, python, project, work)
        self.sandbox.prepare(work)
        limits = self.sandbox.limits.tightened(run.message.limits)
        if run.message.limits:
            log.note("Limits: " + ", ".join(f"{name} {value}" for name, value in sorted(vars(limits).items())))
        with self._lock:
            if run.cancelled:
                run.state = JobState.CANCELLED.value
                return
            try:
                process = subprocess.Popen(
                    self.sandbox.command(python, project, environment), cwd=project, env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                    preexec_fn=self.sandbox.preexec(limits),
                )
            except OSError as exc:
                raise ExecutionFailed(f"code.py could not be started: {exc.strerror}.") from None
            run.process = process
            if run.paused:
                _signal_group(process, signal.SIGSTOP)
        began = run.active_seconds()
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        on_progress = lambda fraction, message: self._report_progress(run, fraction, message)  # noqa: E731
        pumps = [threading.Thread(target=_pump, args=(process.stdout, log, None, on_progress), daemon=True),
                 threading.Thread(target=_pump, args=(process.stderr, log, tail), daemon=True)]
        for pump in pumps:
            pump.start()
        timed_out = self._wait(run, process, timeout)
        if timed_out:
            log.note(f"Time limit of {timeout} s reached; stopping the job")
            self._terminate(process)
        _signal_group(process, signal.SIGKILL)  # children the job left behind end with it
        for pump in pumps:
            pump.join(timeout=5)
        run.exit_code = process.returncode
        run.details["run_seconds"] = round(run.active_seconds() - began, 4)
        if run.cancelled:
            run.state, run.error = JobState.CANCELLED.value, "Cancelled on request."
            log.note("Cancelled on request; output/ so far is kept as the result")
        elif timed_out:
            run.state = JobState.FAILED.value
            run.error = f"The job ran longer than its time limit of {timeout} s and was stopped."
        elif process.returncode == 0:
            run.state = JobState.SUCCEEDED.value
        else:
            run.state = JobState.FAILED.value
            run.error = self._describe_exit(process.returncode, tail, limits)

    def _exit_signal(self, code: int) -> int | None:
        """The signal that ended code.py, if one did: bubblewrap reports a child killed by N as 128 + N."""
        if code < 0:
            return -code
        if self.sandbox.bwrap and code > 128 and code - 128 in signal.valid_signals():
            return code - 128
        return None

    def _describe_exit(self, code: int, tail: deque, limits: Limits) -> str:
        signum = self._exit_signal(code)
        if signum is None:
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

    def _terminate(self, process: subprocess.Popen) -> None:
        self.sandbox.ask_to_stop(process.pid)
        _signal_group(process, signal.SIGCONT)  # a paused job must wake up to receive SIGTERM
        try:
            process.wait(timeout=self.settings.kill_grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
