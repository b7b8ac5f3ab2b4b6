"""The Slurm commands a Slurm unit runs (process_unit/slurm.py), against the real one-node test
cluster: submit and read back, suspend and resume as root, the refusal an ordinary account meets
(a real non-admin user, `nobody`), a new Nice, and a node failure that loses the attempt."""
from __future__ import annotations

import os
import subprocess

import pytest

from nias.errors import SlurmFailed
from process_unit.batch_outcome import read_outcome
from process_unit.slurm import Slurm
from tests.support.stack import wait_until
from tools.slurm_cluster import NODE

@pytest.fixture
def slurm(slurm_cluster):
    return Slurm({**os.environ, **slurm_cluster.environment})


@pytest.fixture
def sleeper(slurm, tmp_path):
    script = tmp_path / "sleep.sh"
    script.write_text("#!/bin/sh\nexec sleep 120\n")
    batch_id = slurm.submit(script, ["--job-name=nias-test", f"--output={tmp_path / 'out'}", "--no-requeue"])
    wait_until(lambda: slurm.show(batch_id).state == "RUNNING", timeout_s=60, message="the batch job running")
    yield batch_id
    slurm.cancel(batch_id)


def test_root_may_suspend_resume_and_renice_a_batch_job(slurm, sleeper):
    assert slurm.pause_refusal() is None
    slurm.suspend(sleeper)
    assert slurm.show(sleeper).state == "SUSPENDED"
    slurm.resume(sleeper)
    assert slurm.show(sleeper).state == "RUNNING"
    slurm.set_nice(sleeper, 300)
    assert slurm.show(sleeper).nice == 300


def test_an_ordinary_account_is_told_it_may_not_suspend_and_slurm_refuses_it(slurm_cluster, sleeper):
    as_nobody = Slurm({**os.environ, **slurm_cluster.environment}, as_user="nobody")
    refusal = as_nobody.pause_refusal()
    assert "account nobody is not one" in refusal and "sacctmgr" in refusal
    with pytest.raises(SlurmFailed, match="Access/permission denied"):
        as_nobody.suspend(sleeper)


def test_a_job_slurm_does_not_know_reads_as_none(slurm):
    assert slurm.show("999999") is None


def test_a_live_batch_job_is_found_by_its_name(slurm, sleeper):
    assert slurm.find("nias-test") == sleeper
    assert slurm.find("nias-nothing-of-that-name") == ""


def test_a_node_that_fails_under_a_batch_job_loses_the_attempt(slurm, slurm_cluster, sleeper):
    from tests.support.slurm import slurm as run
    run(slurm_cluster, "scontrol", "update", f"NodeName={NODE}", "State=DOWN", "Reason=test-node-failure")
    try:
        job = wait_until(lambda: (found := slurm.show(sleeper)) and not found.live and found, timeout_s=60,
                         message="the batch job ended by the node failure")
    finally:  # back in service (ReturnToService=2 may have done it already: then scontrol refuses, harmlessly)
        subprocess.run(["scontrol", "update", f"NodeName={NODE}", "State=RESUME"], capture_output=True, timeout=30,
                       env={**os.environ, **slurm_cluster.environment})
    assert job.state == "NODE_FAIL"
    outcome = read_outcome(job, batch_id=sleeper, cancelled=False, timed_out=False, timeout_s=60, memory_mb=64,
                           tail=[])
    assert outcome.lost.startswith(f"The cluster lost batch job {sleeper} (NODE_FAIL")
    wait_until(lambda: run(slurm_cluster, "sinfo", "-h", "-n", NODE, "-o", "%T").strip() == "idle", timeout_s=60,
               message="the node back in service")
