"""Retention: a finished job's files go after NIAS_RETENTION_DAYS; its record stays, with a note."""
from __future__ import annotations

import logging
import shutil
import time

from nias.settings import Settings
from nias.job_files import JobFiles

from backend.store import Store

logger = logging.getLogger(__name__)


def expire_old_results(store: Store, settings: Settings, now: float | None = None) -> int:
    """Delete the upload, log and result of jobs that ended more than the retention period ago."""
    if settings.retention_days <= 0:
        return 0
    now = now or time.time()
    expired = 0
    for job in store.jobs_to_expire(now - settings.retention_days * 86400):
        shutil.rmtree(JobFiles(settings.jobs_dir, job["id"]).folder, ignore_errors=True)
        if store.update_job_fields(job["id"], {"expired_at": None}, {"expired_at": now}):
            expired += 1
            logger.info("Job %s: files removed after the retention period", job["id"])
    return expired
