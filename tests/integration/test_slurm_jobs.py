"""The backend's side of Slurm units, on SQLite and PostgreSQL: the job's `execution` as heartbeats
and outcomes report it, a pause the unit cannot apply refused with 409 and its reason, a priority
change that reaches a batch job still waiting, and an attempt given up on that is told to stop."""
from __future__ import annotations

import time

import pytest

from backend import jobs as rules
from nias.errors import Conflict
from nias.messages import ControlMessage, JobEvent
from tests.integration.test_store import claimed, event, new_job

PENDING = {"executor": "slurm", "slurm_job_id": "42", "slurm_state": "PENDING", "reason": "Resources", "node": None}
RUNNING = {"executor": "slurm", "slurm_job_id": "42", "slurm_state": "RUNNING", "reason": None, "node": "c12"}
REFUSAL = "This cluster lets only its operators suspend jobs (scontrol suspend), and the unit's account nias is not one."


def slurm_job(store, settings, execution: dict) -> dict:
    job = claimed(store, settings, new_job(store), unit="hpc-1")
    rules.apply_event(store, settings, event(job, JobEvent.HEARTBEAT, unit="hpc-1",
                                             details={"paused": False, "active_s": 1.0, "execution": execution}))
    return store.get_job(job["id"])


def test_a_heartbeat_records_where_the_batch_job_stands_and_the_outcome_keeps_it(store, make_settings):
    settings = make_settings()
    job = slurm_job(store, settings, PENDING)
    assert job["execution"] == PENDING
    rules.apply_event(store, settings, event(job, JobEvent.HEARTBEAT, unit="hpc-1", details={"execution": RUNNING}))
    assert store.get_job(job["id"])["execution"] == RUNNING
    done = {**RUNNING, "slurm_state": "COMPLETED"}
    rules.apply_event(store, settings, event(job, JobEvent.FINISHED, unit="hpc-1", state="succeeded", exit_code=0,
                                             details={"execution": done}))
    finished = store.get_job(job["id"])
    assert (finished["state"], finished["execution"]) == ("succeeded", done)


def test_pausing_a_job_whose_unit_may_not_suspend_answers_409_with_the_units_reason(store, make_settings):
    settings = make_settings()
    job = slurm_job(store, settings, RUNNING)
    store.record_unit("hpc-1", "busy", job["id"], time.time(), "none", executor="slurm", pause_refusal=REFUSAL)
    sent: list[ControlMessage] = []
    with pytest.raises(Conflict) as refused:
        rules.request_state(store, job["id"], "paused", sent.append, settings)
    assert refused.value.status == 409 and REFUSAL in refused.value.message
    assert store.get_job(job["id"])["state"] == "running" and sent == []


def test_pausing_a_job_whose_unit_may_suspend_sends_the_pause(store, make_settings):
    settings = make_settings()
    job = slurm_job(store, settings, RUNNING)
    store.record_unit("hpc-1", "busy", job["id"], time.time(), "none", executor="slurm", pause_refusal=None)
    sent: list[ControlMessage] = []
    assert rules.request_state(store, job["id"], "paused", sent.append, settings)["state"] == "paused"
    assert [m.action for m in sent] == [ControlMessage.PAUSE]


def test_a_new_priority_for_a_batch_job_still_pending_is_kept_and_sent_to_its_unit(store, make_settings):
    settings = make_settings()
    job = slurm_job(store, settings, PENDING)
    sent: list[ControlMessage] = []
    changed = rules.requeue_with_priority(store, job["id"], 7, send_control=sent.append)
    assert (changed["state"], changed["priority"]) == ("running", 7)
    assert [(m.action, m.priority, m.attempt) for m in sent] == [(ControlMessage.PRIORITY, 7, job["attempt"])]


def test_a_new_priority_for_a_batch_job_already_running_is_refused(store, make_settings):
    settings = make_settings()
    job = slurm_job(store, settings, RUNNING)
    with pytest.raises(Conflict):
        rules.requeue_with_priority(store, job["id"], 7, send_control=lambda _m: None)


def test_a_heartbeat_from_an_attempt_given_up_on_tells_its_unit_to_stop_it(store, make_settings):
    settings = make_settings()
    job = slurm_job(store, settings, RUNNING)
    rules.retry_or_fail(store, settings, job, "The processing unit hpc-1 stopped answering.")
    sent: list[ControlMessage] = []
    rules.apply_event(store, settings, event(job, JobEvent.HEARTBEAT, unit="hpc-1"), sent.append)
    assert [(m.action, m.attempt) for m in sent] == [(ControlMessage.CANCEL, job["attempt"])]


def test_a_batch_jobs_heartbeat_holds_the_attempt_for_the_slurm_lease_a_local_ones_for_the_lease(
        store, make_settings):
    settings = make_settings(lease_s=60, slurm_lease_s=600)
    job = slurm_job(store, settings, RUNNING)
    assert store.get_job(job["id"])["lease_until"] > time.time() + 500
    local = claimed(store, settings, new_job(store))
    rules.apply_event(store, settings, event(local, JobEvent.HEARTBEAT, details={"execution": {"executor": "local"}}))
    assert store.get_job(local["id"])["lease_until"] < time.time() + 61
