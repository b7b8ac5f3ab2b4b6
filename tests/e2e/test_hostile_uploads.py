"""Hostile zips and broken uploads against the real stack: the server answers 201 or a 4xx with a
JSON error, never a 5xx; it agrees with the archive rules; and nothing lands outside the job's
folder: not elsewhere in the data dir, not in `uploads/`, not beside the data dir."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings

from nias.archive import ZipLimits, inspect_zip
from nias.errors import BadUpload
from nias.settings import load_settings
from nias.web import PROBE_PREFIX
from tests.support.hostile_zips import (
    Entry, HostileZip, dangerous_entries, hostile_zips, landing_spots,
    otherwise_valid_projects_with_one_dangerous_entry, write_zip,
)
from tests.support.stack import healthy, wait_until

PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])
STORE_FILES = ("private/nias.db", "private/nias.db-wal", "private/nias.db-shm")
RUN_FOLDER = re.compile(r"^(?P<job>[^/]+)-(?P<attempt>\d+)$")


@pytest.fixture(scope="module")
def canary(stack):
    """A folder beside the data dir, where hostile names aim. It must stay empty."""
    folder = stack.data_dir.parent / f"{stack.data_dir.name}-canary"
    folder.mkdir(exist_ok=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def limits(stack) -> ZipLimits:
    configured = load_settings(stack.env)
    return ZipLimits(configured.max_files, configured.max_unpacked_bytes, configured.max_ratio)


# -- what is on disk --------------------------------------------------------------------------

def _tree(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path below `root` (files by size and mtime, folders and links by presence)."""
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        dirs[:] = [d for d in dirs if f"{prefix}{d}" not in skip]
        for name in dirs:
            found[f"{prefix}{name}/"] = ("dir",)
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # a running job's scratch files come and go
                continue
            found[f"{prefix}{name}"] = (info.st_size, info.st_mtime_ns)
    return found


@dataclass(frozen=True)
class Disk:
    data: dict[str, tuple]  # the data dir, without the units' environment cache (large, theirs)
    spots: frozenset[Path]  # where the zip's `..` and absolute names would land, that exist
    workdir: dict[str, tuple]  # the stack's own folder, without its growing log


def _extraction_bases(stack) -> list[Path]:
    """Folders a zip's names could be joined to: where it is received, stored and unpacked."""
    job = "0" * 16
    units = [stack.data_dir / "work" / f"unit-{i}" / f"{job}-1" / "project" for i in range(1, stack.units + 1)]
    return [stack.data_dir / "uploads", stack.data_dir / "jobs" / job, *units]


def _disk(stack, spots: set[Path]) -> Disk:
    workdir = _tree(stack.workdir)
    workdir.pop(stack.log_path.name, None)
    existing = frozenset(spot for spot in spots if os.path.lexists(spot))
    return Disk(_tree(stack.data_dir, skip=("envs",)), existing, workdir)


def _job_folders(disk: Disk) -> set[str]:
    return {p.split("/")[1] for p in disk.data if p.startswith("jobs/") and p.count("/") == 2 and p.endswith("/")}


def _allowed(path: str, new_job: str | None, earlier_jobs: set[str]) -> bool:
    """What the stack itself may write while an upload is handled and jobs run."""
    parts = path.rstrip("/").split("/")
    if parts[-1].startswith(PROBE_PREFIX):  # a health check's write test, removed at once
        return True
    if path in STORE_FILES or parts[0] in ("run", "envs"):
        return True
    if parts[0] == "jobs" and len(parts) >= 2:
        return parts[1] == new_job or (parts[1] in earlier_jobs and len(parts) >= 3 and parts[2] == "runs")
    if parts[0] == "work" and len(parts) >= 3 and parts[2] == ".unit":  # a unit's own files of its runs
        if len(parts) == 3:
            return True
        run = RUN_FOLDER.match(parts[3])
        return run is not None and run["job"] in earlier_jobs | {new_job}
    if parts[0] == "work" and len(parts) >= 3:
        run = RUN_FOLDER.match(parts[2])
        known = run is not None and run["job"] in earlier_jobs | {new_job}
        return known and (len(parts) == 3 or parts[3] in ("project", "tmp"))
    return False


def _assert_nothing_outside(before: Disk, after: Disk, canary: Path, new_job: str | None) -> None:
    assert not any(canary.iterdir()), f"written into the canary folder: {sorted(os.listdir(canary))}"
    assert after.spots <= before.spots, f"written outside the data dir: {sorted(after.spots - before.spots)}"
    assert after.workdir == before.workdir, "something changed in the stack's folder"
    new_uploads = {p for p in after.data if p.startswith("uploads/")} - set(before.data)
    assert not new_uploads, f"left behind in uploads/: {sorted(new_uploads)}"
    new_jobs = _job_folders(after) - _job_folders(before)
    assert new_jobs == ({new_job} if new_job else set()), f"new job folders: {sorted(new_jobs)}"
    earlier = _job_folders(before)
    changed = {p for p, v in after.data.items() if before.data.get(p) != v}
    stray = sorted(p for p in changed if not _allowed(p, new_job, earlier))
    assert not stray, f"written outside the job's folder: {stray[:10]}"


# -- uploading --------------------------------------------------------------------------------

def _library_verdict(path: Path, limits: ZipLimits) -> tuple[int, str | None]:
    """What `inspect_zip` makes of the zip, as (status, code) the server should answer."""
    try:
        inspect_zip(path, limits)
    except BadUpload as refused:
        return 400, refused.code
    except Exception as crash:  # the rules must name every zip they refuse; this is a bug of its own
        return 500, f"{crash.__class__.__name__}: {crash}"
    return 201, None


def _post(stack, path: Path, spec: HostileZip) -> requests.Response:
    form = {"name": spec.job_name} if spec.job_name is not None else {}
    with open(path, "rb") as handle:
        files = {"file": (spec.upload_filename, handle, "application/zip")}
        return stack.http.post(f"{stack.url}/api/jobs", files=files, data=form, timeout=60)


def _assert_a_201_or_a_json_4xx(response: requests.Response) -> None:
    assert response.status_code == 201 or 400 <= response.status_code < 500, (
        f"{response.status_code}: {response.text[:500]}")
    if response.status_code != 201:
        assert response.headers["Content-Type"].startswith("application/json"), response.headers
        error = response.json()["error"]
        assert isinstance(error["code"], str) and error["code"], error
        assert isinstance(error["message"], str) and error["message"], error


def _total(stack) -> int:
    listing = stack.http.get(f"{stack.url}/api/jobs", params={"per_page": 1}, timeout=30)
    assert listing.status_code == 200, listing.text
    return listing.json()["total"]


def _check_accepted_job(stack, job: dict, path: Path) -> None:
    fetched = stack.http.get(f"{stack.url}/api/jobs/{job['id']}", timeout=30)
    assert fetched.status_code == 200 and fetched.json()["id"] == job["id"]
    stored = stack.data_dir / "jobs" / job["id"] / "upload.zip"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    name = job["name"]
    assert 0 < len(name) <= 200 and not any(unicodedata.category(ch)[0] == "C" for ch in name), repr(name)
    _cancel(stack, job["id"])


def _cancel(stack, job_id: str) -> None:
    """Cancel so jobs do not pile up on the units; a claim racing the cancel answers `conflict`: retry."""
    for _ in range(20):
        cancel = stack.http.put(f"{stack.url}/api/jobs/{job_id}/state", json={"state": "cancelled"}, timeout=30)
        if cancel.status_code == 200 or cancel.json()["error"]["code"] == "invalid_transition":
            return
        assert cancel.json()["error"]["code"] == "conflict", cancel.text
    raise AssertionError(f"job {job_id} could not be cancelled: {cancel.text}")


def _upload_and_check(stack, canary: Path, path: Path, spec: HostileZip) -> requests.Response:
    """Upload one zip and check the answer, the job list and the disk around it."""
    spots = landing_spots(path, _extraction_bases(stack), stack.data_dir)
    total, before = _total(stack), _disk(stack, spots)
    response = _post(stack, path, spec)
    new_job = response.json()["id"] if response.status_code == 201 else None
    if new_job:
        _check_accepted_job(stack, response.json(), path)
    assert _total(stack) == total + (1 if new_job else 0)
    _assert_nothing_outside(before, _disk(stack, spots), canary, new_job)  # even after a 5xx
    _assert_a_201_or_a_json_4xx(response)
    return response


# -- the properties ---------------------------------------------------------------------------

@PROPERTY_SETTINGS
@given(spec=hostile_zips())
def test_any_hostile_zip_gets_201_or_a_4xx_and_nothing_lands_outside_its_job_folder(
        spec, stack, canary, limits, tmp_path):
    path = write_zip(spec, tmp_path / "hostile.zip", canary)
    status, code = _library_verdict(path, limits)
    dangerous = dangerous_entries(path)
    response = _upload_and_check(stack, canary, path, spec)
    if dangerous:
        assert response.status_code != 201, f"accepted a zip with {dangerous[:3]}"
    assert status != 500, f"inspect_zip raised {code} instead of refusing the zip"
    answered = response.json()["error"]["code"] if response.status_code != 201 else None
    event(f"{response.status_code} {answered or ''}{' (dangerous)' if dangerous else ''}")
    assert (response.status_code, answered) == (status, code), "the server and the archive rules disagree"


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(spec=otherwise_valid_projects_with_one_dangerous_entry())
def test_a_project_with_one_traversal_absolute_or_symlink_entry_is_refused_for_that_entry(
        spec, stack, canary, tmp_path):
    path = write_zip(spec, tmp_path / "dangerous.zip", canary)
    [dangerous] = dangerous_entries(path)
    response = _upload_and_check(stack, canary, path, spec)
    assert response.status_code == 400
    error = response.json()["error"]
    with zipfile.ZipFile(path) as archive:
        is_link = any(info.filename == dangerous and stat.S_ISLNK(info.external_attr >> 16)
                      for info in archive.infolist())  # a plain `output/` may share the link's name
    assert error["code"] == ("symlink_entry" if is_link else "unsafe_path"), (dangerous, error)
    assert repr(dangerous) in error["message"], (dangerous, error)  # the refusal names that entry


@pytest.mark.parametrize("version", [64, 99, 255])
def test_a_zip_that_needs_a_newer_zip_version_than_the_server_reads_is_refused_with_a_4xx(
        version, stack, canary, tmp_path):
    """zipfile raises NotImplementedError (not BadZipFile) for entries above version 6.3."""
    spec = HostileZip(entries=(Entry(b"code.py", data=b"print('hello')\n", extract_version=version),))
    path = write_zip(spec, tmp_path / "future.zip", canary)
    response = _upload_and_check(stack, canary, path, spec)
    assert response.status_code == 400


def _truncated_request(stack, body: bytes, claimed: int, *, half_close: bool) -> bytes:
    """Send headers claiming `claimed` body bytes, then only `body`, then hang up."""
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
            f"Authorization: Bearer {stack.admin_token}\r\n"
            "Content-Type: multipart/form-data; boundary=hostile\r\n"
            f"Content-Length: {claimed}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(head + body)
        if not half_close:
            return b""
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


BACKEND = "backend.app:create_served_app"  # the gunicorn master and its worker
PART_HEAD = (b'--hostile\r\nContent-Disposition: form-data; name="file"; filename="p.zip"\r\n'
             b"Content-Type: application/zip\r\n\r\n")
CUTS = {
    "after the headers": b"",
    "inside the part headers": PART_HEAD[:40],
    "inside the file": PART_HEAD + b"PK\x03\x04" + bytes(range(256)) * 800,
    "before the closing boundary": PART_HEAD + b"PK\x05\x06" + bytes(18) + b"\r\n",
}


@pytest.mark.parametrize("half_close", [False, True], ids=["closed", "half-closed"])
@pytest.mark.parametrize("cut", sorted(CUTS))
def test_a_truncated_upload_gets_no_5xx_and_leaves_the_server_answering_with_uploads_empty(
        cut, half_close, stack, canary):
    backend, total = set(stack.pids(BACKEND)), _total(stack)
    uploads = stack.data_dir / "uploads"
    before = set(os.listdir(uploads))
    answer = _truncated_request(stack, CUTS[cut], len(CUTS[cut]) + 5_000_000, half_close=half_close)
    if half_close:
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
        assert status is not None and 400 <= status < 500, answer[:300]
    wait_until(lambda: set(os.listdir(uploads)) <= before, timeout_s=15, message="uploads/ emptied")
    assert healthy(stack.url)
    assert _total(stack) == total
    assert set(stack.pids(BACKEND)) == backend, "a backend process died and was replaced"
    assert not any(canary.iterdir())
