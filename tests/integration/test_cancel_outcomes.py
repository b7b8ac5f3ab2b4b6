"""What a cancel leaves to come, on SQLite and PostgreSQL: the kept result is pending until the
attempt reports it or its lease lapses, and a pause past NIAS_MAX_PAUSE_S becomes a cancel."""
from __future__ import annotations

import time

from backend import jobs as rules
from nias.messages import ControlMessage, JobEvent
from nias.states import JobState
from tests.integration.test_store import claimed, event, new_job, set_fields


def running_job(store, settings) -> dict:
    return claimed(store, settings, new_job(store))


def test_cancelling_a_running_job_leaves_its_result_pending_until_the_attempt_reports_it(store, make_settings):
    settings = make_settings()
    job = running_job(store, settings)
    sent: list[ControlMessage] = []
    cancelled = rules.request_state(store, job["id"], "cancelled", sent.append, settings)
    assert cancelled["state"] == "cancelled" and cancelled["result_due"] > time.time()
    assert [m.action for m in sent] == [ControlMessage.CANCEL]
    rules.apply_event(store, settings, event(job, JobEvent.FINISHED, state="cancelled", exit_code=-15, result_size=99))
    done = store.get_job(job["id"])
    assert (done["state"], done["result_size"], done["result_due"]) == ("cancelled", 99, None)


def test_a_queued_job_cancelled_has_no_result_to_wait_for(store, make_settings):
    settings = make_settings()
    job = new_job(store)
    assert rules.request_state(store, job["id"], "cancelled", lambda _m: None, settings)["result_due"] is None


def test_a_pending_result_that_never_comes_stops_being_awaited_once_its_lease_lapses(store, make_settings):
    settings = make_settings()
    job = running_job(store, settings)
    rules.request_state(store, job["id"], "cancelled", lambda _m: None, settings)
    assert rules.settle_overdue_results(store, settings) == 0
    set_fields(store, job["id"], result_due=time.time() - 1)
    assert rules.settle_overdue_results(store, settings) == 1
    assert store.get_job(job["id"])["result_due"] is None


def test_a_heartbeat_of_the_cancelled_attempt_keeps_its_result_awaited(store, make_settings):
    settings = make_settings()
    job = running_job(store, settings)
    rules.request_state(store, job["id"], "cancelled", lambda _m: None, settings)
    set_fields(store, job["id"], result_due=time.time() + 1)
    rules.apply_event(store, settings, event(job, JobEvent.HEARTBEAT))
    assert store.get_job(job["id"])["result_due"] > time.time() + settings.lease_s - 5


def test_a_job_paused_past_the_limit_is_cancelled_with_the_reason(store, make_settings):
    settings = make_settings(max_pause_s=60)
    job = running_job(store, settings)
    rules.request_state(store, job["id"], "paused", lambda _m: None, settings)
    sent: list[ControlMessage] = []
    assert rules.cancel_overlong_pauses(store, settings, sent.append) == 0
    set_fields(store, job["id"], paused_at=time.time() - 61)
    assert rules.cancel_overlong_pauses(store, settings, sent.append) == 1
    done = store.get_job(job["id"])
    assert done["state"] == JobState.CANCELLED.value and done["result_due"] is not None
    assert "paused for longer than the limit of 60 s" in done["error"]
    assert store.history(job["id"])[-1]["reason"] == "paused for longer than the limit of 60 s"
    assert [(m.action, m.attempt) for m in sent] == [(ControlMessage.CANCEL, job["attempt"])]


def test_without_a_pause_limit_a_paused_job_stays_paused(store, make_settings):
    settings = make_settings(max_pause_s=0)
    job = running_job(store, settings)
    rules.request_state(store, job["id"], "paused", lambda _m: None, settings)
    set_fields(store, job["id"], paused_at=time.time() - 10 * 24 * 3600)
    assert rules.cancel_overlong_pauses(store, settings, lambda _m: None) == 0
    assert store.get_job(job["id"])["state"] == "paused"
