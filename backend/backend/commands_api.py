"""The commands API: list the admin's commands, and queue a job (or a sweep) from one."""
from __future__ import annotations

import hashlib
import logging
import tempfile
import zipfile
from pathlib import Path

from flask import Blueprint, current_app, jsonify

from nias.archive import inspect_zip, read_requirements
from nias.errors import BadRequest
from nias.requirements import check_requirements
from nias.settings import Settings
from nias.web import read_json

from backend import api_models as api
from backend.openapi import describe
from backend.auth import current_user, is_admin
from backend.commands import Command, CommandBook, files_digest
from backend.jobs_api import check_quota, job_json_with_position, sweep_json
from backend.submission import Submission, check_room_for, queue_job, queue_sweep
from backend.sweeps import checked_params, expand_sweep
from backend.uploads import clean_name, zip_limits
from backend.pools import choose_pool

logger = logging.getLogger(__name__)

bp = Blueprint("commands", __name__, url_prefix="/api/commands")


def _nias():
    return current_app.extensions["nias"]


def command_book() -> CommandBook:
    """One book per app, made on first use (the folder need not exist: then there are no commands)."""
    extensions = current_app.extensions
    if "nias.commands" not in extensions:
        extensions["nias.commands"] = CommandBook(_nias().settings.commands_folder)
    return extensions["nias.commands"]


@bp.get("")
@describe("List the commands", {200: api.CommandList, **api.REFUSED}, tag="commands")
def list_commands():
    """Every usable command with its parameters; admins also see the broken ones and why."""
    book = command_book()
    body: dict = {"commands": [command.to_json() for command in book.usable()]}
    if is_admin():
        body["broken"] = [broken.to_json() for broken in book.broken()]
    return jsonify(body)


@bp.get("/<name>")
@describe("One command and its parameters", {200: api.Command, **api.REFUSED}, tag="commands")
def get_command(name: str):
    return jsonify(command_book().get(name).to_json())


def zip_command(command: Command, settings: Settings) -> tuple[Path, str, int, str]:
    """The command's files zipped into uploads/ as an upload would be, checked by the same rules.
    Returns the zip, its SHA-256 and size, and the digest of the files it holds."""
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=settings.uploads_dir, prefix="command-", suffix=".part", delete=False)
    path = Path(handle.name)
    try:
        with handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative in command.files:
                archive.write(command.folder / relative, relative)
        project = inspect_zip(path, zip_limits(settings))
        check_requirements(read_requirements(path, project))
        digest = files_digest(command.folder, list(command.files))
        sha, size = hashlib.sha256(), 0
        with open(path, "rb") as zipped:
            for block in iter(lambda: zipped.read(1024 * 1024), b""):
                sha.update(block)
                size += len(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, sha.hexdigest(), size, digest


def _whole_number(body: dict, field: str, low: int, high: int) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{field} must be a whole number from {low} to {high}.")
    return value


def _points(command: Command, body: dict, settings: Settings) -> tuple[dict, list[dict] | None]:
    """The fixed parameters, checked, and each sweep job's (None without a sweep)."""
    given = checked_params(body.get("params"))
    sweep = body.get("sweep")
    if sweep is None:
        return command.resolve(given), None
    points = expand_sweep(sweep, given, settings.max_sweep_jobs)
    resolved = []
    for index, point in enumerate(points):
        try:
            resolved.append(command.resolve(point))
        except BadRequest as exc:
            raise BadRequest(f"In the sweep's job {index + 1}: {exc.message}", code=exc.code,
                             **{**exc.details, "job": index + 1}) from None
    return given, resolved


@bp.post("/<name>/jobs")
@describe("Queue a job (or a sweep) from a command", {201: api.Job, **api.REFUSED}, body=api.CommandRun,
          tag="commands")
def submit_command(name: str):
    """`{"params": {...}, "sweep": ..., "name", "priority", "timeout_s"}`: a job (or a sweep) from the command,
    its parameters checked against the declaration first; a bad one queues nothing."""
    nias = _nias()
    settings = nias.settings
    body = read_json()
    command = command_book().get(name)
    user = current_user()
    check_quota(nias.store, settings, user)
    fixed, points = _points(command, body, settings)
    check_room_for(nias.store, settings, user["id"], len(points) if points is not None else 1)
    label = body.get("name")
    if label is not None and not isinstance(label, str):
        raise BadRequest("name must be text.")
    priority = _whole_number(body, "priority", 0, 9) or 0
    timeout_s = _whole_number(body, "timeout_s", 1, settings.job_timeout_s)
    path, sha256, size, digest = zip_command(command, settings)  # only once everything asked for is checked
    pool = choose_pool(body.get("pool") if isinstance(body.get("pool"), str) else None, settings)
    submission = Submission(path, sha256, size, clean_name(label, command.name), user["id"], priority, timeout_s,
                            command=command.name, command_digest=digest, extra={"pool": pool})
    try:
        if points is not None:
            sweep_id = queue_sweep(nias, submission, points, body["sweep"], fixed)
            return jsonify(sweep_json(sweep_id)), 201
        job = queue_job(nias, submission, fixed)
    finally:
        path.unlink(missing_ok=True)  # moved into the job's folder, unless something failed
    logger.info("Job %s: from command %s (%s)", job["id"], command.name, digest[:12])
    return jsonify(job_json_with_position(job)), 201
