"""What a Slurm unit asks of Slurm for a job (the sbatch options and the batch script), the priority
as Nice, the settings behind them, the journal of batch jobs and the follower of their output."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nias.errors import ConfigurationError
from nias.messages import JobMessage
from nias.settings import load_settings
from process_unit.batch_journal import BatchJournal, BatchRecord
from process_unit.batch_output import OutputFollower
from process_unit.sandbox import limits_from
from process_unit.slurm import nice_for
from process_unit.slurm_runner import batch_options, batch_script

MESSAGE = JobMessage(job_id="abc123", upload="jobs/abc123/upload.zip", sha256="0" * 64, size=10, dispatch=1,
                     priority=5, pool="cluster", limits={"memory_mb": 512})


def slurm_settings(**env: str):
    return load_settings({"NIAS_EXECUTOR": "slurm", "NIAS_SLURM_WORK_DIR": "/scratch/nias", **env})


def options_for(settings, timeout_s: int = 5) -> list[str]:
    limits = limits_from(settings).tightened(MESSAGE.limits)
    return batch_options(settings, MESSAGE, limits, timeout_s, Path("/scratch/nias/hpc-1/abc123-1"))


def test_a_job_becomes_a_named_batch_job_with_its_limits_in_whole_minutes_and_no_inherited_environment():
    options = options_for(slurm_settings(), timeout_s=61)
    assert options == ["--job-name=nias-abc123", "--output=/scratch/nias/hpc-1/abc123-1/slurm.out",
                       "--chdir=/scratch/nias/hpc-1/abc123-1/project", "--export=NONE", "--no-requeue",
                       "--ntasks=1", "--time=2", "--mem=512M", "--nice=400"]


def test_a_five_second_limit_asks_slurm_for_one_minute():
    assert "--time=1" in options_for(slurm_settings(), timeout_s=5)


def test_cpus_gpus_partition_account_and_the_admins_options_are_passed_on():
    settings = slurm_settings(NIAS_JOB_CPUS="1.5", NIAS_JOB_GPUS="2", NIAS_SLURM_PARTITION="batch",
                              NIAS_SLURM_ACCOUNT="lab42", NIAS_SLURM_OPTIONS="--qos=long --constraint='avx2&ib'")
    assert options_for(settings)[-6:] == ["--cpus-per-task=2", "--gres=gpu:2", "--partition=batch",
                                          "--account=lab42", "--qos=long", "--constraint=avx2&ib"]


def test_each_pool_may_have_a_partition_of_its_own():
    settings = slurm_settings(NIAS_SLURM_PARTITION="cluster=batch, gpu=gpu-a100")
    assert (settings.slurm_partition_for("cluster"), settings.slurm_partition_for("gpu"),
            settings.slurm_partition_for("other")) == ("batch", "gpu-a100", "")
    assert "--partition=batch" in options_for(settings)


def test_a_slurm_unit_works_and_builds_environments_in_the_folder_the_compute_nodes_see():
    settings = slurm_settings(NIAS_UNIT_NAME="hpc-1", NIAS_SLURM_MAX_JOBS="6")
    assert settings.unit_work_dir == Path("/scratch/nias/hpc-1")
    assert settings.environments_dir == Path("/scratch/nias/envs")
    assert settings.unit_capacity == 6 and load_settings({}).unit_capacity == 1


def test_a_slurm_unit_without_a_work_dir_or_an_unknown_executor_fails_at_start_naming_the_variable():
    with pytest.raises(ConfigurationError, match="NIAS_SLURM_WORK_DIR"):
        load_settings({"NIAS_EXECUTOR": "slurm"})
    with pytest.raises(ConfigurationError, match="NIAS_EXECUTOR"):
        load_settings({"NIAS_EXECUTOR": "kubernetes"})


def test_the_batch_script_sets_only_the_jobs_environment_quoted_and_execs_code_py(tmp_path):
    script = batch_script(Path("/scratch/p q"), Path("/envs/x/bin/python"), {"HOME": "/scratch/p q", "A": "it's"})
    assert script.splitlines() == ["#!/bin/sh", "export A='it'\"'\"'s'", "export HOME='/scratch/p q'",
                                   "cd '/scratch/p q' || exit 111", "exec /envs/x/bin/python code.py"]


def test_a_higher_priority_is_a_lower_nice_and_never_a_negative_one():
    assert [nice_for(p) for p in (0, 5, 9, 10)] == [900, 400, 0, 0]


def test_the_journal_keeps_recorded_batch_jobs_until_they_are_removed(tmp_path):
    journal = BatchJournal(tmp_path / "batch-jobs.json")
    first, second = (BatchRecord("a", 1, "41", "{}", 60), BatchRecord("b", 2, "42", "{}", 60))
    journal.add(first)
    journal.add(second)
    assert BatchJournal(tmp_path / "batch-jobs.json").records() == [first, second]
    journal.remove("a", 1)
    assert journal.records() == [second] and second.folder == "b-2"


def test_an_unreadable_journal_adopts_nothing(tmp_path):
    (tmp_path / "batch-jobs.json").write_text("{not json")
    assert BatchJournal(tmp_path / "batch-jobs.json").records() == []


def test_the_output_follower_waits_for_output_and_ends_after_the_last_once_finished(tmp_path):
    path = tmp_path / "slurm.out"
    follower = OutputFollower(path)
    pieces: list[bytes] = []
    reader = threading.Thread(target=lambda: pieces.extend(iter(lambda: follower.read(1024), b"")))
    reader.start()
    with open(path, "ab", buffering=0) as output:
        output.write(b"one\ntw")
        output.write(b"o\nno newline at the end")
    follower.finish()
    reader.join(10)
    assert b"".join(pieces) == b"one\ntwo\nno newline at the end" and follower.offset == path.stat().st_size


def test_the_output_follower_goes_on_from_where_a_restarted_unit_left_off(tmp_path):
    path = tmp_path / "slurm.out"
    path.write_bytes(b"copied before\nnew line\n")
    follower = OutputFollower(path, offset=len(b"copied before\n"))
    follower.finish()
    assert follower.read(1024) == b"new line\n" and follower.read(1024) == b""
