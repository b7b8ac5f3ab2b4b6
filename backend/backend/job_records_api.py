"""Keeping one's jobs in order: a short note on a job, deleting a finished job for good, and
where a job's time went (its timeline)."""
from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify

from nias.errors import BadRequest, Conflict
from nias.job_files import JobFiles
from nias.states import is_final
from nias.timeline import Hop, breakdown
from nias.web import read_json

from backend import api_models as api
from backend.auth import visible_job
from backend.jobs_api import job_json_with_position
from backend.live import feed
from backend.openapi import describe

logger = logging.getLogger(__name__)

bp = Blueprint("job_records", __name__, url_prefix="/api/jobs")

MAX_NOTE_CHARS = 200


@bp.put("/<job_id>/note")
@describe("Note a job", {200: api.Job, **api.REFUSED}, body=api.NoteChange, tag="jobs")
def put_note(job_id: str):
    """`{"note": "baseline, before the filter fix"}`; an empty note removes it."""
    note = read_json().get("note")  # checked here, to answer bad_note naming the field
    if not isinstance(note, str) or len(note.strip()) > MAX_NOTE_CHARS:
        raise BadRequest(f"note must be text of at most {MAX_NOTE_CHARS} characters.", code="bad_note", field="note")
    store = current_app.extensions["nias"].store
    job = visible_job(job_id)
    store.update_job_fields(job["id"], {}, {"note": note.strip() or None})
    fresh = store.get_job(job["id"])
    feed.publish(fresh)
    return jsonify(job_json_with_position(fresh))


def timings_json(job: dict) -> dict:
    """The job's timeline: the marks it keeps, with when it was stored and last published."""
    marks = {**(job.get("timeline") or {}), Hop.STORED.value: job["created_at"]}
    if job.get("published_at") is not None:
        marks[Hop.PUBLISHED.value] = job["published_at"]
    hops = breakdown(marks)
    for row in hops:
        row["at"] = datetime.fromtimestamp(row["at"], timezone.utc).isoformat(timespec="microseconds")
    ends = [marks[row["hop"]] for row in hops]
    return {"job_id": job["id"], "attempt": job["attempt"], "hops": hops,
            "total_ms": round((max(ends) - min(ends)) * 1000, 2) if len(ends) > 1 else None}


@bp.get("/<job_id>/timings")
@describe("When the job passed each hop from its upload to its outcome", {200: api.Timings, **api.REFUSED},
          tag="jobs")
def get_timings(job_id: str):
    """Each hop marked by the service that saw it (nias.timeline), with the milliseconds since
    the one before: where a job's time went, for admins and the bench."""
    return jsonify(timings_json(visible_job(job_id)))


@bp.delete("/<job_id>")
@describe("Delete a finished job with its files", {204: "deleted", **api.REFUSED}, tag="jobs")
def delete_job(job_id: str):
    """A finished job's record, upload, log and result, removed; 409 while it is not finished."""
    nias = current_app.extensions["nias"]
    job = visible_job(job_id)
    if not is_final(job["state"]) or job.get("result_due") is not None:
        raise Conflict(f"Job {job_id} is {job['state']}; cancel it first, then delete it.", state=job["state"])
    shutil.rmtree(JobFiles(nias.settings.jobs_dir, job["id"]).folder, ignore_errors=True)
    nias.store.delete_job(job["id"])
    logger.info("Job %s: deleted with its files", job["id"])
    return "", 204
