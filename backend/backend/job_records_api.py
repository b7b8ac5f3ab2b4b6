"""Keeping one's jobs in order: a short note on a job, and deleting a finished job for good."""
from __future__ import annotations

import logging
import shutil

from flask import Blueprint, current_app, jsonify

from nias.errors import BadRequest, Conflict
from nias.job_files import JobFiles
from nias.states import is_final
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
