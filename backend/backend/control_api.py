"""Job control: pause, resume and cancel; priority and "run next"; re-run a finished job."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from nias.errors import BadRequest, Conflict
from nias.provenance import pins_of
from nias.requirements import MAX_LINES
from nias.states import is_final
from nias.web import read_json

from backend import api_models as api
from backend.openapi import describe
from backend import jobs as job_rules
from backend.auth import current_user, visible_job
from backend.jobs_api import admin_limits, check_quota, job_json_with_position
from backend.commands import UnknownCommand
from backend.commands_api import command_book
from backend.submission import queue_rerun
from backend.sweeps import checked_params

logger = logging.getLogger(__name__)

bp = Blueprint("control", __name__, url_prefix="/api/jobs")


def _nias():
    return current_app.extensions["nias"]


@bp.put("/<job_id>/state")
@describe("Pause, resume or cancel a job", {200: api.Job, **api.REFUSED}, body=api.StateChange, tag="jobs")
def put_state(job_id: str):
    """`{"state": "paused" | "running" | "cancelled"}`; asking twice answers 200 and changes nothing."""
    target = read_json().get("state")
    if not isinstance(target, str):
        raise BadRequest("Send {\"state\": \"paused\" | \"running\" | \"cancelled\"}.")
    nias = _nias()
    visible_job(job_id)
    job = job_rules.request_state(nias.store, job_id, target, nias.dispatcher.send_control, nias.settings)
    return jsonify(job_json_with_position(job))


@bp.put("/<job_id>/priority")
@describe("Set a queued job's priority", {200: api.Job, **api.REFUSED}, body=api.PriorityChange, tag="jobs")
def put_priority(job_id: str):
    """`{"priority": 0..9}` for a queued job; it moves in the queue accordingly."""
    priority = read_json().get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
        raise BadRequest("priority must be a whole number from 0 to 9.")
    nias = _nias()
    visible_job(job_id)
    job = job_rules.requeue_with_priority(nias.store, job_id, priority, send_control=nias.dispatcher.send_control)
    nias.dispatcher.wake()
    return jsonify(job_json_with_position(job))


@bp.post("/<job_id>/run-next")
@describe("Put a queued job at the front of its queue", {200: api.Job, **api.REFUSED}, tag="jobs")
def run_next(job_id: str):
    """Put a queued job at the front of the queue (behind any job already sent to the front)."""
    nias = _nias()
    visible_job(job_id)
    job = job_rules.requeue_with_priority(nias.store, job_id, None, run_next=True)
    nias.dispatcher.wake()
    return jsonify(job_json_with_position(job))


def rerun_params(original: dict) -> dict | None:
    body = request.get_json(silent=True) if request.content_length else None
    if not isinstance(body, dict) or body.get("params") is None:
        return None
    params = checked_params(body["params"])
    if original.get("command"):
        try:
            command = command_book().get(original["command"])
        except UnknownCommand:
            return params  # the command is gone: its job's upload still holds the project
        return command.resolve(params)
    return params


def _whole_number(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def rerun_overrides(body: dict, settings) -> dict:
    """What the new job changes: `name`, `priority`, `timeout_s`, `limits` (each checked; every
    bad field is named in one answer, `fields: {name: why}`)."""
    problems: dict[str, str] = {}
    changes: dict = {}
    if "name" in body:
        name = body["name"].strip() if isinstance(body["name"], str) else ""
        if not 0 < len(name) <= 200:
            problems["name"] = "a name of 1 to 200 characters"
        changes["name"] = name
    if "priority" in body:
        if not _whole_number(body["priority"], 0, 9):
            problems["priority"] = "a whole number from 0 to 9"
        changes["priority"] = body["priority"]
    if body.get("timeout_s") is not None:
        if not _whole_number(body["timeout_s"], 1, settings.job_timeout_s):
            problems["timeout_s"] = f"a whole number of seconds from 1 to {settings.job_timeout_s}"
        changes["timeout_s"] = body["timeout_s"]
    if body.get("limits") is not None:
        limits = body["limits"] if isinstance(body["limits"], dict) else {}
        highest = admin_limits(settings)
        for field, value in limits.items():
            if field not in highest or not (value is None or _whole_number(value, 1, highest[field])):
                problems[field] = f"a whole number from 1 to {highest.get(field, 0)}" if field in highest else "not a limit"
        changes["limits"] = {field: value for field, value in limits.items() if value is not None}
    for flag in ("exact", "fresh_env"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            problems[flag] = "true or false"
    if body.get("fresh_env") is not None:
        changes["fresh_env"] = int(body["fresh_env"] is True)
    if problems:
        raise BadRequest("Check " + ", ".join(f"{field} ({why})" for field, why in problems.items()) + ".",
                         code="bad_fields", fields=problems)
    return changes


def exact_pins(original: dict, body: dict) -> dict:
    """With `exact: true`, the new job's environment pinned to what the original ran with (or 409);
    without, the original's own pins are not carried over: a plain re-run resolves its requirements anew."""
    if body.get("exact") is not True:
        return {"pins": None}
    pins = pins_of(original.get("ran_with"))
    if not pins:
        raise Conflict(f"Job {original['id']} has no recorded packages (its environment was never built), so it "
                       "cannot be re-run exactly; re-run it without exact.", state=original["state"], code="no_packages")
    if len(pins) > MAX_LINES:
        raise Conflict(f"Job {original['id']} ran with {len(pins)} packages; an environment is built from at most "
                       f"{MAX_LINES} requirements, so it cannot be re-run exactly.", state=original["state"],
                       code="too_many_packages")
    return {"pins": pins, "fresh_env": 0}


@bp.post("/<job_id>/rerun")
@describe("Run a finished job again", {201: api.Job, **api.REFUSED}, body=api.RerunBody, body_required=False,
          tag="jobs")
def rerun(job_id: str):
    """A new job from the same upload, linked to the original by `rerun_of`; an optional body
    gives it other `params` (checked against its command's, if any), and another `name`,
    `priority`, `timeout_s` or `limits` (the job page's "Run again" form sends them)."""
    nias = _nias()
    settings = nias.settings
    original = visible_job(job_id)
    if original["expired_at"]:
        raise Conflict(f"Job {job_id}'s upload was removed after the retention period; upload it again.",
                       state=original["state"])
    # The new job is the original owner's, whoever asks (an admin may re-run a user's job).
    owner_id = original["owner_id"] or current_user()["id"]
    check_quota(nias.store, settings, {"id": owner_id})
    if not is_final(original["state"]):
        raise Conflict(f"Job {job_id} is {original['state']}; only a finished, failed or cancelled job can be re-run.",
                       state=original["state"])
    body = request.get_json(silent=True) if request.content_length else None
    body = body if isinstance(body, dict) else {}
    changes = {**rerun_overrides(body, settings), **exact_pins(original, body)}
    job = queue_rerun(nias, original, owner_id, rerun_params(original), changes)
    return jsonify(job_json_with_position(job)), 201
