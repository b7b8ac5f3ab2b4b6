"""A processing unit's link to the backend for a job's files: the upload in, the log and the result out.

Every transfer is streamed (memory stays a few blocks whatever the file's size), checked by size
and SHA-256, and retried with a growing pause when the backend does not answer or answers 5xx;
an interrupted download resumes where it stopped (`Range`). A 4xx answer is final: the backend
refuses this attempt (cancelled meanwhile, or held by another unit now).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import requests

from nias.errors import BadMessage, TransferFailed
from nias.internal import (OUTCOME_HEADER, PING_PATH, SHA256_HEADER, UNIT_HEADER, FileReceipt, PingAnswer,
                           dataset_path, encode_outcome, log_path, result_path, upload_path)
from nias.messages import JobEvent
from nias.retry import Backoff
from nias.settings import Settings
from nias.web import internal_headers

logger = logging.getLogger(__name__)

BLOCK = 1024 * 1024
CONNECT_TIMEOUT_S = 5


class _Again(Exception):
    """An answer worth trying again (5xx, a cut-off body, a checksum that does not match)."""


def _answer_text(response: requests.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    return (message if isinstance(message, str) else response.text[:200]) or f"HTTP {response.status_code}"


def file_digest(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


class BackendLink:
    def __init__(self, settings: Settings, *, backoff: Backoff | None = None,
                 session: requests.Session | None = None):
        self._url = settings.backend_url.rstrip("/")
        self._unit = settings.unit_name
        self._timeout = (CONNECT_TIMEOUT_S, settings.read_timeout_s)
        self._session = session or requests.Session()
        self._session.headers.update({**internal_headers(settings), UNIT_HEADER: settings.unit_name})
        self.backoff = backoff or Backoff(tries=6, first_s=0.5, max_s=8.0)
        # A finished job's result outlasts a backend restart or outage: offered until this bound.
        self.delivery = Backoff(tries=None, first_s=0.5, max_s=8.0, within_s=settings.result_delivery_s,
                                stop=self.backoff.stop)

    @property
    def url(self) -> str:
        return self._url

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code == 507:  # no room at the backend: trying again will not make any
            raise TransferFailed(f"{what}: {_answer_text(response)}", status=507)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _Again(f"{what}: the backend answered HTTP {response.status_code}: {_answer_text(response)}")
        if response.status_code >= 400:
            raise TransferFailed(f"{what}: the backend refused it (HTTP {response.status_code}): "
                                 f"{_answer_text(response)}", status=response.status_code)
        return response

    def _retried(self, call, what: str, backoff: Backoff | None = None):
        backoff = backoff or self.backoff
        started = time.monotonic()
        try:
            return backoff.call(call, (_Again, requests.ConnectionError, requests.Timeout,
                                       requests.exceptions.ChunkedEncodingError), what)
        except (_Again, requests.RequestException) as exc:
            tried = f"{backoff.tries} tries" if backoff.tries else f"{time.monotonic() - started:.0f} s of tries"
            raise TransferFailed(f"{what} failed after {tried}: {str(exc)[:300]}") from None

    # -- start-up ----------------------------------------------------------------------------
    def ping(self) -> PingAnswer:
        """The backend's answer to this unit's token; TransferFailed naming what is wrong otherwise."""
        try:
            response = self._session.get(self._url + PING_PATH, timeout=(CONNECT_TIMEOUT_S, 10))
        except requests.RequestException as exc:
            raise TransferFailed(f"The backend at {self._url} (NIAS_BACKEND_URL) does not answer: "
                                 f"{exc.__class__.__name__}.") from None
        if response.status_code in (401, 403):
            raise TransferFailed(f"The backend at {self._url} refuses this unit's NIAS_INTERNAL_TOKEN "
                                 f"(HTTP {response.status_code}).")
        try:
            return PingAnswer.decode(response.content) if response.status_code == 200 else self._not_nias(response)
        except BadMessage:
            return self._not_nias(response)

    def _not_nias(self, response: requests.Response) -> PingAnswer:
        raise TransferFailed(f"{self._url} (NIAS_BACKEND_URL) answers, but not as a NIAS backend "
                             f"(HTTP {response.status_code}).")

    # -- the upload ----------------------------------------------------------------------------
    def fetch_upload(self, job_id: str, attempt: int, target: Path, sha256: str, size: int,
                     cancelled: Callable[[], bool] | None = None) -> None:
        """Download the job's upload to `target` and check it against the message's size and digest."""
        self._fetch_checked(upload_path(job_id), f"Fetching the upload of job {job_id}", attempt, target, sha256,
                            size, cancelled)

    def fetch_dataset(self, job_id: str, attempt: int, target: Path, sha256: str, size: int,
                      cancelled: Callable[[], bool] | None = None) -> None:
        """Download a data set the job names to `target`, checked against its size and digest."""
        self._fetch_checked(dataset_path(job_id, sha256), f"Fetching the data set {sha256[:12]} of job {job_id}",
                            attempt, target, sha256, size, cancelled)

    def _fetch_checked(self, path: str, what: str, attempt: int, target: Path, sha256: str, size: int,
                       cancelled: Callable[[], bool] | None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)

        def fetch() -> None:
            have = target.stat().st_size if target.exists() else 0
            headers = {"Range": f"bytes={have}-"} if 0 < have < size else {}
            if have >= size and have:
                target.unlink()
                have, headers = 0, {}
            with self._session.get(self._url + path, params={"attempt": attempt}, headers=headers,
                                   stream=True, timeout=self._timeout) as response:
                self._check(response, what)
                if response.status_code != 206:
                    have = 0  # the whole file came: start over
                with open(target, "ab" if have else "wb") as handle:
                    for block in response.iter_content(BLOCK):
                        if cancelled is not None and cancelled():
                            raise TransferFailed(f"The job was cancelled: {what} stopped.")
                        handle.write(block)
            got_sha, got_size = file_digest(target)
            if got_size < size:
                raise _Again(f"{what}: the download stopped at {got_size} of {size} bytes")
            if got_size != size or got_sha != sha256:
                target.unlink()
                raise _Again(f"{what}: the file does not match its checksum ({got_size} bytes)")

        self._retried(fetch, what)

    # -- the log -------------------------------------------------------------------------------
    def append_log(self, job_id: str, attempt: int, offset: int, data: bytes) -> int:
        """Send `data`, which starts at `offset` of the attempt's log; returns the log's size at the backend."""
        what = f"Sending the log of job {job_id}"

        def send() -> int:
            response = self._session.post(self._url + log_path(job_id, attempt), params={"offset": offset},
                                          data=data, timeout=self._timeout)
            if response.status_code == 409:  # the backend has less than we thought: it says how much
                try:
                    return FileReceipt.decode(response.content).size
                except BadMessage:
                    pass
            return FileReceipt.decode(self._check(response, what).content).size

        return self._retried(send, what)

    # -- the result ----------------------------------------------------------------------------
    def put_result(self, job_id: str, attempt: int, path: Path, outcome: JobEvent | None = None) -> FileReceipt:
        """Send the result zip (with the outcome about to be published, which the backend keeps
        in case this unit dies before publishing it); returns once the backend has verified and kept it."""
        what = f"Sending the result of job {job_id}"
        sha256, size = file_digest(path)
        extra = {OUTCOME_HEADER: encode_outcome(outcome)} if outcome is not None else {}

        def send() -> FileReceipt:
            with open(path, "rb") as handle:
                response = self._session.put(
                    self._url + result_path(job_id, attempt), data=handle, timeout=self._timeout,
                    headers={SHA256_HEADER: sha256, "Content-Length": str(size),
                             "Content-Type": "application/zip", **extra})
            receipt = FileReceipt.decode(self._check(response, what).content)
            if receipt.size != size or receipt.sha256 != sha256:
                raise _Again(f"{what}: the backend kept {receipt.size} bytes, not the {size} sent")
            return receipt

        return self._retried(send, what, self.delivery)

