"""The outcome a unit sends with its result, through the backend's app on the real job store: a
unit that dies after its result was kept but before its outcome was published does not make the
job run again; the kept result's outcome ends it. A result without its outcome, an outcome of
another attempt, or one that is not an outcome, change nothing of that."""
from __future__ import annotations

import dataclasses
import hashlib
import time

from backend import jobs as rules
from backend.app import create_app
from nias.internal import OUTCOME_HEADER, SHA256_HEADER, UNIT_HEADER, encode_outcome, result_path
from nias.job_files import JobFiles
from nias.messages import JobEvent
from nias.web import internal_headers
from tests.integration.test_store import claimed, new_job, set_fields

RESULT = b"PK\x05\x06" + b"\0" * 18  # an empty zip


def _backend(store, make_settings):
    settings = make_settings(database_url=store.url, internal_token="t" * 32, job_retries=2)
    return settings, create_app(settings).test_client()


def _put(client, settings, job: dict, outcome: JobEvent | None, header: str | None = None):
    headers = {**internal_headers(settings), UNIT_HEADER: job["unit"], SHA256_HEADER: hashlib.sha256(RESULT).hexdigest(),
               "Content-Type": "application/zip"}
    if outcome is not None or header is not None:
        headers[OUTCOME_HEADER] = header if header is not None else encode_outcome(outcome)
    return client.put(result_path(job["id"], job["attempt"]), data=RESULT, headers=headers)


def _finished(job: dict, **fields) -> JobEvent:
    return JobEvent(job_id=job["id"], attempt=job["attempt"], unit=job["unit"], event=JobEvent.FINISHED,
                    state="succeeded", exit_code=0, at=time.time() - 30, result_size=len(RESULT),
                    details={"log_bytes": 12, "run_seconds": 1.5, "result_files": ["a"] * 5000}, **fields)


def test_a_unit_that_dies_after_its_result_was_kept_ends_the_job_with_the_outcome_sent_with_it(store, make_settings):
    settings, client = _backend(store, make_settings)
    job = claimed(store, settings, new_job(store), unit="unit-3")
    outcome = _finished(job, error="x" * 3000)
    answer = _put(client, settings, job, outcome)
    assert answer.status_code == 200, answer.get_json()
    set_fields(store, job["id"], lease_until=time.time() - 1)  # the unit died before it published the outcome
    assert rules.expire_leases(store, settings) == 1
    done = store.get_job(job["id"])
    assert (done["state"], done["attempt"], done["exit_code"], done["run_seconds"]) == ("succeeded", 1, 0, 1.5)
    assert abs(done["finished_at"] - outcome.at) < 0.01  # the unit's time, not the time the lease ran out
    assert done["error"] == "x" * 500  # clipped to fit a header
    run = JobFiles(settings.jobs_dir, job["id"]).run(1)
    assert run.result.read_bytes() == RESULT and not run.outcome.exists()
    assert [t["to_state"] for t in store.history(job["id"])] == ["queued", "running", "succeeded"]


def test_the_outcome_published_after_all_applies_once_and_the_lease_then_changes_nothing(store, make_settings):
    settings, client = _backend(store, make_settings)
    job = claimed(store, settings, new_job(store), unit="unit-3")
    outcome = _finished(job)
    assert _put(client, settings, job, outcome).status_code == 200
    rules.apply_event(store, settings, outcome)
    set_fields(store, job["id"], lease_until=time.time() - 1)
    assert rules.expire_leases(store, settings) == 0
    assert [t["to_state"] for t in store.history(job["id"])] == ["queued", "running", "succeeded"]


def test_a_result_sent_without_an_outcome_still_runs_the_job_again_when_its_unit_dies(store, make_settings):
    settings, client = _backend(store, make_settings)
    job = claimed(store, settings, new_job(store), unit="unit-3")
    assert _put(client, settings, job, None).status_code == 200
    set_fields(store, job["id"], lease_until=time.time() - 1)
    assert rules.expire_leases(store, settings) == 1
    assert store.get_job(job["id"])["state"] == "queued"


def test_an_outcome_of_another_attempt_or_unit_or_not_an_outcome_is_refused_and_nothing_is_kept(store, make_settings):
    settings, client = _backend(store, make_settings)
    job = claimed(store, settings, new_job(store), unit="unit-3")
    other_attempt = dataclasses.replace(_finished(job), attempt=2)
    other_unit = dataclasses.replace(_finished(job), unit="unit-4")
    heartbeat = dataclasses.replace(_finished(job), event=JobEvent.HEARTBEAT)
    for outcome, header in ((other_attempt, None), (other_unit, None), (heartbeat, None), (None, "not base64!")):
        answer = _put(client, settings, job, outcome, header)
        assert answer.status_code == 400, answer.get_json()
        assert answer.get_json()["error"]["code"] == "bad_request"
    run = JobFiles(settings.jobs_dir, job["id"]).run(1)
    assert not run.result.exists() and not run.outcome.exists()
