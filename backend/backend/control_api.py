"""Job control: pause, resume and cancel; priority and "run next"; re-run a finished job."""
from __future__ import annotations

import logging
import os
import shutil
import time

from flask import Blueprint, current_app, jsonify

from nias.errors import BadRequest, Conflict
from nias.states import JobState, is_final
from nias.web import read_json
from nias.job_files import JobFiles

from backend import jobs as job_rules
from backend.auth import current_user, visible_job
from backend.jobs_api import check_quota, job_json_with_position
from backend.live import feed
from backend.uploads import new_job_id

logger = logging.getLogger(__name__)

bp = Blueprint("control", __name__, url_prefix="/api/jobs")


def _nias():
    return current_app.extensions["nias"]


@bp.put("/<job_id>/state")
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
def put_priority(job_id: str):
    """`{"priority": 0..9}` for a queued job; it moves in the queue accordingly."""
    priority = read_json().get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
        raise BadRequest("priority must be a whole number from 0 to 9.")
    nias = _nias()
    visible_job(job_id)
    job = job_rules.requeue_with_priority(nias.store, job_id, priority)
    nias.dispatcher.wake()
    return jsonify(job_json_with_position(job))


@bp.post("/<job_id>/run-next")
def run_next(job_id: str):
    """Put a queued job at the front of the queue (behind any job already sent to the front)."""
    nias = _nias()
    visible_job(job_id)
    job = job_rules.requeue_with_priority(nias.store, job_id, None, run_next=True)
    nias.dispatcher.wake()
    return jsonify(job_json_with_position(job))


@bp.post("/<job_id>/rerun")
def rerun(job_id: str):
    """A new job from the same upload, linked to the original by `rerun_of`."""
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
    new_id = new_job_id()
    files = JobFiles(settings.jobs_dir, new_id)
    files.folder.mkdir(parents=True)
    source, target = settings.data_dir / original["upload"], files.upload
    try:
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        job = nias.store.insert_job(
            id=new_id, name=original["name"], state=JobState.QUEUED.value, priority=original["priority"],
            upload=str(target.relative_to(settings.data_dir)), upload_sha256=original["upload_sha256"],
            upload_size=original["upload_size"], timeout_s=original["timeout_s"], attempt=0, dispatch=1,
            published=0, queue_priority=original["priority"], queued_at=time.time(), rerun_of=job_id,
            owner_id=owner_id, limits=original["limits"], pool=original["pool"],
        )
    except Exception:
        shutil.rmtree(files.folder, ignore_errors=True)
        raise
    logger.info("Job %s: re-run of %s", new_id, job_id)
    feed.publish(job)
    nias.dispatcher.publish_job(job)
    return jsonify(job_json_with_position(job)), 201
