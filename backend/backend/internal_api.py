"""Endpoints for the other NIAS services (consumers), not for researchers."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from nias.errors import BadRequest
from nias.web import read_json

from backend import jobs as job_rules
from backend.jobs_api import job_to_json

bp = Blueprint("internal", __name__, url_prefix="/internal")


@bp.post("/jobs/<job_id>/claim")
def claim_job(job_id: str):
    """A consumer asks to run a job it received: 200 with the attempt, 409 if stale, 404 if unknown."""
    body = read_json()
    dispatch, unit = body.get("dispatch"), body.get("unit")
    if not isinstance(dispatch, int) or not isinstance(unit, str) or not unit:
        raise BadRequest("A claim needs 'dispatch' (an integer) and 'unit' (a name).")
    nias = current_app.extensions["nias"]
    job = job_rules.claim_job(nias.store, nias.settings, job_id, dispatch, unit)
    return jsonify({**job_to_json(job), "attempt": job["attempt"]})
