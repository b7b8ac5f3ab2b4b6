"""Browsing a finished job's result, and any job's uploaded project: the list of files in each
and one file at a time; the project's zip as uploaded.

Member names are only ever looked up in the zip's own directory, never joined to a
filesystem path. Files are served so that a browser cannot run anything from them in the
page's origin: `nosniff`, a sandboxing CSP, and markup types as attachments.
"""
from __future__ import annotations

import logging
import mimetypes
import zipfile
from pathlib import Path
from urllib.parse import quote

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from nias.errors import NiasError
from nias.job_files import JobFiles

from backend import api_models as api
from backend.openapi import describe
from backend.auth import visible_job
from backend.image_size import HEAD_BYTES, image_size
from backend.jobs_api import finished_result, read_in_chunks
from backend.result_index import IndexedResult, ResultIndex
from backend.uploads import parse_int_field

logger = logging.getLogger(__name__)

bp = Blueprint("results", __name__, url_prefix="/api")
bp.record_once(lambda state: state.app.extensions.setdefault("result_index", ResultIndex()))

CHUNK_BYTES = 256 * 1024
MAX_LISTED = 10_000  # files in one listing answer; `offset` pages through more
FALLBACK_TYPE = "application/octet-stream"
# Types research output often has, fixed here so the answer does not depend on /etc/mime.types.
KNOWN_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".txt": "text/plain",
    ".log": "text/plain",
    ".out": "text/plain",
    ".md": "text/markdown",
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".py": "text/x-python",
    ".r": "text/x-r",
    ".sh": "text/x-sh",
    ".tex": "text/x-tex",
    ".ipynb": "application/x-ipynb+json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
    ".npy": FALLBACK_TYPE,
    ".zip": "application/zip",
}
MEASURABLE = {"image/png", "image/jpeg", "image/gif", "image/webp"}
# Markup a browser would render as a document: always served as a download.
ATTACHMENT_TYPES = {
    "text/html", "application/xhtml+xml", "text/xml", "application/xml",
    "text/javascript", "application/javascript",
}
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def guess_type(name: str) -> str:
    """The content type of a result file, from its name only (its bytes are never sniffed)."""
    suffix = Path(name).suffix.lower()
    if suffix in KNOWN_TYPES:
        return KNOWN_TYPES[suffix]
    return mimetypes.guess_type(name, strict=False)[0] or FALLBACK_TYPE


def _finished_result(job_id: str) -> Path:
    return finished_result(job_id)[1]


def _open_result(path: Path) -> IndexedResult:
    try:
        return current_app.extensions["result_index"].open(path)
    except (zipfile.BadZipFile, OSError) as exc:
        logger.error("Result %s: unreadable (%s)", path, exc)
        raise NiasError("The job's result cannot be read.", code="bad_result", status=500) from None


MEASURED_IMAGES = 50  # images in a listing whose width and height are read


def describe_member(info: zipfile.ZipInfo, archive: zipfile.ZipFile | None = None) -> dict:
    """A file's name, size and type; with the `archive`, an image's `width` and `height` too."""
    described = {"name": info.filename, "size": info.file_size, "type": guess_type(info.filename)}
    if archive is not None and described["type"] in MEASURABLE:
        try:
            with archive.open(info) as handle:
                size = image_size(handle.read(HEAD_BYTES))
        except (OSError, zipfile.BadZipFile, ValueError):
            size = None
        if size:
            described["width"], described["height"] = size
    return described


def _uploaded_project(job_id: str) -> Path:
    """A visible job's upload as accepted; 404 once retention (or a delete) removed it."""
    job = visible_job(job_id)
    path = JobFiles(current_app.extensions["nias"].settings.jobs_dir, job["id"]).upload
    if not path.is_file():
        raise NiasError(f"Job {job_id}'s uploaded project is no longer kept.", code="no_upload", status=404)
    return path


def _listing(path: Path):
    offset = parse_int_field(request.args.get("offset"), "offset", 0, 2**62) or 0
    limit = parse_int_field(request.args.get("limit"), "limit", 1, MAX_LISTED) or MAX_LISTED
    result = _open_result(path)
    files = result.files
    listed, measured = [], 0
    for info in files[offset:offset + limit]:
        measure = measured < MEASURED_IMAGES and guess_type(info.filename) in MEASURABLE
        measured += measure
        listed.append(describe_member(info, result.archive if measure else None))
    return jsonify({"files": listed, "total": len(files), "offset": offset})


@bp.get("/jobs/<job_id>/files")
@describe("List a result's files", {200: api.FileList, **api.REFUSED}, query=api.FileListQuery, tag="results")
def list_files(job_id: str):
    """The result's files by name; at most `limit` (10,000) from `offset`, with the `total`."""
    return _listing(_finished_result(job_id))


@bp.get("/jobs/<job_id>/project/files")
@describe("List the uploaded project's files", {200: api.FileList, **api.REFUSED}, query=api.FileListQuery,
          tag="results")
def list_project_files(job_id: str):
    """The uploaded project's files, as `/files` lists the result's."""
    return _listing(_uploaded_project(job_id))


@bp.get("/jobs/<job_id>/project/files/<path:name>")
@describe("One file of the uploaded project", {200: api.RESULT_FILE, **api.REFUSED}, query=api.FileQuery,
          tag="results")
def get_project_file(job_id: str, name: str):
    return _serve_member(_uploaded_project(job_id), name)


@bp.get("/jobs/<job_id>/project")
@describe("Download the uploaded project", {200: api.ZIP, **api.REFUSED}, tag="results")
def get_project(job_id: str):
    """The project's zip, as it was uploaded."""
    return send_file(_uploaded_project(job_id), mimetype="application/zip", as_attachment=True,
                     download_name=f"{job_id}-project.zip")


def _find_member(result: IndexedResult, name: str) -> zipfile.ZipInfo:
    info = result.find(name)
    if info is None:
        raise NiasError(f"The result has no file named {name!r}.", code="file_not_found", status=404)
    return info


def _disposition(kind: str, name: str) -> str:
    filename = name.rsplit("/", 1)[-1]
    ascii_name = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


@bp.get("/jobs/<job_id>/files/<path:name>")
@describe("One file of a result",
          {200: api.RESULT_FILE, **api.REFUSED},
          query=api.FileQuery, tag="results")
def get_file(job_id: str, name: str):
    """One file of the result; `?max_bytes=N` sends only its start (`X-Truncated: true`)."""
    return _serve_member(_finished_result(job_id), name)


def _serve_member(path: Path, name: str) -> Response:
    max_bytes = parse_int_field(request.args.get("max_bytes"), "max_bytes", 1, 2**62)
    as_download = request.args.get("download") in ("1", "true", "yes")
    result = _open_result(path)
    info = _find_member(result, name)
    size = info.file_size
    length = min(size, max_bytes) if max_bytes else size
    content_type = guess_type(info.filename)
    attachment = as_download or content_type in ATTACHMENT_TYPES
    headers = {
        **SAFE_HEADERS,
        "Content-Length": str(length),
        "Content-Disposition": _disposition("attachment" if attachment else "inline", info.filename),
        "X-File-Size": str(size),
        "X-Truncated": "true" if length < size else "false",
        "Cache-Control": "private, max-age=300",
    }
    return Response(read_in_chunks(result.archive.open(info), length, CHUNK_BYTES), status=200, headers=headers,
                    mimetype=content_type, direct_passthrough=True)
