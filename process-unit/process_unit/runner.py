"""Running one job at a time: unpack, prepare the environment, run code.py, keep the result.

The job runs in a box of its own (isolation.py: its cgroup and uid, else its process group), so a
timeout, a cancel or its end stops every process it started before the result is packed. Whatever a
run raises, it ends in `_finish` with one outcome, sent to the backend as a `finished` event;
while it runs, a heartbeat event renews its lease so the backend knows this unit still holds it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import subprocess
import threading
import time
import zipfile
from collections import deque
from pathlib import Path

from nias.amqp import EventSink
from nias.archive import ZipLimits, extract_project
from nias.params import PARAMS_FILE
from nias.provenance import encode_provenance, provenance_record
from nias.job_log import LogStream
from nias.errors import ExecutionFailed, MessageRefused, NiasError, TransferFailed, UnitBusy
from nias.messages import PRESENCE_S, ControlMessage, JobEvent, JobMessage, UnitStatus, clip_text
from nias.health import SandboxMode
from nias.settings import Settings
from nias.states import JobState
from nias.timeline import Hop
from nias.transfer import BackendLink

from process_unit.environments import EnvironmentCache, describe_environment
from process_unit.host_facts import HostFacts
from process_unit.dataset_cache import DatasetCache
from process_unit.job_params import write_params_file
from process_unit.isolation import Isolation, JobBox
from process_unit.joblog import JobLog, ProgressFeed, pump_lines
from process_unit.launcher import Launcher, SpareLauncher
from process_unit.log_shipper import LogShipper
from process_unit.metrics import UnitMetrics
from process_unit.results import ResultLimits, pack_output
from process_unit.run import Run, describe_exit
from process_unit.sandbox import Limits, Sandbox
from process_unit.usage import MeasuredPopen

logger = logging.getLogger(__name__)

OWN_FILES = ".unit"  # under the work dir: 0700, never bound into a sandbox
STDERR_TAIL_LINES = 12
PROGRESS_EVERY_S = 0.5


def own_folder(work_dir: Path, job_id: str, attempt: int) -> Path:
    """The unit's own files of an attempt (its upload, log and result), out of the job's reach."""
    return work_dir / OWN_FILES / f"{job_id}-{attempt}"


class Runner:
    def __init__(self, settings: Settings, events: EventSink, environments: EnvironmentCache,
                 sandbox: Sandbox | None = None, isolation: Isolation | None = None,
                 link: BackendLink | None = None, facts: HostFacts | None = None, metrics: UnitMetrics | None = None):
        self._init_common(settings, events, environments, link, facts, metrics)
        self.sandbox = sandbox or Sandbox(settings)
        self.isolation = isolation or Isolation(self.sandbox, None, None, self.sandbox.uid)
        # Only a cgroup makes a start slow enough to be worth a process kept waiting (launcher.py).
        self.spare = SpareLauncher(self.isolation, self.sandbox) if self.isolation.root is not None else None

    def _init_common(self, settings: Settings, events: EventSink, environments: EnvironmentCache,
                     link: BackendLink | None, facts: HostFacts | None, metrics: UnitMetrics | None = None) -> None:
        """What every executor shares: the backend link, events, environments, metrics and the run registry."""
        self.settings = settings
        self.metrics = metrics or UnitMetrics()
        self.facts = facts
        self.link = link or BackendLink(settings)
        self.events = events
        self.environments = environments
        self.limits = ZipLimits(settings.max_files, settings.max_unpacked_bytes, settings.max_ratio)
        self.result_limits = ResultLimits(settings.max_result_bytes, settings.max_result_files)
        self.datasets = DatasetCache(settings.dataset_cache_folder, settings.dataset_cache_mb * 1024 * 1024)
        self.spare: SpareLauncher | None = None  # a local unit's next job's process, waiting (launcher.py)
        self._lock = threading.Lock()
        self._current: Run | None = None
        self._recent: dict[str, Run] = {}
        self._stopping = threading.Event()

    @property
    def sandbox_mode(self) -> SandboxMode:
        return self.sandbox.mode

    def pause_refusal(self) -> str | None:
        """Why this unit cannot pause its jobs; None: it can (a local unit always can)."""
        return None

    def busy_with(self) -> str | None:
        """The job that keeps this unit from taking another, if one does."""
        run = self.current()
        return run.job_id if run is not None else None

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
        self._close_spare()
        run = self.current()
        if run is None or run.done.wait(grace_s):
            return
        logger.warning("Job %s: unit stopping; handing the job back", run.job_id)
        run.details["handed_back"] = True
        if run.process is not None:
            self._terminate(run)
        run.done.wait(self.settings.kill_grace_s + 5)

    def control(self, message: ControlMessage) -> bool:
        """Pause, resume or cancel the current run if it is this job's attempt; False otherwise."""
        run = self.current()
        if run is None or run.job_id != message.job_id or run.attempt != message.attempt:
            return False
        with self._lock:
            if message.action == ControlMessage.PAUSE and not run.paused and not run.cancelled:
                run.paused_since = time.monotonic()
                if run.box is not None:
                    run.box.pause()
            elif message.action == ControlMessage.RESUME and run.paused:
                run.paused_total += time.monotonic() - run.paused_since
                run.paused_since = None
                if run.box is not None:
                    run.box.resume()
            elif message.action == ControlMessage.CANCEL and not run.cancelled:
                run.cancelled = True
                if run.process is not None:
                    threading.Thread(target=self._terminate, args=(run,), daemon=True).start()
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
        about = dataclasses.asdict(self.facts) if self.facts is not None else {}
        self.events.send(UnitStatus(unit=self.settings.unit_name, state="busy" if run else "idle",
                                    job_id=run.job_id if run else None, sandbox=self.sandbox_mode,
                                    pools=list(self.settings.unit_pool_names), executor=self.settings.executor,
                                    pause_refusal=self.pause_refusal(), **about))

    def start_presence(self) -> None:
        """Tell the backend every few seconds that this unit is alive, and whether it is busy."""

        def loop() -> None:
            while not self._stopping.wait(PRESENCE_S):
                self.announce()

        self.announce()
        self._prepare_spare()
        threading.Thread(target=loop, name="presence", daemon=True).start()

    def _prepare_spare(self) -> None:
        if self.spare is not None and not self._stopping.is_set():
            self.spare.prepare()

    def _close_spare(self) -> None:
        if self.spare is not None:
            self.spare.close()

    # -- doing the work ----------------------------------------------------------------
    def _heartbeat(self, run: Run) -> None:
        """Renew the lease; the first one at once, so the backend can reconcile a control it sent early."""
        interval = max(self.settings.lease_s / 4, 0.5)
        while True:
            try:
                self.events.send(self._event(run, JobEvent.HEARTBEAT, details=run.live_details()))
            except Exception:  # noqa: BLE001 - a lost beat is sent again; a dead thread would lose the lease
                logger.exception("Job %s: heartbeat not sent", run.job_id)
            if run.done.wait(interval):
                return

    def _event(self, run: Run, kind: str, **fields) -> JobEvent:
        return JobEvent(job_id=run.job_id, attempt=run.attempt, unit=self.settings.unit_name, event=kind, **fields)

    def _perform(self, run: Run) -> None:
        """Run one attempt. Whatever happens in it, the attempt ends with one outcome and the unit is idle."""
        started = time.perf_counter()
        threading.Thread(target=self._heartbeat, args=(run,), name=f"heartbeat-{run.job_id}", daemon=True).start()
        try:
            self._attempt(run)
        except NiasError as exc:
            run.fail(exc.message)
        except BaseException as exc:  # noqa: BLE001 - a bug must not leave the job without an outcome
            logger.exception("Job %s: unexpected failure", run.job_id)
            run.fail(f"The processing unit failed while running the job ({exc.__class__.__name__}: "
                     f"{str(exc)[:300]}).")
        finally:
            run.details["total_seconds"] = round(time.perf_counter() - started, 4)
            run.details.update(progress=run.progress, message=run.progress_message,
                               active_s=round(run.active_seconds(), 3), timeline=dict(run.timeline))
            run.ended_at = time.time()
            self._finish(run)

    def _attempt(self, run: Run) -> None:
        """Fetch the upload, unpack it, prepare the environment, run code.py, pack output/: the
        log goes to the backend as it grows, the result once the run is over (`_deliver_outcome`)."""
        work = self.settings.unit_work_dir / f"{run.job_id}-{run.attempt}"
        own = own_folder(self.settings.unit_work_dir, run.job_id, run.attempt)
        try:
            own.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            own.mkdir(mode=0o700, exist_ok=True)
            log = JobLog(own / "log.txt", self.settings.max_log_bytes)
        except OSError as exc:
            raise ExecutionFailed(f"The unit's work dir could not be written: {exc.strerror}.") from None
        shipper = LogShipper(self.link, run.job_id, run.attempt, own / "log.txt")
        shipper.start()
        try:
            self._run_attempt(run, work, own, log)
        finally:
            try:
                if run.project is not None:
                    self._keep_result(run, run.project, own / "result.zip", log)
            finally:
                run.details["log_bytes"] = log.written
                log.close()
                unsent = shipper.finish()
                if log.failure or unsent:
                    run.details["log_incomplete"] = "; ".join(filter(None, (log.failure, unsent)))
                shutil.rmtree(work, ignore_errors=True)

    def _run_attempt(self, run: Run, work: Path, own: Path, log: JobLog) -> None:
        log.note(f"Job {run.job_id}, attempt {run.attempt}, on {self.settings.unit_name}")
        shutil.rmtree(work, ignore_errors=True)
        upload = own / "upload.zip"
        try:
            self.link.fetch_upload(run.job_id, run.attempt, upload, run.message.sha256, run.message.size,
                                   cancelled=lambda: run.cancelled)
        except TransferFailed as exc:
            raise ExecutionFailed(f"The upload could not be fetched from the backend: {exc.message}") from None
        run.mark(Hop.FETCHED)
        try:
            run.project = extract_project(upload, work / "project", self.limits)
        except OSError as exc:
            raise ExecutionFailed(f"The project could not be unpacked: {exc.strerror or exc}.") from None
        finally:
            upload.unlink(missing_ok=True)
        log.hide_paths({str(run.project): "", str(work): ""})
        write_params_file(run.project, run.message.params)
        with contextlib.ExitStack() as held:  # the data sets stay in the cache, never evicted, while the job runs
            self._provide_datasets(run, run.project / "data", held, log)
            self._run_in_environment(run, work, log)

    def _provide_datasets(self, run: Run, folder: Path, held: contextlib.ExitStack, log: JobLog) -> None:
        """Each data set the job names at data/<name>/: a zip unpacked, a single file under its name."""
        for entry in run.message.datasets:
            fetches = self.datasets.fetches
            cached = held.enter_context(self.datasets.using(entry["sha256"], lambda part, entry=entry: (
                self._fetch_dataset(run, entry, part))))
            target = folder / entry["name"]
            target.mkdir(parents=True)
            filename = entry.get("filename", entry["name"])
            # Only a .zip was checked as one at the backend: any other file is kept as it is, whatever it holds.
            if filename.lower().endswith(".zip") and zipfile.is_zipfile(cached):
                with zipfile.ZipFile(cached) as archive:  # checked at the backend; zipfile keeps entries inside
                    archive.extractall(target)
            else:
                shutil.copyfile(cached, target / filename)
            how = "fetched" if self.datasets.fetches > fetches else "from the unit's cache"
            log.note(f"Data set {entry['name']} ({entry['size']} bytes, {how}) at data/{entry['name']}/")

    def _fetch_dataset(self, run: Run, entry: dict, part: Path) -> None:
        try:
            self.link.fetch_dataset(run.job_id, run.attempt, part, entry["sha256"], entry["size"],
                                    cancelled=lambda: run.cancelled)
        except TransferFailed as exc:
            raise ExecutionFailed(f"The data set {entry['name']} could not be fetched: {exc.message}") from None

    def _run_in_environment(self, run: Run, work: Path, log: JobLog) -> None:
        run.mark(Hop.UNPACKED)
        environment = self.environments.prepare(run.project / "requirements.txt", log.note,
                                                fresh=run.message.fresh_env, pins=run.message.pins)
        self.environments.touch(environment)
        run.mark(Hop.ENV_READY)
        run.details.update(env_seconds=round(environment.seconds, 4), env_cached=environment.cached,
                           env_built_at=environment.built_at)
        log.hide_paths({str(environment.path): "<environment>"})
        host = self.facts.host if self.facts is not None else None
        run.details["ran_with"] = describe_environment(environment.path, self.settings.unit_name, host).to_json()
        self._execute(run, environment.python, environment.path, run.project, work, log)

    def _keep_result(self, run: Run, project: Path, target: Path, log: JobLog) -> None:
        """Pack output/ as the result, even of a failed or cancelled run; say what was left out."""
        try:
            packed = pack_output(project, target, self.result_limits, encode_provenance(self._provenance(run)))
        except NiasError as exc:
            log.note(f"No result was kept: {exc.message}")
            if run.state == JobState.FAILED.value:
                run.error = f"{run.error or ''}\nNo result was kept: {exc.message}".strip()
            else:
                run.fail(exc.message)
            return
        run.mark(Hop.PACKED)
        run.result_size = packed.size
        run.result_path = target
        run.details.update(result_files=packed.files, result_left_out=packed.left_out_count)
        for note in packed.left_out:
            log.note(f"Left out of the result: {note}")
        if packed.left_out_count > len(packed.left_out):
            log.note(f"... and {packed.left_out_count - len(packed.left_out)} more entries left out")

    def _provenance(self, run: Run) -> dict:
        """What the result zip records of the run (nias.provenance), as the backend serves it."""
        return provenance_record(run.message.sha256, run.message.origin, run.details.get("ran_with"),
                                 run.execution.get("executor"), run.message.datasets)

    def _finish(self, run: Run) -> None:
        """Send the attempt's outcome; never raises, and always frees the unit."""
        try:
            if run.state == JobState.RUNNING.value:  # no step set an outcome: that is a failure too
                run.fail("The run ended without an outcome.")
            self._deliver_outcome(run)
            logger.info("Job %s: attempt %s %s", run.job_id, run.attempt, run.state)
            self.metrics.attempt_ended(run.state, time.monotonic() - run.started)
        except BaseException:  # noqa: BLE001
            logger.exception("Job %s: the outcome could not be sent; the backend's lease will expire", run.job_id)
        finally:
            shutil.rmtree(own_folder(self.settings.unit_work_dir, run.job_id, run.attempt), ignore_errors=True)
            run.done.set()
            self._prepare_spare()
            try:
                self.announce()
            except Exception:  # noqa: BLE001 - presence is sent again in a few seconds
                logger.exception("Unit status not sent")

    def _deliver_outcome(self, run: Run) -> None:
        """Send the result to the backend, then the outcome; a result that cannot be delivered
        loses the attempt (the job is queued again), so no job succeeds without its result."""
        if run.details.get("handed_back") or run.lost:
            self.events.deliver(self._event(run, JobEvent.LOST, error=clip_text(
                run.lost or "The processing unit was stopped during the job.", 1000)))
            return
        try:
            self._send_result(run, self._outcome(run))
        except TransferFailed as exc:
            if exc.status == 409:  # the attempt is not this unit's any more: its outcome no longer counts
                logger.warning("Job %s: %s", run.job_id, exc.message)
            elif exc.status in (413, 507):  # the backend cannot keep this result, here or on another unit
                logger.error("Job %s: %s", run.job_id, exc.message)
                run.fail(clip_text(f"No result was kept: {exc.message}", 1000))
                run.result_size = None
            else:
                logger.error("Job %s: %s", run.job_id, exc.message)
                self.events.deliver(self._event(run, JobEvent.LOST, error=clip_text(
                    f"The result could not be delivered to the backend: {exc.message}", 1000)))
                return
        event = self._outcome(run)  # again: a result the backend could not keep failed the run above
        try:
            self.events.deliver(event)
        except MessageRefused as exc:
            # RabbitMQ refused this one event (never a matter of retrying): send the outcome without extras.
            logger.error("Job %s: outcome refused by RabbitMQ (%s); sending it without details", run.job_id, exc.message)
            error = f"The outcome could not be sent in full ({exc.message}); see the log. {run.error or ''}"
            self.events.deliver(dataclasses.replace(event, details={}, error=error[:1000]))

    def _outcome(self, run: Run) -> JobEvent:
        ended = {"at": run.ended_at} if run.ended_at is not None else {}
        return self._event(run, JobEvent.FINISHED, state=run.state, exit_code=run.exit_code, error=run.error,
                           result_size=run.result_size, details=run.details, **ended)

    def _send_result(self, run: Run, outcome: JobEvent) -> None:
        path = run.result_path
        if path is None:
            return
        self.link.put_result(run.job_id, run.attempt, path, outcome)

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
            "NIAS_PARAMS_FILE": str(project / PARAMS_FILE),
        }

    def _wait(self, run: Run, process: MeasuredPopen, timeout: float) -> bool:
        """Wait for the job; True if it used up its time limit (paused time does not count)."""
        try:
            while True:
                remaining = timeout - run.active_seconds()
                if remaining <= 0 and not run.paused:
                    return True
                if process.ended_within(min(max(remaining, 0.05), 1.0)):
                    return False
        finally:
            process.close_pidfd()

    def _execute(self, run: Run, python: Path, environment: Path, project: Path, work: Path, log: JobLog) -> None:
        timeout = min(run.message.timeout_s or self.settings.job_timeout_s, self.settings.job_timeout_s)
        limits = self.sandbox.limits.tightened(run.message.limits)
        if run.message.limits:
            log.note("Limits: " + ", ".join(f"{name} {value}" for name, value in sorted(vars(limits).items())))
        launcher = self.spare.take(limits) if self.spare is not None else None
        box = launcher.box if launcher is not None else self.isolation.open_box(f"{run.job_id}-{run.attempt}", limits)
        try:
            env = self._job_environment(run, python, project, work)
            self.sandbox.prepare(work, box.uid)
            self._run_code(run, box, python, environment, project, env, limits, timeout, log, launcher)
        finally:
            box.end_all()  # whatever the job left running, also outside its session, ends before packing
            if launcher is not None and run.process is None:  # taken but never launched: reap it
                launcher.process.wait()
            box.close()

    def _run_code(self, run: Run, box: JobBox, python: Path, environment: Path, project: Path, env: dict,
                  limits: Limits, timeout: int, log: JobLog, launcher: Launcher | None = None) -> None:
        with self._lock:
            if run.cancelled:
                run.state = JobState.CANCELLED.value
                return
            argv = self.sandbox.command(python, project, environment)
            try:
                if launcher is not None:
                    process = launcher.launch(argv, project, env, limits)
                else:
                    process = MeasuredPopen(
                        argv, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, start_new_session=True,
                        preexec_fn=self.sandbox.preexec(limits, box.uid, box.enter),
                    )
            except OSError as exc:
                raise ExecutionFailed(f"code.py could not be started: {exc.strerror}.") from None
            run.mark(Hop.STARTED)
            box.started(process)
            run.process, run.box = process, box
            if run.paused:
                box.pause()
        began = run.active_seconds()
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        progress = ProgressFeed(lambda fraction, message: self._report_progress(run, fraction, message))
        pumps = [threading.Thread(target=pump_lines, args=(process.stdout, log, None, progress, LogStream.OUT),
                                  daemon=True),
                 threading.Thread(target=pump_lines, args=(process.stderr, log, tail, progress, LogStream.ERR),
                                  daemon=True)]
        for pump in pumps:
            pump.start()
        timed_out = self._wait(run, process, timeout)
        if timed_out:
            log.note(f"Time limit of {timeout} s reached; stopping the job")
            self._terminate(run)
        box.end_all()  # children the job left behind end with it
        for pump in pumps:
            pump.join(timeout=5)
        run.mark(Hop.EXITED)
        run.exit_code = process.returncode
        self.metrics.job_used(process.usage)
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
            run.error = describe_exit(process.returncode, tail, limits, out_of_memory=box.memory_exceeded(),
                                      in_bwrap=bool(self.sandbox.bwrap))

    def _terminate(self, run: Run) -> None:
        """SIGTERM to the job (woken first if paused), then, after the grace period, SIGKILL to all of it."""
        process, box = run.process, run.box
        if process is None or box is None:
            return
        box.ask_to_stop()
        try:
            process.wait(timeout=self.settings.kill_grace_s)
        except subprocess.TimeoutExpired:
            box.end_all()
            process.wait()
