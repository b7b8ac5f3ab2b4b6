"""Endpoints for the other NIAS services (consumers and processing units), not for researchers.

A unit on any host needs only these and the broker: it fetches a job's upload, streams the
attempt's log while it runs and sends the result zip, which is kept only once its size and
SHA-256 match what the unit says it sent (nias/internal.py has the contract).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import tempfile

from flask import Blueprint, Response, current_app, request, send_file

from nias.errors import BadMessage, BadRequest, Conflict, NiasError, StorageFull
from nias.internal import (LOG_CHUNK_BYTES, OUTCOME_HEADER, SHA256_HEADER, UNIT_HEADER, ClaimAnswer, ClaimRequest,
                           FileReceipt, PingAnswer, decode_outcome)
from nias.messages import JobEvent
from nias.job_files import JobFiles, RunFiles
from nias.states import JobState

from backend import jobs as job_rules

logger = logging.getLogger(__name__)

bp = Blueprint("internal", __name__, url_prefix="/internal")

BLOCK = 1024 * 1024
HELD = {JobState.RUNNING.value, JobState.PAUSED.value}


def _nias():
    return current_app.extensions["nias"]


def _answer(message, status: int = 200) -> Response:
    return Response(message.encode(), status=status, mimetype="application/json")


@bp.get("/ping")
def ping():
    """A unit checks at start that it reaches the backend and that its token is known."""
    return _answer(PingAnswer())


@bp.post("/jobs/<job_id>/claim")
def claim_job(job_id: str):
    """A consumer asks to run a job it received: 200 with the attempt, 409 if stale, 404 if unknown."""
    claim = ClaimRequest.decode(request.get_data())
    nias = _nias()
    job = job_rules.claim_job(nias.store, nias.settings, job_id, claim.dispatch, claim.unit, claim.delivered_at)
    return _answer(ClaimAnswer(job_id=job["id"], attempt=job["attempt"]))


def held_attempt(job_id: str, attempt: int, *, cancelled_too: bool = False) -> dict:
    """The job if the unit asking (`X-Nias-Unit`) holds `attempt` of it; 409 otherwise."""
    job = _nias().store.get_job(job_id)
    unit = request.headers.get(UNIT_HEADER, "")
    awaited = cancelled_too and job["state"] == JobState.CANCELLED.value and job.get("result_due") is not None
    if job["attempt"] != attempt or job["unit"] != unit or not (job["state"] in HELD or awaited):
        raise Conflict(f"Unit {unit or '(unnamed)'} does not hold attempt {attempt} of job {job_id} "
                       f"(it is {job['state']}, attempt {job['attempt']} on {job['unit']}).", state=job["state"])
    return job


def _attempt_arg() -> int:
    raw = request.args.get("attempt", "")
    if not raw.isdigit():
        raise BadRequest("Name the attempt: ?attempt=N.")
    return int(raw)


@bp.get("/jobs/<job_id>/upload")
def get_upload(job_id: str):
    """The job's upload, streamed; `Range` resumes a download that was cut off."""
    job = held_attempt(job_id, _attempt_arg())
    path = _nias().settings.data_dir / job["upload"]
    if not path.is_file():
        raise NiasError(f"The upload of job {job_id} is missing from the backend's storage.",
                        code="upload_missing", status=410)
    response = send_file(path, mimetype="application/zip", conditional=True, etag=False, max_age=0)
    response.headers[SHA256_HEADER] = job["upload_sha256"]
    return response


@bp.get("/jobs/<job_id>/datasets/<sha256>")
def get_dataset(job_id: str, sha256: str):
    """A data set the held attempt's job names, streamed (`Range` resumes); no other data is served."""
    job = held_attempt(job_id, _attempt_arg())
    if not any(entry.get("sha256") == sha256 for entry in job.get("datasets") or []):
        raise NiasError(f"Job {job_id} names no data set with this digest.", code="dataset_not_found", status=404)
    path = _nias().settings.data_dir / "datasets" / sha256
    if not path.is_file():
        raise NiasError(f"The data set {sha256} of job {job_id} is missing from the backend's storage.",
                        code="dataset_missing", status=410)
    response = send_file(path, mimetype="application/octet-stream", conditional=True, etag=False, max_age=0)
    response.headers[SHA256_HEADER] = sha256
    return response


def _run_files(job_id: str, attempt: int) -> RunFiles:
    files = JobFiles(_nias().settings.jobs_dir, job_id).run(attempt)
    files.folder.mkdir(parents=True, exist_ok=True)
    return files


@bp.post("/jobs/<job_id>/runs/<int:attempt>/log")
def append_log(job_id: str, attempt: int):
    """Append a piece of the attempt's log that starts at `?offset=`; a piece sent again is skipped.

    409 with the size kept when the piece starts past the end (the unit sends from there)."""
    held_attempt(job_id, attempt, cancelled_too=True)
    raw = request.args.get("offset", "")
    if not raw.isdigit():
        raise BadRequest("Say where the piece starts: ?offset=N.")
    offset = int(raw)
    request.max_content_length = LOG_CHUNK_BYTES
    data = request.get_data(cache=False)
    settings = _nias().settings
    path = _run_files(job_id, attempt).log
    size = path.stat().st_size if path.exists() else 0
    if offset > size:
        return _answer(FileReceipt(size=size), 409)
    keep = data[size - offset:]
    if size + len(keep) > settings.max_log_bytes + LOG_CHUNK_BYTES:  # the unit cuts the log at the limit itself
        raise NiasError("The log is past its size limit.", code="log_too_large", status=413)
    if keep:
        with _room_for("the log"):
            with open(path, "ab") as handle:
                handle.write(keep)
    return _answer(FileReceipt(size=size + len(keep)))


@contextlib.contextmanager
def _room_for(what: str):
    """A full volume answers 507 naming it, so the unit fails the job instead of trying again."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StorageFull(f"The backend's volume has no room left for {what}: {os.strerror(exc.errno)}.") from None


def _write_whole(path, data: bytes) -> None:
    """`data` at `path`, all of it or nothing: written beside it, then renamed."""
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".part", delete=False)
    try:
        with handle:
            handle.write(data)
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)


def _outcome_header(job_id: str, attempt: int) -> JobEvent | None:
    """The outcome sent with a result, which must be this attempt's and this unit's."""
    value = request.headers.get(OUTCOME_HEADER)
    if value is None:
        return None
    try:
        outcome = decode_outcome(value)
    except BadMessage as exc:
        raise BadRequest(exc.message) from None
    if (outcome.job_id, outcome.attempt, outcome.unit) != (job_id, attempt, request.headers.get(UNIT_HEADER)):
        raise BadRequest(f"{OUTCOME_HEADER} is about another attempt or unit.")
    return outcome


def _sha256_header() -> str:
    sha256 = request.headers.get(SHA256_HEADER, "")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise BadRequest(f"Send the result's SHA-256 in {SHA256_HEADER}.")
    return sha256


@bp.put("/jobs/<job_id>/runs/<int:attempt>/result")
def put_result(job_id: str, attempt: int):
    """Keep the attempt's result zip once its size and SHA-256 match what the unit sent."""
    held_attempt(job_id, attempt, cancelled_too=True)
    settings = _nias().settings
    sha256, size, outcome = _sha256_header(), request.content_length, _outcome_header(job_id, attempt)
    if size is None:
        raise BadRequest("Send the result with a Content-Length.")
    if size > settings.max_result_bytes:
        raise NiasError(f"The result is larger than NIAS_MAX_RESULT_MB ({settings.max_result_mb} MB).",
                        code="result_too_large", status=413)
    request.max_content_length = settings.max_result_bytes
    target = _run_files(job_id, attempt).result
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix="result-", suffix=".part", delete=False)
    digest, got = hashlib.sha256(), 0
    try:
        with _room_for("the result"), handle:
            for block in iter(lambda: request.stream.read(BLOCK), b""):
                digest.update(block)
                handle.write(block)
                got += len(block)
        if got != size or digest.hexdigest() != sha256:
            raise NiasError(f"The result arrived as {got} bytes that do not match the {size} bytes and checksum "
                            "sent; send it again.", code="result_mismatch", status=422)
        if outcome is not None:  # first, so that a kept result always has its outcome beside it
            with _room_for("the result"):
                _write_whole(_run_files(job_id, attempt).outcome, outcome.encode())
        os.replace(handle.name, target)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    logger.info("Job %s: result of attempt %s kept (%s bytes)", job_id, attempt, size)
    return _answer(FileReceipt(size=size, sha256=sha256))
