"""A job's provenance: the record of exactly what it ran (nias/provenance.py), built from the job."""
from __future__ import annotations

from flask import Blueprint, jsonify

from nias.provenance import origin_of, provenance_record

from backend import api_models as api
from backend.auth import visible_job
from backend.openapi import describe

bp = Blueprint("provenance", __name__, url_prefix="/api/jobs")


def job_provenance(job: dict) -> dict:
    """The job's record, as its unit writes it into the result zip; `packages` null until it has run."""
    return provenance_record(job["upload_sha256"], origin_of(job), job.get("ran_with"),
                             (job.get("execution") or {}).get("executor"), job.get("datasets"))


@bp.get("/<job_id>/provenance")
@describe("What exactly a job ran", {200: api.Provenance, **api.REFUSED}, tag="jobs")
def get_provenance(job_id: str):
    """The upload's sha256, data sets, command or git commit, unit, host, executor, Python and packages."""
    return jsonify(job_provenance(visible_job(job_id)))
