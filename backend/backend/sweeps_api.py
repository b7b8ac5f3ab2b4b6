"""The sweeps API: a sweep's jobs and counts, cancelling it, re-running its failed jobs and its
combined results."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, jsonify, request

from nias.errors import Conflict, NiasError
from nias.states import JobState, is_final

from backend import api_models as api
from backend.openapi import describe
from backend import jobs as job_rules
from backend.auth import is_admin, owner_filter
from backend.jobs_api import job_to_json, sweep_json
from backend.submission import check_room_for, queue_rerun
from backend.sweep_results import stream_results
from backend.sweep_view import current_jobs
from backend.uploads import parse_int_field

logger = logging.getLogger(__name__)

bp = Blueprint("sweeps", __name__, url_prefix="/api/sweeps")


class SweepNotFound(NiasError):
    """Raised when no sweep the asker may see has the given id."""

    code = "sweep_not_found"
    status = 404


def _nias():
    return current_app.extensions["nias"]


def visible_sweep(sweep_id: str) -> dict:
    """The sweep, if the asker may see it; another user's is answered like an unknown one (404)."""
    sweep = _nias().store.get_sweep(sweep_id)
    if sweep is None or (not is_admin() and sweep["owner_id"] != g.user["id"]):
        raise SweepNotFound(f"No sweep has the id {sweep_id!r}.")
    return sweep


@bp.get("")
@describe("List sweeps", {200: api.SweepPage, **api.REFUSED}, query=api.PageQuery, tag="sweeps")
def list_sweeps():
    """The most recent sweeps with their counts (each row's jobs come with `GET /api/sweeps/<id>`)."""
    page = parse_int_field(request.args.get("page"), "page", 1, 1_000_000) or 1
    per_page = parse_int_field(request.args.get("per_page"), "per_page", 1, 100) or 20
    store = _nias().store
    rows, total = store.list_sweeps(owner_filter(), limit=per_page, offset=(page - 1) * per_page)
    sweeps = []
    for sweep in rows:
        body = sweep_json(sweep["id"])
        del body["jobs"]
        sweeps.append(body)
    return jsonify({"sweeps": sweeps, "total": total, "page": page, "per_page": per_page})


@bp.get("/<sweep_id>")
@describe("One sweep and its jobs", {200: api.Sweep, **api.REFUSED}, tag="sweeps")
def get_sweep(sweep_id: str):
    visible_sweep(sweep_id)
    return jsonify(sweep_json(sweep_id))


@bp.post("/<sweep_id>/cancel")
@describe("Cancel a sweep's unfinished jobs", {200: api.Sweep, **api.REFUSED}, tag="sweeps")
def cancel_sweep(sweep_id: str):
    """Cancel every job of the sweep that has not ended; the ended ones keep their outcome."""
    visible_sweep(sweep_id)
    nias = _nias()
    cancelled = 0
    for job in current_jobs(nias.store.sweep_jobs(sweep_id)):
        cancelled += _cancel_unless_ended(nias, job["id"])
    logger.info("Sweep %s: %d jobs cancelled on request", sweep_id, cancelled)
    return jsonify({**sweep_json(sweep_id), "cancelled": cancelled})


def _cancel_unless_ended(nias, job_id: str, tries: int = 5) -> int:
    """1 once the job is cancelled; 0 if it ended first. A job that changed under the request (a
    unit claimed it at that moment) is asked again, as it now stands."""
    for _ in range(tries):
        if is_final(nias.store.get_job(job_id)["state"]):
            return 0
        try:
            job_rules.request_state(nias.store, job_id, JobState.CANCELLED.value, nias.dispatcher.send_control,
                                    nias.settings)
            return 1
        except Conflict:
            continue
    return 0


@bp.post("/<sweep_id>/rerun-failed")
@describe("Re-run a sweep's failed jobs", {200: api.Sweep, 201: api.Sweep, **api.REFUSED}, tag="sweeps")
def rerun_failed(sweep_id: str):
    """A new job, with the same parameters, for each failed job of the sweep."""
    sweep = visible_sweep(sweep_id)
    nias = _nias()
    failed = [job for job in current_jobs(nias.store.sweep_jobs(sweep_id))
              if job["state"] == JobState.FAILED.value and not job["expired_at"]]
    owner_id = sweep["owner_id"]
    check_room_for(nias.store, nias.settings, owner_id, len(failed))
    rerun = [job_to_json(queue_rerun(nias, job, owner_id)) for job in failed]
    logger.info("Sweep %s: %d failed jobs re-run", sweep_id, len(rerun))
    return jsonify({**sweep_json(sweep_id), "rerun": rerun}), 201 if rerun else 200


@bp.get("/<sweep_id>/results")
@describe("Every finished result of a sweep in one zip", {200: api.ZIP, **api.REFUSED}, tag="sweeps")
def get_results(sweep_id: str):
    """Every finished job's result in one zip, one folder per job named by its parameters; streamed."""
    visible_sweep(sweep_id)
    body = sweep_json(sweep_id)
    stream = stream_results(_nias().settings, current_jobs(_nias().store.sweep_jobs(sweep_id)), body)
    response = Response(stream, mimetype="application/zip", direct_passthrough=True)
    response.headers["Content-Disposition"] = f'attachment; filename="sweep-{sweep_id}.zip"'
    return response
