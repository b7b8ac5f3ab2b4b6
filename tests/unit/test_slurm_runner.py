"""A Slurm unit's controls with Slurm stood in by a recording fake: pause and resume become
suspend and resume of a running batch job (and wait while it is pending), a refused suspend leaves
the run unpaused, a new priority becomes a Nice, a cancel is TERM then scancel, and a full unit
says it is busy; a batch job recorded while it was being submitted is found again by its name."""
from __future__ import annotations

import pytest

from nias.errors import SlurmFailed, UnitBusy
from nias.messages import ControlMessage, JobMessage
from nias.settings import load_settings
from process_unit.batch_journal import BatchRecord
from process_unit.joblog import JobLog
from process_unit.run import Run
from process_unit.slurm import BatchJob
from process_unit.slurm_runner import SlurmRunner


class FakeSlurm:
    def __init__(self, state: str = "RUNNING", refuse_suspend: bool = False):
        self.state, self.refuse_suspend = state, refuse_suspend
        self.found = ""
        self.calls: list[tuple] = []

    def pause_refusal(self):
        return None

    def show(self, batch_id: str) -> BatchJob:
        return BatchJob(batch_id, self.state)

    def suspend(self, batch_id: str) -> None:
        self.calls.append(("suspend", batch_id))
        if self.refuse_suspend:
            raise SlurmFailed("scontrol suspend failed: Access/permission denied for job 42")
        self.state = "SUSPENDED"

    def resume(self, batch_id: str) -> None:
        self.calls.append(("resume", batch_id))
        self.state = "RUNNING"

    def set_nice(self, batch_id: str, nice: int) -> None:
        self.calls.append(("nice", batch_id, nice))

    def signal(self, batch_id: str, name: str) -> None:
        self.calls.append(("signal", batch_id, name))
        self.state = "CANCELLED"

    def cancel(self, batch_id: str) -> None:
        self.calls.append(("cancel", batch_id))

    def find(self, name: str) -> str:
        self.calls.append(("find", name))
        return self.found

    def final(self, batch_id: str) -> BatchJob:
        return BatchJob(batch_id, self.state, exit_code=0, run_seconds=1.0)


class Events:
    def __init__(self):
        self.sent = []

    def send(self, message) -> None:
        self.sent.append(message)


def runner_with(tmp_path, slurm: FakeSlurm, max_jobs: int = 2) -> SlurmRunner:
    settings = load_settings({"NIAS_EXECUTOR": "slurm", "NIAS_SLURM_WORK_DIR": str(tmp_path),
                              "NIAS_SLURM_MAX_JOBS": str(max_jobs), "NIAS_KILL_GRACE_S": "2"})
    settings.unit_work_dir.mkdir(parents=True)
    return SlurmRunner(settings, Events(), environments=None, slurm=slurm, link=object())


def held(runner: SlurmRunner, job_id: str = "abc", batch_id: str | None = "42") -> Run:
    message = JobMessage(job_id=job_id, upload=f"jobs/{job_id}/upload.zip", sha256="0" * 64, size=1, dispatch=1)
    run = Run(message, 1, execution={"executor": "slurm", **({"slurm_job_id": batch_id} if batch_id else {})})
    return runner._register(run)


def control(runner: SlurmRunner, action: ControlMessage, **fields) -> bool:
    return runner.control(ControlMessage(job_id="abc", attempt=1, action=action, **fields))


def test_pause_suspends_a_running_batch_job_and_resume_resumes_it(tmp_path):
    slurm = FakeSlurm()
    runner = runner_with(tmp_path, slurm)
    run = held(runner)
    assert control(runner, ControlMessage.PAUSE) and run.paused
    assert control(runner, ControlMessage.RESUME) and not run.paused
    assert slurm.calls == [("suspend", "42"), ("resume", "42")]


def test_a_pause_of_a_pending_batch_job_waits_until_it_runs(tmp_path):
    slurm = FakeSlurm(state="PENDING")
    runner = runner_with(tmp_path, slurm)
    run = held(runner)
    control(runner, ControlMessage.PAUSE)
    assert run.paused and slurm.calls == []
    slurm.state = "RUNNING"
    runner._apply_pause(run, "42", slurm.show("42"))  # as the follow loop does on its next look
    assert slurm.calls == [("suspend", "42")]


def test_a_suspend_slurm_refuses_leaves_the_run_unpaused_so_the_backend_hears_it(tmp_path):
    runner = runner_with(tmp_path, FakeSlurm(refuse_suspend=True))
    run = held(runner)
    control(runner, ControlMessage.PAUSE)
    assert not run.paused and runner.events.sent[-1].details["paused"] is False


def test_a_new_priority_becomes_the_batch_jobs_nice(tmp_path):
    slurm = FakeSlurm(state="PENDING")
    runner = runner_with(tmp_path, slurm)
    held(runner)
    assert control(runner, ControlMessage.PRIORITY, priority=7)
    assert slurm.calls == [("nice", "42", 200)]


def test_cancel_sends_term_to_the_whole_batch_job_before_anything_else(tmp_path):
    slurm = FakeSlurm()
    runner = runner_with(tmp_path, slurm)
    run = held(runner)
    runner._stop_batch(run, "42")
    runner._stop_batch(run, "42")  # asked twice (a cancel and the follow loop): stopped once
    assert slurm.calls == [("signal", "42", "TERM")]


def test_a_full_unit_is_busy_and_refuses_another_job(tmp_path):
    runner = runner_with(tmp_path, FakeSlurm(), max_jobs=2)
    held(runner, "one")
    assert runner.busy_with() is None
    held(runner, "two")
    assert runner.busy_with() == "one"
    message = JobMessage(job_id="three", upload="jobs/three/upload.zip", sha256="0" * 64, size=1, dispatch=1)
    with pytest.raises(UnitBusy):
        runner.start(message, 1)


def adopted_while_submitting(tmp_path, slurm: FakeSlurm) -> Run:
    """A unit killed between recording a batch job and sbatch's answer, restarted."""
    runner = runner_with(tmp_path, slurm)
    message = JobMessage(job_id="abc", upload="jobs/abc/upload.zip", sha256="0" * 64, size=1, dispatch=1)
    runner.journal.add(BatchRecord("abc", 1, "", message.encode().decode(), 60))
    run = runner._register(Run(message, 1, execution={"executor": "slurm"}))
    runner._adopted[("abc", 1)] = runner.journal.records()[0]
    own = tmp_path / "own"
    own.mkdir()
    log = JobLog(own / "log.txt", 1024 * 1024)
    runner._run_attempt(run, tmp_path / "abc-1", own, log)
    log.close()
    return run


def test_a_batch_job_submitted_just_before_the_unit_died_is_found_by_its_name_and_followed(tmp_path):
    slurm = FakeSlurm(state="COMPLETED")
    slurm.found = "77"
    run = adopted_while_submitting(tmp_path, slurm)
    assert ("find", "nias-abc") in slurm.calls
    assert (run.state, run.lost, run.execution["slurm_job_id"]) == ("succeeded", None, "77")


def test_a_submission_sbatch_never_took_loses_the_attempt(tmp_path):
    run = adopted_while_submitting(tmp_path, FakeSlurm())
    assert run.lost == "The processing unit unit-1 stopped while it submitted the batch job."
