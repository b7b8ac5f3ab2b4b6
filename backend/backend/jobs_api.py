"""The public jobs API: submit, list, read, result and log."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for

from nias.errors import BadRequest, BadUpload, Conflict, NiasError
from nias.settings import Settings
from nias.states import JobState, is_final
from nias.job_files import JobFiles, RunFiles

from backend import api_models as api
from backend.openapi import describe
from backend.auth import current_user, owner_filter, visible_job
from backend.datasets import resolve_datasets
from backend.dry_run import check_project, zip_refused
from backend.live import feed
from backend.provenance_api import job_provenance
from backend.pools import choose_pool, live_pools, waiting_for
from backend.submission import Submission, check_room_for, queue_job, queue_sweep
from backend.sweep_view import sweep_to_json
from backend.sweeps import checked_params, expand_sweep, parse_json_field
from backend.uploads import (discard_body, parse_flag, parse_int_field, receive_upload, refuse_unread, too_many_uploads,
                             uploads_in_flight)

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

MAX_PER_PAGE = 100
MAX_WAIT_S = 60
# The resource limits a job may lower, named as the unit's sandbox and NIAS_JOB_<NAME> name them.
LIMIT_FIELDS = ("memory_mb", "cpu_s", "processes", "open_files", "file_mb")


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def _paused_seconds(job: dict, now: float) -> float:
    return (job["paused_seconds"] or 0.0) + (now - job["paused_at"] if job["paused_at"] else 0.0)


def elapsed_seconds(job: dict, now: float) -> float | None:
    """Run time of the current attempt, paused time excluded."""
    if not job["started_at"] or job["state"] == JobState.QUEUED.value:
        return None
    end = job["finished_at"] or now
    return max(end - job["started_at"] - _paused_seconds(job, now), 0.0)


def eta_seconds(job: dict, elapsed: float | None) -> float | None:
    """From the rate of progress so far; None when there is no rate to go by."""
    progress, at = job["progress"], job["progress_active_s"]
    if is_final(job["state"]) or not progress or at is None or elapsed is None or progress >= 1:
        return None
    return max(at * (1 - progress) / progress - max(elapsed - at, 0.0), 0.0)


def pause_deadline(job: dict) -> str | None:
    """When a paused job is cancelled unless resumed (NIAS_MAX_PAUSE_S); None while not paused."""
    limit = current_app.extensions["nias"].settings.max_pause_s
    if job["state"] != JobState.PAUSED.value or not job["paused_at"] or not limit:
        return None
    return iso_time(job["paused_at"] + limit)


def job_to_json(job: dict, *, position: int | None = None, served: set[str] | None = None) -> dict:
    """The job as the API shows it; `served` (the pools with a live unit) says what a queued job waits for."""
    elapsed = elapsed_seconds(job, time.time())
    eta = eta_seconds(job, elapsed)
    body = {
        "id": job["id"],
        "name": job["name"],
        "state": job["state"],
        "priority": job["priority"],
        "created_at": iso_time(job["created_at"]),
        "started_at": iso_time(job["started_at"]),
        "finished_at": iso_time(job["finished_at"]),
        "duration_s": round(elapsed, 3) if elapsed is not None else None,
        "exit_code": job["exit_code"],
        "error": job["error"],
        "unit": job["unit"],
        "attempts": job["attempt"],
        "result_size": job["result_size"],
        "log_size": job["log_size"],
        "upload_size": job["upload_size"],
        "timeout_s": job["timeout_s"],
        "env_seconds": job["env_seconds"],
        "env_cached": job["env_cached"],
        "env_built_at": iso_time(job.get("env_built_at")),
        "fresh_env": bool(job.get("fresh_env")),
        "run_seconds": job["run_seconds"],
        "progress": job["progress"],
        "progress_message": job["progress_message"],
        "elapsed_s": round(elapsed, 3) if elapsed is not None else None,
        "eta_s": round(eta, 1) if eta is not None else None,
        "limits": job.get("limits") or {},
        "run_limits": run_limits(job, _nias().settings),
        "rerun_of": job["rerun_of"],
        "params": job.get("params") or {},
        "command": job.get("command"),
        "command_digest": job.get("command_digest"),
        "source": job.get("source"),
        "sweep_id": job.get("sweep_id"),
        "owner": job["owner_id"],
        "expired_at": iso_time(job["expired_at"]),
        "result_pending": job.get("result_due") is not None,  # cancelled: the kept result is still coming
        "pause_deadline": pause_deadline(job),
        "queue_position": position,
        "pool": job["pool"],
        "waiting_for": waiting_for(job, served) if served is not None else None,
        "run_next": job["queue_priority"] > job["priority"],
        "execution": job.get("execution") or None,
        "ran_with": job.get("ran_with"),
        "provenance": job_provenance(job),
        "exact": bool(job.get("pins")),
        "note": job.get("note"),
        "datasets": job.get("datasets") or [],
        "paused_s": round(_paused_seconds(job, time.time()), 3),
        "links": {
            "self": url_for("jobs.get_job", job_id=job["id"]),
            "result": url_for("jobs.get_result", job_id=job["id"]),
            "log": url_for("jobs.get_log", job_id=job["id"]),
        },
    }
    if eta is None:
        del body["eta_s"]  # absent, not null, while there is no rate of progress to go by
    return body


def _nias():
    return current_app.extensions["nias"]


def sweep_json(sweep_id: str) -> dict:
    store = _nias().store
    return sweep_to_json(store.get_sweep(sweep_id), store.sweep_jobs(sweep_id), job_to_json, _nias().settings)


def check_quota(store, settings, user: dict) -> None:
    """A user may keep so many jobs waiting and so much data stored (admins too: it protects the disk)."""
    queued = store.count_by_state(user["id"]).get(JobState.QUEUED.value, 0)
    if queued >= settings.max_queued_per_user:
        raise NiasError(f"You have {queued} jobs waiting, the most allowed; wait for some to start.",
                        code="quota_queued", status=429)
    used_mb = store.storage_used(user["id"]) / (1024 * 1024)
    if used_mb >= settings.max_storage_mb_per_user:
        raise NiasError(f"Your uploads and results take {used_mb:.0f} MB, the most allowed is "
                        f"{settings.max_storage_mb_per_user} MB; download and delete old results.",
                        code="quota_storage", status=429)


def admin_limits(settings: Settings) -> dict[str, int]:
    """The limits every job runs under unless it asks for less."""
    limits = {name: getattr(settings, f"job_{name}") for name in LIMIT_FIELDS}
    limits["cpu_s"] = limits["cpu_s"] or settings.job_timeout_s
    return limits


def run_limits(job: dict, settings: Settings) -> dict[str, int | float | None]:
    """What the job runs under: the admin's limits, lowered where the job asked, its time limit and CPUs."""
    limits: dict[str, int | float | None] = admin_limits(settings)
    for name, asked in (job.get("limits") or {}).items():
        if name in limits and isinstance(asked, int):
            limits[name] = min(asked, limits[name])
    limits["timeout_s"] = min(job["timeout_s"] or settings.job_timeout_s, settings.job_timeout_s)
    limits["cpus"] = settings.job_cpus or None
    return limits


def requested_limits(form, settings: Settings) -> dict[str, int]:
    """The lower limits a job asks for. More than the admin allows is refused, never silently clamped."""
    asked = {}
    for name, most in admin_limits(settings).items():
        raw = form.get(name)
        if raw is None or raw == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise BadRequest(f"{name} must be a whole number from 1 to {most}.")
        if value > most:
            raise BadRequest(f"{name} may be at most {most}, this server's limit: a job may ask for less, "
                             "never for more.", code="limit_too_high", limit=most)
        asked[name] = value
    return asked


def job_json_with_position(job: dict) -> dict:
    if job["state"] != JobState.QUEUED.value:
        return job_to_json(job)
    store = _nias().store
    return job_to_json(job, position=store.queue_position(job), served=live_pools(store))


def dry_run(settings: Settings) -> dict:
    """The dry-run report; a zip that breaks an upload rule is a failed "zip" check, not a 400."""
    try:
        upload, _name = receive_upload(request, settings, screen_requirements=False)
        return check_project(upload, settings)
    except BadUpload as exc:
        if exc.code == "missing_file":  # nothing was sent to check
            raise
        return zip_refused(exc)
    finally:
        request.discard_parts()


@bp.post("")
@describe("Upload a project as a job (or a sweep), or check it (dry_run)",
          {200: api.DryRunReport, 201: api.Job, **api.REFUSED}, query=api.SubmitQuery, body=api.Upload,
          body_media="multipart/form-data", tag="jobs")
def submit_job():
    """An upload (or a dry run); a user sends at most NIAS_MAX_UPLOADS_PER_USER at once, and all
    users NIAS_MAX_UPLOADS, so slow uploads cannot take every request thread: one more is refused
    before its body is read."""
    received_at = time.time()
    settings = _nias().settings
    user_id = current_user()["id"]
    if not uploads_in_flight.take(user_id, settings.max_uploads_per_user, settings.max_uploads):
        return refuse_unread(too_many_uploads(settings, user_id))
    request.environ.get("nias.slow_body", lambda: None)()  # an upload's body has deadlines of its own
    try:
        if request.args.get("dry_run", "").lower() in ("1", "true", "yes"):
            return jsonify(dry_run(settings))
        return accept_upload(received_at)
    finally:
        uploads_in_flight.give_back(user_id)


def accept_upload(received_at: float):
    nias = _nias()
    settings = nias.settings
    try:
        check_quota(nias.store, settings, current_user())
    except NiasError:
        discard_body(request)  # else the unread upload is taken for the connection's next request
        raise
    try:
        upload, name = receive_upload(request, settings)
        priority = parse_int_field(request.form.get("priority"), "priority", 0, 9) or 0
        timeout_s = parse_int_field(request.form.get("timeout_s"), "timeout_s", 1, settings.job_timeout_s)
        limits = requested_limits(request.form, settings)
        params = checked_params(parse_json_field(request.form.get("params"), "params"))
        sweep = parse_json_field(request.form.get("sweep"), "sweep")
        points = expand_sweep(sweep, params, settings.max_sweep_jobs) if sweep is not None else None
        check_room_for(nias.store, settings, current_user()["id"], len(points or [params]))
        datasets = resolve_datasets(nias.store, current_user()["id"],
                                    parse_json_field(request.form.get("datasets"), "datasets"))
        submission = Submission(upload.path, upload.sha256, upload.size, name, current_user()["id"],
                                priority, timeout_s, limits,
                                extra={"pool": choose_pool(request.form.get("pool"), settings), "source": upload.source,
                                       "fresh_env": parse_flag(request.form.get("fresh_env"), "fresh_env"),
                                       "datasets": datasets},
                                received_at=received_at)
        if points is not None:
            sweep_id = queue_sweep(nias, submission, points, sweep, params)
            return jsonify(sweep_json(sweep_id)), 201
        job = queue_job(nias, submission, params)
    finally:
        request.discard_parts()
    return jsonify(job_json_with_position(job)), 201


@bp.get("")
@describe("List jobs", {200: api.JobPage, **api.REFUSED}, query=api.JobListQuery, tag="jobs")
def list_jobs():
    state = request.args.get("state") or None
    if state and state not in {s.value for s in JobState}:
        raise BadRequest(f"Unknown state {state!r}; use one of {', '.join(s.value for s in JobState)}.")
    page = parse_int_field(request.args.get("page"), "page", 1, 1_000_000) or 1
    per_page = parse_int_field(request.args.get("per_page"), "per_page", 1, MAX_PER_PAGE) or 20
    search = (request.args.get("q") or "").strip()[:200] or None
    sweep = (request.args.get("sweep") or "")[:32] or None  # "none": leave out the jobs of sweeps
    sort = request.args.get("sort") or "submitted"
    if sort not in _nias().store.SORTS:
        raise BadRequest(f"Unknown sort {sort!r}; use one of {', '.join(_nias().store.SORTS)}.", code="bad_sort")
    store = _nias().store
    rows, total = store.list_jobs(state=state, search=search, owner=owner_filter(), limit=per_page,
                                  offset=(page - 1) * per_page, sweep=sweep, since=parse_date(request.args, "since"),
                                  until=parse_date(request.args, "until", end_of_day=True), sort=sort,
                                  descending=request.args.get("order", "desc") != "asc")
    queued = any(row["state"] == JobState.QUEUED.value for row in rows)
    served = live_pools(store) if queued else None
    return jsonify({"jobs": [job_to_json(row, served=served, position=store.queue_position(row)
                                         if row["state"] == JobState.QUEUED.value else None) for row in rows],
                    "total": total, "page": page, "per_page": per_page})


def parse_date(args, name: str, *, end_of_day: bool = False) -> float | None:
    """`2026-12-03` (UTC, the whole day when `end_of_day`) or an ISO time with its zone, as a timestamp."""
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a date (2026-12-03) or an ISO time.", code="bad_date", field=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = moment.timestamp()
    return stamp + 86400 if end_of_day and len(raw) == 10 else stamp


@bp.get("/<job_id>")
@describe("One job", {200: api.Job, **api.REFUSED}, query=api.JobQuery, tag="jobs")
def get_job(job_id: str):
    """A job; `?wait_s=N` holds the answer until the job changes state (or N seconds pass), or
    with `until=final` until it has ended with its result recorded."""
    store = _nias().store
    version = feed.version  # before the read: a change landing after it still wakes the wait
    job = visible_job(job_id)
    wait_s = parse_int_field(request.args.get("wait_s"), "wait_s", 0, MAX_WAIT_S) or 0
    until = request.args.get("until")
    if until not in (None, "", "final"):
        raise BadRequest("until may only be final.", code="bad_until", field="until")
    deadline = time.monotonic() + wait_s
    seen = None if until else request.args.get("state") or job["state"]
    # a cancelled job's kept result (result_due) is news worth waiting for
    while ((seen is None or job["state"] == seen) and (not is_final(job["state"]) or job["result_due"] is not None)
           and time.monotonic() < deadline):
        # capped: the store stays the truth even for a change that was never published
        version = feed.wait(min(1.0, max(deadline - time.monotonic(), 0)), since=version)
        job = store.get_job(job_id)
    return jsonify(job_json_with_position(job))


@bp.get("/<job_id>/history")
@describe("A job's state changes", {200: api.History, **api.REFUSED}, tag="jobs")
def get_history(job_id: str):
    store = _nias().store
    visible_job(job_id)
    rows = store.history(job_id)
    return jsonify({"transitions": [
        {"from": r["from_state"], "to": r["to_state"], "at": iso_time(r["at"]), "attempt": r["attempt"],
         "unit": r["unit"], "reason": r["reason"]} for r in rows
    ]})


def run_files(job: dict) -> RunFiles:
    return JobFiles(_nias().settings.jobs_dir, job["id"]).run(job["attempt"])


def finished_result(job_id: str) -> tuple[dict, Path]:
    """A visible, finished job and its result zip: 409 before the end, 410 after retention, 404 if none."""
    job = visible_job(job_id)
    if not is_final(job["state"]):
        raise Conflict(f"Job {job_id} is {job['state']}; its result is ready once it has finished.", state=job["state"])
    if job["expired_at"]:
        raise NiasError(f"Job {job_id}'s result was removed after the retention period, on "
                        f"{iso_time(job['expired_at'])[:10]}.", code="result_expired", status=410)
    if job["result_due"] is not None:
        raise Conflict(f"Job {job_id} was cancelled; what it wrote is still being saved as its result.",
                       state=job["state"], code="result_pending")
    path = run_files(job).result
    if not path.is_file():
        raise NiasError(f"Job {job_id} ended without a result: {job['error'] or 'it never ran'}",
                        code="no_result", status=404)
    return job, path


@bp.get("/<job_id>/result")
@describe("Download a job's result", {200: api.ZIP, **api.REFUSED}, tag="results")
def get_result(job_id: str):
    job, path = finished_result(job_id)
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=f"{job['name']}-{job_id}.zip")


LOG_CHUNK_BYTES = 256 * 1024


def read_in_chunks(handle, length: int, chunk_bytes: int = LOG_CHUNK_BYTES) -> Iterator[bytes]:
    """At most `length` bytes from `handle` (closed at the end), a bounded chunk at a time: a log or
    a result file of any size costs one chunk of memory."""
    with handle:
        while length > 0:
            chunk = handle.read(min(chunk_bytes, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


@bp.get("/<job_id>/log")
@describe("A job's log", {200: api.LOG_TEXT, **api.REFUSED}, query=api.LogQuery, tag="jobs")
def get_log(job_id: str):
    """The run's output as text, streamed; `?offset=N` returns only what came after byte N, and
    `?download=1` asks the browser to save it (the whole log, as the unit wrote it: nias/job_log.py).

    The answer holds what the log had when it was asked for (`X-Log-Size` is that size), so a
    growing log is read on by asking again from there."""
    job = visible_job(job_id)
    offset = parse_int_field(request.args.get("offset"), "offset", 0, 2**62) or 0
    path = run_files(job).log
    handle, length = None, 0
    if job["attempt"]:
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            handle = None
    if handle is not None:
        length = max(0, os.fstat(handle.fileno()).st_size - offset)
        if length:  # a seek far past the end fails on some filesystems (EINVAL), and there is nothing to read
            handle.seek(offset)
    headers = {"X-Log-Size": str(offset + length), "Content-Length": str(length)}
    if request.args.get("download", "").lower() in ("1", "true", "yes"):
        headers["Content-Disposition"] = f'attachment; filename="{job_id}-log.txt"'

    body = read_in_chunks(handle, length) if handle is not None else iter(())
    response = Response(body, mimetype="text/plain", headers=headers, direct_passthrough=True)
    response.charset = "utf-8"
    return response
