"""The Slurm executor: each job becomes a batch job on the cluster, up to NIAS_SLURM_MAX_JOBS at once.

The unit runs on a login node. As a local unit does, it fetches the upload, unpacks it and
prepares the environment (built here, on the login node, with uv: compute nodes often have no
route to the package index), but into NIAS_SLURM_WORK_DIR, which the compute nodes see; then it
writes a batch script and submits it with `sbatch --parsable`. While the batch job lives the unit
polls `scontrol show job` (its state, pending reason and node go to the job page), copies its
output file into the job's log, enforces NIAS's time limit to the second (Slurm's `--time` is in
whole minutes), and applies pause, resume, cancel and priority changes. Its end, read from sacct
or scontrol (batch_outcome.py), is the attempt's outcome; the result is packed from output/.

Every batch job is recorded (batch_journal.py) until its outcome is delivered: a restarted unit
adopts the recorded ones and follows them on. A stopping unit leaves its batch jobs running.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import threading
import time
from collections import deque
from pathlib import Path

from nias.amqp import EventSink
from nias.errors import SlurmFailed, UnitBusy
from nias.health import SandboxMode
from nias.job_log import LogStream
from nias.messages import ControlMessage, JobEvent, JobMessage
from nias.settings import Settings
from nias.states import JobState
from nias.timeline import Hop
from nias.transfer import BackendLink

from process_unit.batch_journal import JOURNAL_FILE, BatchJournal, BatchRecord
from process_unit.batch_outcome import read_outcome
from process_unit.batch_output import OutputFollower
from process_unit.environments import EnvironmentCache
from process_unit.host_facts import HostFacts
from process_unit.joblog import JobLog, ProgressFeed, pump_lines
from process_unit.run import Run
from process_unit.runner import STDERR_TAIL_LINES, Runner, own_folder
from process_unit.sandbox import Limits, limits_from
from process_unit.slurm import BatchJob, Slurm, nice_for

logger = logging.getLogger(__name__)

POLL_S = 1.0
QUICK_POLL_S = 0.25  # for a batch job's first seconds, when short jobs end: their results come sooner
QUICK_FOR_S = 10.0
OUTPUT_FILE = "slurm.out"
OFFSET_FILE = "output-offset"  # in the attempt's own folder: how much of the output is in the log


def batch_options(settings: Settings, message: JobMessage, limits: Limits, timeout_s: int, work: Path) -> list[str]:
    """The sbatch options of a job: its name, output, limits, partition and account, then the admin's."""
    options = [f"--job-name=nias-{message.job_id}", f"--output={work / OUTPUT_FILE}", f"--chdir={work / 'project'}",
               "--export=NONE", "--no-requeue", "--ntasks=1", f"--time={math.ceil(timeout_s / 60)}",
               f"--mem={limits.memory_mb}M", f"--nice={nice_for(message.priority)}"]
    if settings.job_cpus:
        options.append(f"--cpus-per-task={math.ceil(settings.job_cpus)}")
    if settings.job_gpus:
        options.append(f"--gres=gpu:{settings.job_gpus}")
    partition = settings.slurm_partition_for(message.pool)
    if partition:
        options.append(f"--partition={partition}")
    if settings.slurm_account:
        options.append(f"--account={settings.slurm_account}")
    return options + shlex.split(settings.slurm_options)


def batch_script(project: Path, python: Path, env: dict[str, str]) -> str:
    """A script that runs code.py in its project with the job's environment, and nothing of the unit's."""
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()))
    return (f"#!/bin/sh\n{exports}\ncd {shlex.quote(str(project))} || exit 111\n"
            f"exec {shlex.quote(str(python))} code.py\n")


class SlurmRunner(Runner):
    def __init__(self, settings: Settings, events: EventSink, environments: EnvironmentCache, slurm: Slurm,
                 link: BackendLink | None = None, facts: HostFacts | None = None):
        self._init_common(settings, events, environments, link, facts)
        self.slurm = slurm
        self.journal = BatchJournal(settings.unit_work_dir / JOURNAL_FILE)
        self._active: dict[str, Run] = {}
        self._adopted: dict[tuple[str, int], BatchRecord] = {}
        self._stopped: set[str] = set()  # batch jobs being stopped (a cancel, the time limit): stopped once
        try:
            self._refusal = slurm.pause_refusal()
        except SlurmFailed as exc:
            self._refusal = f"Whether this unit may suspend jobs could not be told: {exc.message}"

    # -- what the API and the presence loop ask -------------------------------------------------
    @property
    def sandbox_mode(self) -> SandboxMode:
        return SandboxMode.NONE  # the cluster's own isolation applies; NIAS's sandbox does not reach it

    def pause_refusal(self) -> str | None:
        return self._refusal

    def current(self) -> Run | None:
        runs = [run for run in self._active.values() if not run.done.is_set()]
        return runs[-1] if runs else None

    def busy_with(self) -> str | None:
        runs = [run for run in self._active.values() if not run.done.is_set()]
        return runs[0].job_id if len(runs) >= self.settings.unit_capacity else None

    def start(self, message: JobMessage, attempt: int) -> Run:
        with self._lock:
            known = self._active.get(message.job_id)
            if known is not None and known.attempt == attempt:
                return known
            if self.busy_with() is not None:
                raise UnitBusy(f"This unit holds {self.settings.unit_capacity} batch jobs, its most "
                               "(NIAS_SLURM_MAX_JOBS).", job_id=self.busy_with())
            if self._stopping.is_set():
                raise UnitBusy("This unit is stopping.")
            run = self._register(Run(message, attempt, execution={"executor": "slurm"}))
        threading.Thread(target=self._perform, args=(run,), name=f"job-{run.job_id}", daemon=True).start()
        threading.Thread(target=self.announce, daemon=True).start()
        return run

    def _register(self, run: Run) -> Run:
        self._active[run.job_id] = run
        self._recent[run.job_id] = run
        while len(self._recent) > 50:
            self._recent.pop(next(iter(self._recent)))
        return run

    def adopt_recorded(self) -> list[str]:
        """Follow again the batch jobs this unit recorded before it stopped; their folders' names."""
        adopted = []
        for record in self.journal.records():
            try:
                message = JobMessage.decode(record.message)
            except Exception:  # noqa: BLE001 - a record that does not decode cannot be followed
                logger.exception("Batch job %s: its record does not decode; not adopted", record.batch_id)
                continue
            execution = {"executor": "slurm", **({"slurm_job_id": record.batch_id} if record.batch_id else {})}
            run = Run(message, record.attempt, execution=execution)
            with self._lock:
                self._adopted[(run.job_id, run.attempt)] = record
                self._register(run)
            logger.info("Job %s: adopting batch job %s (attempt %s)", run.job_id, record.batch_id or "being submitted",
                        run.attempt)
            threading.Thread(target=self._perform, args=(run,), name=f"job-{run.job_id}", daemon=True).start()
            adopted.append(record.folder)
        return adopted

    def shutdown(self, grace_s: float) -> None:
        """Take no new job; the batch jobs run on, and the next start of this unit adopts them."""
        self._stopping.set()
        if self._active:
            logger.info("Unit stopping; %s batch job(s) run on and are adopted at the next start", len(self._active))

    def control(self, message: ControlMessage) -> bool:
        run = self._active.get(message.job_id)
        if run is None or run.done.is_set() or run.attempt != message.attempt:
            return False
        batch_id = run.execution.get("slurm_job_id")
        with self._lock:
            if message.action == ControlMessage.PAUSE and not run.paused and not run.cancelled:
                run.paused_since = time.monotonic()
            elif message.action == ControlMessage.RESUME and run.paused:
                run.paused_total += time.monotonic() - run.paused_since
                run.paused_since = None
            elif message.action == ControlMessage.CANCEL and not run.cancelled:
                run.cancelled = True
                if batch_id:
                    threading.Thread(target=self._stop_batch, args=(run, batch_id), daemon=True).start()
            elif message.action == ControlMessage.PRIORITY and batch_id:
                self._renice(run, batch_id, message.priority or 0)
        if batch_id and message.action in (ControlMessage.PAUSE, ControlMessage.RESUME):
            self._apply_pause(run, batch_id, self._show(batch_id))
        logger.info("Job %s: %s applied", run.job_id, message.action)
        self.events.send(self._event(run, JobEvent.HEARTBEAT, details=run.live_details()))
        return True

    def _renice(self, run: Run, batch_id: str, priority: int) -> None:
        try:
            self.slurm.set_nice(batch_id, nice_for(priority))
            logger.info("Job %s: batch job %s now has Nice=%s", run.job_id, batch_id, nice_for(priority))
        except SlurmFailed as exc:
            logger.warning("Job %s: the new priority did not reach Slurm: %s", run.job_id, exc.message)

    # -- running one attempt ---------------------------------------------------------------------
    def _run_attempt(self, run: Run, work: Path, own: Path, log: JobLog) -> None:
        record = self._adopted.pop((run.job_id, run.attempt), None)
        if record is None:
            super()._run_attempt(run, work, own, log)
            return
        batch_id = record.batch_id or self.slurm.find(f"nias-{run.job_id}")
        if not batch_id:  # stopped while submitting, before sbatch took the job
            run.lost = f"The processing unit {self.settings.unit_name} stopped while it submitted the batch job."
            return
        run.project = work / "project"
        run.execution["slurm_job_id"] = batch_id
        log.note(f"Unit {self.settings.unit_name} restarted; following batch job {batch_id} again")
        offset = int((own / OFFSET_FILE).read_text() or 0) if (own / OFFSET_FILE).exists() else 0
        self._follow(run, batch_id, work, own, log, record.timeout_s, offset)

    def _execute(self, run: Run, python: Path, environment: Path, project: Path, work: Path, log: JobLog) -> None:
        timeout = min(run.message.timeout_s or self.settings.job_timeout_s, self.settings.job_timeout_s)
        limits = limits_from(self.settings).tightened(run.message.limits)
        script = work / "batch.sh"
        script.write_text(batch_script(project, python, self._job_environment(run, python, project, work)))
        options = batch_options(self.settings, run.message, limits, timeout, work)
        record = BatchRecord(run.job_id, run.attempt, "", run.message.encode().decode(), timeout)
        with self._lock:
            if run.cancelled:
                run.state, run.error = JobState.CANCELLED.value, "Cancelled on request."
                return
            # Recorded before sbatch: a unit killed in between finds the batch job by its name at restart.
            self.journal.add(record)
            batch_id = self.slurm.submit(script, options)
            run.mark(Hop.STARTED)  # submitted: Slurm's queueing counts as the run's start-up
            run.execution.update(slurm_job_id=batch_id, slurm_state="PENDING")
            self.journal.add(dataclasses.replace(record, batch_id=batch_id))
        log.note(f"Submitted to Slurm as batch job {batch_id}: sbatch {' '.join(options)}")
        own = own_folder(self.settings.unit_work_dir, run.job_id, run.attempt)
        self._follow(run, batch_id, work, own, log, timeout, 0)

    def _show(self, batch_id: str) -> BatchJob | None | str:
        """Where the batch job stands; the error's text when Slurm could not be asked just now."""
        try:
            return self.slurm.show(batch_id)
        except SlurmFailed as exc:
            return exc.message

    def _note_state(self, run: Run, job: BatchJob) -> None:
        """Keep the job page's view of the batch job current; tell the backend at once when it changes."""
        seen = {"slurm_state": job.state, "reason": job.reason if job.reason not in ("", "None") else None,
                "node": job.node or run.execution.get("node")}
        if any(run.execution.get(key) != value for key, value in seen.items()):
            run.execution.update(seen)
            self.events.send(self._event(run, JobEvent.HEARTBEAT, details=run.live_details()))

    def _apply_pause(self, run: Run, batch_id: str, job: BatchJob | None | str) -> None:
        """Suspend a running batch job the user paused, resume a suspended one they resumed."""
        if not isinstance(job, BatchJob):
            return
        try:
            if run.paused and job.state == "RUNNING":
                self.slurm.suspend(batch_id)
            elif not run.paused and job.state == "SUSPENDED" and not run.cancelled:
                self.slurm.resume(batch_id)
        except SlurmFailed as exc:
            logger.error("Job %s: %s", run.job_id, exc.message)
            if run.paused:  # not suspended after all: the heartbeat says so and the backend's view follows
                run.paused_total += time.monotonic() - run.paused_since
                run.paused_since = None

    def _follow(self, run: Run, batch_id: str, work: Path, own: Path, log: JobLog, timeout: int, offset: int) -> None:
        """Follow the batch job to its end, its output into the log; set the attempt's outcome."""
        output = OutputFollower(work / OUTPUT_FILE, offset)
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        progress = ProgressFeed(lambda fraction, message: self._report_progress(run, fraction, message))
        # The batch job's one output file holds stdout and stderr together: its lines are the job's output.
        pump = threading.Thread(target=pump_lines, args=(output, log, tail, progress, LogStream.OUT), daemon=True)
        pump.start()
        timed_out = stopping = False
        job: BatchJob | None | str = None
        quick_until = time.monotonic() + QUICK_FOR_S
        while True:
            job = self._show(batch_id)
            if job is None or (isinstance(job, BatchJob) and not job.live):
                break
            if isinstance(job, BatchJob):
                self._note_state(run, job)
                self._apply_pause(run, batch_id, job)
                if job.state == "RUNNING" and (job.run_seconds or 0) >= timeout and not timed_out:
                    timed_out = True
                    log.note(f"Time limit of {timeout} s reached; stopping batch job {batch_id}")
                if (timed_out or run.cancelled) and not stopping:
                    stopping = True
                    threading.Thread(target=self._stop_batch, args=(run, batch_id), daemon=True).start()
            else:
                logger.warning("Job %s: %s", run.job_id, job)
            (own / OFFSET_FILE).write_text(str(output.offset))
            time.sleep(QUICK_POLL_S if time.monotonic() < quick_until else POLL_S)
        if isinstance(job, BatchJob):
            self._note_state(run, job)
        output.finish()
        pump.join(timeout=30)
        self._settle(run, batch_id, job, timed_out, timeout, tail)

    def _settle(self, run: Run, batch_id: str, job: BatchJob | None, timed_out: bool, timeout: int,
                tail: deque) -> None:
        run.mark(Hop.EXITED)
        final = job
        try:
            final = self.slurm.final(batch_id) or job
        except SlurmFailed as exc:
            logger.warning("Job %s: the end of batch job %s could not be read: %s", run.job_id, batch_id, exc.message)
        if final is not None:
            self._note_state(run, final)
            run.details["run_seconds"] = final.run_seconds if final.run_seconds is not None else run.active_seconds()
        limits = limits_from(self.settings).tightened(run.message.limits)
        outcome = read_outcome(final, batch_id=batch_id, cancelled=run.cancelled, timed_out=timed_out,
                               timeout_s=timeout, memory_mb=limits.memory_mb, tail=tail)
        run.state, run.exit_code, run.error, run.lost = outcome.state, outcome.exit_code, outcome.error, outcome.lost
        logger.info("Job %s: batch job %s ended %s", run.job_id, batch_id, final.state if final else "unknown")

    def _stop_batch(self, run: Run, batch_id: str) -> None:
        """SIGTERM to the batch script and all it started, the grace period, then scancel."""
        with self._lock:
            if batch_id in self._stopped:
                return
            self._stopped.add(batch_id)
        try:
            job = self.slurm.show(batch_id)
            if job is not None and job.state == "SUSPENDED":
                self.slurm.resume(batch_id)  # a stopped process keeps a TERM until it runs again
            if job is None or job.state not in ("RUNNING", "SUSPENDED"):
                self.slurm.cancel(batch_id)
                return
            self.slurm.signal(batch_id, "TERM")
            deadline = time.monotonic() + self.settings.kill_grace_s
            while time.monotonic() < deadline:
                job = self.slurm.show(batch_id)
                if job is None or not job.live:
                    return
                time.sleep(0.25)
            self.slurm.cancel(batch_id)
        except SlurmFailed as exc:
            logger.error("Job %s: batch job %s could not be stopped: %s", run.job_id, batch_id, exc.message)

    def _finish(self, run: Run) -> None:
        try:
            super()._finish(run)
        finally:
            self.journal.remove(run.job_id, run.attempt)
            self._active.pop(run.job_id, None)
