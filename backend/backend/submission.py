"""Queueing what a submit asks for: one job, or a sweep of jobs sharing one stored upload.

The zip upload and a command's job both end here, so everything after this is the same path.
A sweep's upload is stored once: every job's upload.zip is a hard link to the first job's, so
deleting one job's folder (retention) never takes the upload from another.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nias.errors import NiasError
from nias.job_files import JobFiles
from nias.settings import Settings
from nias.states import JobState
from nias.timeline import Hop

from backend.live import feed
from backend.sweeps import varied_names
from backend.uploads import new_job_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """What every job of one submit shares."""

    upload: Path  # the checked zip, still in uploads/ (moved into the first job's folder)
    sha256: str
    size: int
    name: str
    owner_id: str
    priority: int = 0
    timeout_s: int | None = None
    limits: dict = field(default_factory=dict)
    command: str | None = None
    command_digest: str | None = None
    extra: dict = field(default_factory=dict)  # more job columns, set alike on every job
    received_at: float | None = None  # when its request began (the `received` hop of nias.timeline)


def check_room_for(store, settings: Settings, owner_id: str, count: int) -> None:
    """The queued-jobs quota counts each job of a sweep."""
    queued = store.count_by_state(owner_id).get(JobState.QUEUED.value, 0)
    if queued + count > settings.max_queued_per_user:
        raise NiasError(f"This submit queues {count} jobs and you have {queued} waiting; at most "
                        f"{settings.max_queued_per_user} may wait at once.", code="quota_queued", status=429,
                        limit=settings.max_queued_per_user)


def _job_row(submission: Submission, settings: Settings, job_id: str, params: dict, created_at: float,
             **values: Any) -> dict:
    return dict(
        id=job_id, name=submission.name, state=JobState.QUEUED.value, priority=submission.priority,
        upload=str(JobFiles(settings.jobs_dir, job_id).upload.relative_to(settings.data_dir)),
        upload_sha256=submission.sha256, upload_size=submission.size, timeout_s=submission.timeout_s,
        attempt=0, dispatch=1, published=0, queue_priority=submission.priority, queued_at=created_at,
        created_at=created_at, owner_id=submission.owner_id, limits=submission.limits, params=params,
        command=submission.command, command_digest=submission.command_digest,
        timeline={Hop.RECEIVED.value: submission.received_at} if submission.received_at else None,
        **submission.extra, **values,
    )


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the same file, stored once), or a copy where the filesystem has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _place_uploads(submission: Submission, settings: Settings, job_ids: list[str]) -> None:
    first = JobFiles(settings.jobs_dir, job_ids[0])
    first.folder.mkdir(parents=True)
    os.replace(submission.upload, first.upload)
    for job_id in job_ids[1:]:
        files = JobFiles(settings.jobs_dir, job_id)
        files.folder.mkdir(parents=True)
        link_or_copy(first.upload, files.upload)


def _remove_folders(settings: Settings, job_ids: list[str]) -> None:
    for job_id in job_ids:
        shutil.rmtree(JobFiles(settings.jobs_dir, job_id).folder, ignore_errors=True)


def queue_job(nias, submission: Submission, params: dict) -> dict:
    """One job; its row and its folder, or neither."""
    job_id = new_job_id()
    try:
        _place_uploads(submission, nias.settings, [job_id])
        row = _job_row(submission, nias.settings, job_id, params, time.time())
        job = nias.store.insert_job(**row)
    except Exception:
        _remove_folders(nias.settings, [job_id])
        raise
    logger.info("Job %s: accepted %r (%d bytes)", job_id, submission.name, submission.size)
    feed.publish(job)
    nias.dispatcher.publish_job(job)
    return job


def queue_sweep(nias, submission: Submission, points: list[dict], sweep: Any, fixed: dict) -> str:
    """A sweep of one job per point; all queued in one transaction, or none. Returns its id."""
    settings = nias.settings
    sweep_id = new_job_id()
    job_ids = [new_job_id() for _ in points]
    now = time.time()
    try:
        _place_uploads(submission, settings, job_ids)
        rows = [_job_row(submission, settings, job_id, params, now + index * 1e-6, sweep_id=sweep_id,
                         upload_shared=1 if index else None)
                for index, (job_id, params) in enumerate(zip(job_ids, points))]
        nias.store.insert_sweep(dict(id=sweep_id, name=submission.name, owner_id=submission.owner_id,
                                     created_at=now, command=submission.command, params=fixed,
                                     sweep={"varied": varied_names(sweep), "spec": sweep},
                                     job_count=len(points)), rows)
    except Exception:
        _remove_folders(settings, job_ids)
        raise
    logger.info("Sweep %s: %d jobs of %r queued", sweep_id, len(points), submission.name)
    for job_id in job_ids[:50]:  # the page's live list hears of the first ones; all are in the store
        feed.publish(nias.store.get_job(job_id))
    nias.dispatcher.wake()  # the outbox publishes them all, a hundred at a time
    return sweep_id


def rerun_row(settings: Settings, original: dict, new_id: str, owner_id: str, params: dict | None,
              changes: dict | None = None) -> dict:
    """A new job from the same upload as `original`, its parameters kept unless new ones are given,
    with the `changes` asked for (name, priority, timeout_s, limits); a job of a sweep is re-run within it."""
    now = time.time()
    row = dict(
        id=new_id, name=original["name"], state=JobState.QUEUED.value, priority=original["priority"],
        upload=str(JobFiles(settings.jobs_dir, new_id).upload.relative_to(settings.data_dir)),
        upload_sha256=original["upload_sha256"], upload_size=original["upload_size"],
        timeout_s=original["timeout_s"], attempt=0, dispatch=1, published=0, queue_priority=original["priority"],
        queued_at=now, created_at=now, rerun_of=original["id"], owner_id=owner_id, limits=original["limits"],
        params=original.get("params") if params is None else params, command=original.get("command"),
        command_digest=original.get("command_digest"), source=original.get("source"), sweep_id=original.get("sweep_id"),
        upload_shared=1 if original.get("sweep_id") else None, pool=original["pool"],
        datasets=original.get("datasets"),
    )
    row.update(changes or {})
    row["queue_priority"] = row["priority"]
    return row


def queue_rerun(nias, original: dict, owner_id: str, params: dict | None = None, changes: dict | None = None) -> dict:
    """Re-run a finished job: its upload linked (or copied) into a new job's folder."""
    settings = nias.settings
    new_id = new_job_id()
    files = JobFiles(settings.jobs_dir, new_id)
    files.folder.mkdir(parents=True)
    source = settings.data_dir / original["upload"]
    try:
        link_or_copy(source, files.upload)
        job = nias.store.insert_job(**rerun_row(settings, original, new_id, owner_id, params, changes))
    except Exception:
        shutil.rmtree(files.folder, ignore_errors=True)
        raise
    logger.info("Job %s: re-run of %s", new_id, original["id"])
    feed.publish(job)
    nias.dispatcher.publish_job(job)
    return job
