"""Receiving a project upload: streamed to the shared volume, checked, then moved into place.

The multipart body is written straight into `<data>/uploads/` by a custom stream factory
(never held in memory). A refused upload leaves nothing behind.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import secrets
import socket
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from flask import Request, Response, jsonify
from werkzeug.exceptions import ClientDisconnected

from nias.archive import ProjectZip, ZipLimits, inspect_zip, read_requirements
from nias.errors import BadRequest, BadUpload, NiasError, StorageFull
from nias.requirements import check_requirements
from nias.settings import Settings

from backend.git_source import fetch_project, parse_git_source
from backend.live import Slots
from backend.sweeps import parse_json_field

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200

uploads_in_flight = Slots()  # uploads whose body is being received, per user


class UploadRequest(Request):
    """A request whose uploaded files go to `upload_dir` instead of a temporary spool."""

    upload_dir: Path | None = None

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.upload_dir is None:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        part = tempfile.NamedTemporaryFile(dir=self.upload_dir, prefix="upload-", suffix=".part", delete=False)
        self.__dict__.setdefault("upload_parts", []).append(Path(part.name))
        return part

    def discard_parts(self) -> None:
        for part in self.__dict__.pop("upload_parts", []):
            part.unlink(missing_ok=True)


class ReadTimeout:
    """WSGI middleware: a client that stops sending frees its worker thread after `seconds`.

    gunicorn's gthread workers read request bodies with blocking sockets and no time limit, so
    a stalled upload would otherwise hold a thread for ever.
    """

    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(self.seconds)
        return self.app(environ, start_response)


class UploadDeadline:
    """Cuts off an upload body that is still coming after `seconds`, however steadily it trickles.

    The per-read timeout (ReadTimeout) never fires for a client that sends a byte every few
    seconds, and gunicorn blocks in one read until a whole buffer has arrived; so a timer shuts
    the socket's reading side at the deadline, which ends the blocked read at once. The 408 can
    still be written; gunicorn then gives up the connection (its drain of the rest is bounded).
    """

    def __init__(self, sock: socket.socket | None, seconds: float):
        self.expired = False
        self._sock = sock
        self._lock = threading.Lock()
        self._finished = False
        self._timer = threading.Timer(seconds, self._expire) if sock is not None and seconds > 0 else None
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            try:
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already closed by the client

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        if self._timer is not None:
            self._timer.cancel()


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256: str
    size: int
    project: ProjectZip
    source: dict | None = None  # where it came from when not uploaded: {"git": {...}}


def new_job_id() -> str:
    return secrets.token_hex(8)


def zip_limits(settings: Settings) -> ZipLimits:
    return ZipLimits(settings.max_files, settings.max_unpacked_bytes, settings.max_ratio)


def clean_name(raw: str | None, fallback: str) -> str:
    """A job name is only a label: printable, trimmed, at most 200 characters."""
    def printable(text: str | None) -> str:
        return "".join(ch for ch in (text or "") if unicodedata.category(ch)[0] != "C").strip()

    return (printable(raw) or printable(fallback))[:MAX_NAME_LENGTH] or "job"


def file_digest(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


def _cut_off(settings: Settings, deadline: UploadDeadline) -> NiasError:
    if deadline.expired:
        return NiasError(f"The upload took longer than the limit of {settings.upload_timeout_s:g} s and was "
                         "dropped; send it over a faster connection, or ask the admin for a longer limit.",
                         code="upload_too_slow", status=408)
    return NiasError(f"The upload stopped before it was complete (nothing came for {settings.read_timeout_s:g} s, "
                     "or the connection closed) and was dropped.", code="upload_stalled", status=408)


def discard_body(request: UploadRequest) -> None:
    """Read and drop a request's body (bounded by the upload limit): answering before it is read
    would leave it on a kept-alive connection, where it would be parsed as the next request."""
    try:
        while request.stream.read(1024 * 1024):
            pass
    except (OSError, ValueError):
        pass  # a client that hangs up or stalls: the connection is done anyway


def too_many_uploads(settings: Settings, user_id: str) -> NiasError:
    if uploads_in_flight.held(user_id) >= settings.max_uploads_per_user:
        return NiasError(f"You are already sending {settings.max_uploads_per_user} uploads, the most at once; send "
                         "this one when one of them has arrived.", code="too_many_uploads", status=429,
                         limit=settings.max_uploads_per_user)
    return NiasError(f"The server is receiving {settings.max_uploads} uploads, the most at once; send this one "
                     "again in a minute.", code="too_many_uploads", status=429, limit=settings.max_uploads)


def refuse_unread(error: NiasError) -> Response:
    """An answer given before the body is read, which then closes the connection: reading the
    rest of a body still trickling in would hold this thread as long as the upload it refuses.
    (The backend's worker honours `Connection: close` and closes without waiting on the client.)"""
    response = jsonify(error.to_dict())
    response.status_code = error.status
    response.headers["Connection"] = "close"
    return response


def receive_upload(request: UploadRequest, settings: Settings, *,
                   screen_requirements: bool = True) -> tuple[Upload, str]:
    """Parse the multipart body, check the zip (and what requirements.txt names, unless a dry run
    reports on that itself), and return it with the name the client gave."""
    storage = received_file(request, settings)
    if (storage is None or not storage.filename) and request.form.get("git"):
        return receive_git_project(request, settings, screen_requirements=screen_requirements)
    if storage is None or not storage.filename:
        raise BadUpload("Attach the project as a .zip file in the form field 'file' (or name a git repository "
                        "in the field 'git').", code="missing_file")
    part = stored_part(storage)
    stem = Path(storage.filename).stem if storage.filename.lower().endswith(".zip") else storage.filename
    return _checked(part, settings, screen_requirements), clean_name(request.form.get("name"), stem)


def stored_part(storage) -> Path:
    """Where the stream factory wrote a received file (closed, complete)."""
    storage.stream.flush()
    part = Path(storage.stream.name)
    storage.stream.close()
    return part


def received_file(request: UploadRequest, settings: Settings):
    """The multipart body parsed, its field `file` streamed into the uploads folder (None if absent)."""
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    request.upload_dir = settings.uploads_dir
    deadline = UploadDeadline(request.environ.get("gunicorn.socket"), settings.upload_timeout_s)
    try:
        storage = request.files.get("file")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageFull("The server has no room left to store this upload; tell the admin.") from None
        raise _cut_off(settings, deadline) from None
    except ClientDisconnected:  # werkzeug's word for a body that stopped coming (timeout or hang-up)
        raise _cut_off(settings, deadline) from None
    finally:
        deadline.finish()
    if deadline.expired:  # a body cut short at the deadline may still parse as a truncated form
        raise _cut_off(settings, deadline)
    return storage


def _checked(part: Path, settings: Settings, screen_requirements: bool, source: dict | None = None) -> Upload:
    """The zip at `part` under the upload rules (and its requirements screened, unless told not to)."""
    project = inspect_zip(part, zip_limits(settings))
    if screen_requirements:
        check_requirements(read_requirements(part, project))
    sha256, size = file_digest(part)
    return Upload(part, sha256, size, project, source)


def receive_git_project(request: UploadRequest, settings: Settings, *,
                        screen_requirements: bool = True) -> tuple[Upload, str]:
    """The project of the form's `git` field, fetched and packed, then checked like an uploaded zip."""
    source = parse_git_source(parse_json_field(request.form.get("git"), "git"), settings)
    handle = tempfile.NamedTemporaryFile(dir=settings.uploads_dir, prefix="git-", suffix=".zip", delete=False)
    handle.close()
    part = Path(handle.name)
    request.__dict__.setdefault("upload_parts", []).append(part)  # removed with the request's parts unless kept
    commit = fetch_project(source, settings, part)
    stem = PurePosixPath(source.path or urlsplit(source.url).path).name.removesuffix(".git") or "project"
    upload = _checked(part, settings, screen_requirements, {"git": source.to_dict(commit)})
    return upload, clean_name(request.form.get("name"), f"{stem} @ {source.ref}")


def parse_flag(raw: str | None, field: str) -> int:
    """A form's yes/no field as 1 or 0 (absent: 0)."""
    value = (raw or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return 0
    if value in ("1", "true", "yes", "on"):
        return 1
    raise BadRequest(f"{field} must be true or false.")


def parse_int_field(raw: str | None, field: str, low: int, high: int) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{field} must be a whole number from {low} to {high}.", field=field) from None
    if not low <= value <= high:
        raise BadRequest(f"{field} must be a whole number from {low} to {high}.", field=field)
    return value
