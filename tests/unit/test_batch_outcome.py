"""What Slurm's answers mean for an attempt: `scontrol show job -o` and `sacct` lines as Slurm 22.05
prints them (the first recorded on the test cluster; OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, BOOT_FAIL
and PREEMPTED, which the one-node test cluster with task/none cannot produce, recorded as Slurm words
them), and the outcome each becomes."""
from __future__ import annotations

import pytest

from process_unit.batch_outcome import read_outcome
from process_unit.slurm import BatchJob, parse_sacct, parse_show_job

RECORDED_RUNNING = (
    "JobId=1 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) "
    "QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 "
    "ExitCode=0:0 RunTime=00:01:05 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-12-03T06:15:25 "
    "Partition=nias AllocNode:Sid=localhost:7353 ReqNodeList=(null) ExcNodeList=(null) NodeList=localhost "
    "BatchHost=localhost NumNodes=1 NumCPUs=1 Command=(null) WorkDir=/srv/my work StdErr=/srv/my work/slurm-1.out "
    "StdIn=/dev/null StdOut=/srv/my work/slurm-1.out Power= ")


def shown(state: str, exit_code: str = "0:0", reason: str = "None", node: str = "c12") -> BatchJob:
    return parse_show_job(f"JobId=42 JobName=nias-abc JobState={state} Reason={reason} ExitCode={exit_code} "
                          f"RunTime=00:00:07 NodeList={node} Nice=400")


def outcome(job: BatchJob | None, **overrides):
    given = {"batch_id": "42", "cancelled": False, "timed_out": False, "timeout_s": 5, "memory_mb": 64,
             "tail": ["Traceback (most recent call last):", "MemoryError"]}
    return read_outcome(job, **{**given, **overrides})


def test_a_recorded_scontrol_line_gives_the_state_node_run_time_and_nice_even_with_spaces_in_paths():
    job = parse_show_job(RECORDED_RUNNING)
    assert (job.job_id, job.state, job.reason, job.node, job.run_seconds, job.nice) == (
        "1", "RUNNING", "None", "localhost", 65.0, 0)
    assert job.live and job.exit_code == 0 and job.signal is None


def test_a_pending_job_shows_its_reason_and_no_node():
    job = shown("PENDING", reason="Resources", node="(null)")
    assert (job.state, job.reason, job.node, job.live) == ("PENDING", "Resources", "", True)


def test_a_line_without_a_job_is_none():
    assert parse_show_job("slurm_load_jobs error: Invalid job id specified") is None


def test_sacct_lines_give_the_final_state_exit_code_and_node():
    text = "42|OUT_OF_MEMORY|0:125|None|c12\n41|COMPLETED|0:0|None|c11\n"
    job = parse_sacct(text, "42")
    assert (job.state, job.exit_code, job.signal, job.node) == ("OUT_OF_MEMORY", None, 125, "c12")
    assert parse_sacct("43|CANCELLED by 1000|0:15|None|None assigned\n", "43").state == "CANCELLED"
    assert parse_sacct(text, "7") is None


def test_completed_with_exit_zero_succeeds():
    assert outcome(shown("COMPLETED")).state == "succeeded"


def test_a_non_zero_exit_fails_with_its_code_and_the_stderr_tail():
    result = outcome(shown("FAILED", "3:0"))
    assert (result.state, result.exit_code, result.lost) == ("failed", 3, None)
    assert result.error.startswith("code.py exited with code 3.") and "MemoryError" in result.error


def test_a_signal_fails_the_job_naming_it():
    result = outcome(shown("FAILED", "0:9"))
    assert (result.state, result.exit_code) == ("failed", 137) and "signal SIGKILL" in result.error


@pytest.mark.parametrize("state, words", [
    ("TIMEOUT", "at its time limit (TIMEOUT"),
    ("OUT_OF_MEMORY", "more than its memory limit of 64 MB and Slurm stopped it (OUT_OF_MEMORY)"),
    ("CANCELLED", "was cancelled on the cluster (CANCELLED), not through NIAS"),
    ("DEADLINE", "ended DEADLINE"),
])
def test_slurms_own_ends_fail_the_job_in_words(state, words):
    result = outcome(shown(state, "0:15" if state == "CANCELLED" else "0:0"))
    assert result.state == "failed" and result.lost is None and words in result.error


@pytest.mark.parametrize("state", ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED"])
def test_a_batch_job_the_cluster_lost_loses_the_attempt_so_the_job_is_queued_again(state):
    result = outcome(shown(state, reason="NodeDown"))
    assert result.lost == f"The cluster lost batch job 42 ({state}, NodeDown)."


def test_a_job_slurm_forgot_without_accounting_loses_the_attempt():
    assert "no longer knows batch job 42" in outcome(None).lost


def test_a_cancel_on_request_or_nias_time_limit_wins_over_what_slurm_says():
    assert outcome(shown("CANCELLED", "0:15"), cancelled=True).state == "cancelled"
    timed = outcome(shown("FAILED", "143:0"), timed_out=True)
    assert timed.state == "failed" and "longer than its time limit of 5 s" in timed.error
