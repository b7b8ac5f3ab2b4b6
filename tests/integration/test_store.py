"""The job store and the rules that change job state, on SQLite and on PostgreSQL alike."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import update

from backend import jobs as rules
from backend.store import jobs as jobs_table
from nias.errors import Conflict, InvalidTransition, JobNotFound
from nias.messages import JobEvent
from nias.states import JobState


def new_job(store, *, name: str = "filter run", created_at: float | None = None, **values) -> dict:
    job_id = values.pop("id", uuid.uuid4().hex[:16])
    return store.insert_job(
        id=job_id, name=name, state=values.pop("state", "queued"), upload=f"jobs/{job_id}/upload.zip",
        upload_sha256="0" * 64, upload_size=1234, created_at=created_at or time.time(), queued_at=time.time(),
        **values,
    )


def set_fields(store, job_id: str, **values) -> None:
    """Arrange a job's columns directly (for times a test cannot wait for)."""
    with store.engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(**values))


def event(job: dict, kind: str, *, attempt: int | None = None, **fields) -> JobEvent:
    return JobEvent(job_id=job["id"], attempt=job["attempt"] if attempt is None else attempt,
                    unit=fields.pop("unit", "unit-1"), event=kind, **fields)


def claimed(store, settings, job: dict, unit: str = "unit-1") -> dict:
    current = store.get_job(job["id"])
    return rules.claim_job(store, settings, job["id"], current["dispatch"], unit)


# --- rows ------------------------------------------------------------------------------------


def test_an_inserted_job_reads_back_with_its_defaults_and_first_history_entry(store):
    job = new_job(store, name="Spike sorting", priority=4)
    assert store.get_job(job["id"]) == job
    assert (job["state"], job["attempt"], job["dispatch"], job["published"]) == ("queued", 0, 1, 0)
    assert (job["name"], job["priority"], job["upload_size"]) == ("Spike sorting", 4, 1234)
    [first] = store.history(job["id"])
    assert (first["from_state"], first["to_state"], first["at"]) == (None, "queued", job["created_at"])


def test_an_unknown_job_is_not_found(store):
    with pytest.raises(JobNotFound) as caught:
        store.get_job("0000000000000000")
    assert caught.value.status == 404


def test_jobs_are_listed_newest_first_with_the_total(store):
    ids = [new_job(store, name=f"run {i}", created_at=1000.0 + i)["id"] for i in range(3)]
    rows, total = store.list_jobs()
    assert [row["id"] for row in rows] == ids[::-1]
    assert total == 3


def test_jobs_are_listed_page_by_page(store):
    ids = [new_job(store, name=f"run {i}", created_at=1000.0 + i)["id"] for i in range(5)]
    newest_first = ids[::-1]
    pages = [store.list_jobs(limit=2, offset=offset) for offset in (0, 2, 4, 6)]
    assert [[row["id"] for row in rows] for rows, _ in pages] == [newest_first[0:2], newest_first[2:4],
                                                                  newest_first[4:], []]
    assert {total for _, total in pages} == {5}


def test_jobs_can_be_listed_by_state(store, make_settings):
    settings = make_settings()
    running = claimed(store, settings, new_job(store, name="a", created_at=1.0))
    queued = [new_job(store, name=n, created_at=t)["id"] for n, t in (("b", 2.0), ("c", 3.0))]
    rows, total = store.list_jobs(state="queued")
    assert [row["id"] for row in rows] == queued[::-1] and total == 2
    rows, total = store.list_jobs(state="running")
    assert [row["id"] for row in rows] == [running["id"]] and total == 1
    assert store.list_jobs(state="failed") == ([], 0)


def test_a_name_search_ignores_case(store):
    wanted = new_job(store, name="Filter Run 3")["id"]
    new_job(store, name="spike sorting")
    for query in ("filter run", "FILTER", "run 3", "r R"):
        rows, total = store.list_jobs(search=query)
        assert [row["id"] for row in rows] == [wanted] and total == 1, query


@pytest.mark.parametrize("query, expected", [("%", ["100% done"]), ("_", ["a_b"]), ("0%", ["100% done"]),
                                             ("\\", ["back\\slash"]), ("a_", ["a_b"])])
def test_a_name_search_takes_wildcards_literally(store, query, expected):
    for name in ("100% done", "100 percent done", "a_b", "axb", "back\\slash", "backslash"):
        new_job(store, name=name)
    rows, total = store.list_jobs(search=query)
    assert sorted(row["name"] for row in rows) == expected
    assert total == len(expected)


def test_a_list_for_an_owner_shows_only_their_jobs(store):
    mine = new_job(store, name="mine", owner_id="user-a")["id"]
    new_job(store, name="theirs", owner_id="user-b")
    rows, total = store.list_jobs(owner="user-a")
    assert [row["id"] for row in rows] == [mine] and total == 1


# --- apply_transition ------------------------------------------------------------------------


def test_a_transition_changes_the_state_and_is_recorded_in_the_history(store):
    job = new_job(store)
    changed = rules.apply_transition(store, job["id"], JobState.RUNNING, reason="started by hand",
                                     attempt=1, unit="unit-9")
    assert (changed["state"], changed["attempt"], changed["unit"]) == ("running", 1, "unit-9")
    entry = store.history(job["id"])[-1]
    assert (entry["from_state"], entry["to_state"], entry["reason"]) == ("queued", "running", "started by hand")
    assert (entry["attempt"], entry["unit"]) == (1, "unit-9")
    assert abs(entry["at"] - time.time()) < 60


def test_a_final_transition_stamps_the_end_and_drops_the_lease(store):
    job = new_job(store)
    rules.apply_transition(store, job["id"], JobState.RUNNING, attempt=1, lease_until=time.time() + 60)
    ended = rules.apply_transition(store, job["id"], JobState.FAILED, error="boom")
    assert ended["finished_at"] is not None and ended["lease_until"] is None
    assert ended["error"] == "boom"


@pytest.mark.parametrize("path, target, allowed", [
    ((), JobState.SUCCEEDED, ["cancelled", "failed", "running"]),
    ((JobState.RUNNING, JobState.SUCCEEDED), JobState.RUNNING, []),
    ((JobState.CANCELLED,), JobState.QUEUED, []),
])
def test_a_forbidden_transition_is_refused_naming_the_state_and_what_is_allowed(store, path, target, allowed):
    job = new_job(store)
    for step in path:
        rules.apply_transition(store, job["id"], step)
    before = store.get_job(job["id"])
    history = store.history(job["id"])
    with pytest.raises(InvalidTransition) as caught:
        rules.apply_transition(store, job["id"], target)
    assert caught.value.status == 409
    assert caught.value.details == {"state": before["state"], "allowed": allowed}
    assert caught.value.to_dict()["error"]["code"] == "invalid_transition"
    assert store.get_job(job["id"]) == before
    assert store.history(job["id"]) == history


def test_a_transition_whose_guard_no_longer_holds_is_a_conflict(store):
    job = new_job(store)
    with pytest.raises(Conflict) as caught:
        rules.apply_transition(store, job["id"], JobState.RUNNING, guard={"dispatch": 2})
    assert type(caught.value) is Conflict, "queued -> running is allowed: only the guard may refuse it"
    assert store.get_job(job["id"])["state"] == "queued"
    assert len(store.history(job["id"])) == 1


# --- claim_job -------------------------------------------------------------------------------


def test_a_claim_starts_the_next_attempt_on_the_unit_with_a_lease(store, make_settings):
    settings = make_settings(lease_s=45)
    job = new_job(store)
    before = time.time()
    running = rules.claim_job(store, settings, job["id"], 1, "unit-2")
    assert (running["state"], running["attempt"], running["unit"]) == ("running", 1, "unit-2")
    assert running["started_at"] >= before
    assert running["lease_until"] == pytest.approx(running["started_at"] + 45)
    assert store.history(job["id"])[-1]["reason"] == "attempt 1 on unit-2"


def test_a_job_can_be_claimed_only_once(store, make_settings):
    settings = make_settings()
    job = new_job(store)
    rules.claim_job(store, settings, job["id"], 1, "unit-1")
    with pytest.raises(Conflict) as caught:
        rules.claim_job(store, settings, job["id"], 1, "unit-2")
    assert caught.value.details["state"] == "running"
    assert store.get_job(job["id"])["unit"] == "unit-1"


def test_of_concurrent_claims_on_one_dispatch_exactly_one_wins(store, make_settings):
    settings = make_settings()
    for _ in range(5):
        job = new_job(store)
        barrier = threading.Barrier(4)
        outcomes: list = []

        def claim(unit: str) -> None:
            barrier.wait(timeout=10)
            try:
                outcomes.append(("won", rules.claim_job(store, settings, job["id"], 1, unit)["unit"]))
            except Conflict:
                outcomes.append(("conflict", unit))
            except Exception as exc:  # anything else is a failure of the test, reported below
                outcomes.append(("error", repr(exc)))

        threads = [threading.Thread(target=claim, args=(f"unit-{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        winners = [unit for outcome, unit in outcomes if outcome == "won"]
        assert sorted(outcome for outcome, _ in outcomes) == ["conflict", "conflict", "conflict", "won"], outcomes
        final = store.get_job(job["id"])
        assert (final["attempt"], final["unit"]) == (1, winners[0])
        assert [h["to_state"] for h in store.history(job["id"])] == ["queued", "running"]


def test_a_claim_with_a_stale_dispatch_is_refused(store, make_settings):
    settings = make_settings()
    job = new_job(store)
    set_fields(store, job["id"], dispatch=3)
    for stale in (1, 2, 4):
        with pytest.raises(Conflict) as caught:
            rules.claim_job(store, settings, job["id"], stale, "unit-1")
        assert f"message {stale} is stale" in caught.value.message
    assert store.get_job(job["id"])["state"] == "queued"
    assert rules.claim_job(store, settings, job["id"], 3, "unit-1")["state"] == "running"


def test_a_claim_for_an_unknown_job_is_not_found(store, make_settings):
    with pytest.raises(JobNotFound):
        rules.claim_job(store, make_settings(), "ffffffffffffffff", 1, "unit-1")


# --- apply_event -----------------------------------------------------------------------------


def test_a_heartbeat_renews_the_lease(store, make_settings):
    settings = make_settings(lease_s=30)
    job = claimed(store, settings, new_job(store))
    set_fields(store, job["id"], lease_until=time.time() - 5)
    before = time.time()
    assert rules.apply_event(store, settings, event(job, JobEvent.HEARTBEAT)) is None
    renewed = store.get_job(job["id"])
    assert renewed["lease_until"] >= before + 30
    assert renewed["state"] == "running"


def test_a_heartbeat_carries_the_progress_of_the_job(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store))
    rules.apply_event(store, settings, event(job, JobEvent.HEARTBEAT,
                                             details={"progress": 0.42, "message": "channel 3", "active_s": 8.0}))
    now = store.get_job(job["id"])
    assert (now["progress"], now["progress_message"]) == (0.42, "channel 3")


def test_a_finished_event_moves_the_job_to_succeeded_with_its_fields(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store))
    finished = rules.apply_event(store, settings, event(
        job, JobEvent.FINISHED, state="succeeded", exit_code=0, result_size=4096, at=job["started_at"] + 12.5,
        details={"env_seconds": 0.8, "env_cached": True, "run_seconds": 11.0}))
    assert finished["state"] == "succeeded"
    assert (finished["exit_code"], finished["result_size"], finished["error"]) == (0, 4096, None)
    assert finished["finished_at"] == pytest.approx(job["started_at"] + 12.5)
    assert (finished["env_seconds"], finished["env_cached"], finished["run_seconds"]) == (0.8, True, 11.0)
    assert finished["lease_until"] is None
    assert store.history(job["id"])[-1]["to_state"] == "succeeded"


def test_a_finished_event_with_a_failure_moves_the_job_to_failed_with_the_error(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store))
    failed = rules.apply_event(store, settings, event(job, JobEvent.FINISHED, state="failed", exit_code=1,
                                                      error="ValueError: bad channel"))
    assert (failed["state"], failed["exit_code"], failed["error"]) == ("failed", 1, "ValueError: bad channel")
    assert store.history(job["id"])[-1]["reason"] == "ValueError: bad channel"


def test_a_finished_event_without_a_state_counts_as_failed(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store))
    assert rules.apply_event(store, settings, event(job, JobEvent.FINISHED, exit_code=137))["state"] == "failed"


def test_an_event_for_a_stale_attempt_is_ignored(store, make_settings):
    settings = make_settings(job_retries=2)
    first = claimed(store, settings, new_job(store), unit="unit-1")
    rules.apply_event(store, settings, event(first, JobEvent.LOST, error="unit-1 died."))
    second = claimed(store, settings, first, unit="unit-2")
    assert second["attempt"] == 2
    late = event(first, JobEvent.FINISHED, attempt=1, state="succeeded", exit_code=0, unit="unit-1")
    assert rules.apply_event(store, settings, late) is None
    set_fields(store, second["id"], lease_until=1.0)
    rules.apply_event(store, settings, event(first, JobEvent.HEARTBEAT, attempt=1, unit="unit-1"))
    now = store.get_job(second["id"])
    assert (now["state"], now["attempt"], now["unit"], now["lease_until"]) == ("running", 2, "unit-2", 1.0)


def test_an_event_for_a_finished_job_changes_nothing(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store))
    rules.apply_event(store, settings, event(job, JobEvent.FINISHED, state="succeeded", exit_code=0))
    done = store.get_job(job["id"])
    for kind in (JobEvent.FINISHED, JobEvent.LOST, JobEvent.HEARTBEAT):
        assert rules.apply_event(store, settings, event(job, kind, state="failed", exit_code=1)) is None
    assert store.get_job(job["id"]) == done


def test_a_finished_event_for_a_cancelled_job_keeps_it_cancelled(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store))
    rules.apply_transition(store, job["id"], JobState.CANCELLED, reason="cancelled on request")
    rules.apply_event(store, settings, event(job, JobEvent.FINISHED, state="cancelled", exit_code=-15,
                                             result_size=10))
    now = store.get_job(job["id"])
    assert (now["state"], now["exit_code"], now["result_size"]) == ("cancelled", -15, 10)


def test_an_event_for_an_unknown_job_is_not_found(store, make_settings):
    ghost = {"id": "ffffffffffffffff", "attempt": 1}
    with pytest.raises(JobNotFound):
        rules.apply_event(store, make_settings(), event(ghost, JobEvent.HEARTBEAT))


@pytest.mark.parametrize("retries", [0, 2])
def test_a_lost_attempt_is_queued_again_until_the_retries_are_spent_then_failed(store, make_settings, retries):
    settings = make_settings(job_retries=retries)
    job = new_job(store)
    for attempt in range(1, retries + 2):
        running = claimed(store, settings, job, unit=f"unit-{attempt}")
        assert running["attempt"] == attempt
        after = rules.apply_event(store, settings, event(running, JobEvent.LOST, unit=f"unit-{attempt}",
                                                         error=f"The processing unit unit-{attempt} died."))
        if attempt <= retries:
            assert (after["state"], after["dispatch"], after["unit"], after["lease_until"]) == \
                ("queued", attempt + 1, None, None)
            assert store.history(job["id"])[-1]["reason"] == f"The processing unit unit-{attempt} died. Queued again."
    final = store.get_job(job["id"])
    assert final["state"] == "failed"
    assert final["attempt"] == retries + 1
    assert final["error"].startswith(f"The processing unit unit-{retries + 1} died.")
    assert f"tried {retries + 1} times" in final["error"]
    assert [h["to_state"] for h in store.history(job["id"])] == \
        ["queued"] + ["running", "queued"] * retries + ["running", "failed"]


def test_a_lost_event_without_an_error_still_names_a_reason(store, make_settings):
    settings = make_settings(job_retries=0)
    job = claimed(store, settings, new_job(store))
    failed = rules.apply_event(store, settings, event(job, JobEvent.LOST))
    assert failed["state"] == "failed"
    assert "stopped during the job" in failed["error"]


# --- leases ----------------------------------------------------------------------------------


def test_a_job_whose_lease_passed_is_queued_again(store, make_settings):
    settings = make_settings(job_retries=2)
    lapsed = claimed(store, settings, new_job(store), unit="unit-7")
    alive = claimed(store, settings, new_job(store), unit="unit-8")
    set_fields(store, lapsed["id"], lease_until=time.time() - 1)
    assert rules.expire_leases(store, settings) == 1
    requeued = store.get_job(lapsed["id"])
    assert (requeued["state"], requeued["dispatch"], requeued["unit"]) == ("queued", 2, None)
    assert "unit-7 stopped answering" in store.history(lapsed["id"])[-1]["reason"]
    assert store.get_job(alive["id"])["state"] == "running"
    assert rules.expire_leases(store, settings) == 0


def test_a_lapsed_lease_with_no_retries_left_fails_the_job(store, make_settings):
    settings = make_settings(job_retries=0)
    job = claimed(store, settings, new_job(store), unit="unit-7")
    set_fields(store, job["id"], lease_until=time.time() - 1)
    assert rules.expire_leases(store, settings) == 1
    failed = store.get_job(job["id"])
    assert failed["state"] == "failed" and "unit-7 stopped answering" in failed["error"]


def test_extending_leases_gives_every_running_job_a_fresh_one(store, make_settings):
    settings = make_settings()
    running = claimed(store, settings, new_job(store))
    queued = new_job(store)
    set_fields(store, running["id"], lease_until=1.0)
    until = time.time() + 120
    store.extend_leases(until)
    assert store.get_job(running["id"])["lease_until"] == pytest.approx(until)
    assert store.get_job(queued["id"])["lease_until"] is None
    assert rules.expire_leases(store, settings) == 0


# --- the outbox ------------------------------------------------------------------------------


def test_a_new_job_waits_to_be_published_until_it_is_marked(store):
    older = new_job(store, created_at=1.0)
    newer = new_job(store, created_at=2.0)
    assert [job["id"] for job in store.jobs_to_publish()] == [older["id"], newer["id"]]
    assert [job["id"] for job in store.jobs_to_publish(limit=1)] == [older["id"]]
    store.mark_published(older["id"], 1)
    assert [job["id"] for job in store.jobs_to_publish()] == [newer["id"]]
    assert store.get_job(older["id"])["published"] == 1


def test_a_job_queued_again_is_published_again_and_a_running_one_never(store, make_settings):
    settings = make_settings(job_retries=1)
    job = new_job(store)
    store.mark_published(job["id"], 1)
    running = claimed(store, settings, job)
    assert store.jobs_to_publish() == []
    rules.apply_event(store, settings, event(running, JobEvent.LOST, error="lost."))
    [again] = store.jobs_to_publish()
    assert (again["id"], again["dispatch"], again["published"]) == (job["id"], 2, 1)
    store.mark_published(job["id"], 2)
    assert store.jobs_to_publish() == []


def test_a_users_storage_counts_the_kept_logs_beside_uploads_and_results(store, make_settings):
    settings = make_settings()
    job = claimed(store, settings, new_job(store, owner_id="user-logs"))
    assert store.storage_used("user-logs") == 1234
    rules.apply_event(store, settings, event(job, JobEvent.FINISHED, state="succeeded", result_size=100,
                                             details={"log_bytes": 5000}))
    assert store.get_job(job["id"])["log_size"] == 5000
    assert store.storage_used("user-logs") == 1234 + 100 + 5000
