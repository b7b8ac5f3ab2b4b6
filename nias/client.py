"""A small Python client for the NIAS REST API (used by the CLI, the tests and the benchmarks)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from nias.errors import NiasError, ServiceUnavailable
from nias.multipart import MultipartUpload, Progress
from nias.states import is_final


class ApiError(NiasError):
    """Raised when the server answers a request with an error; carries its code and status."""

    @classmethod
    def from_response(cls, response: requests.Response) -> "ApiError":
        try:
            body = response.json()["error"]
            code, message = body.get("code", "error"), body.get("message", response.reason)
            extra = {k: v for k, v in body.items() if k not in ("code", "message")}
        except (ValueError, KeyError, TypeError):
            code, message, extra = "http_error", f"{response.status_code} {response.reason}", {}
        return cls(message, code=code, status=response.status_code, **extra)


# The backend closes a connection idle for 5 s (gunicorn's keepalive). A request sent on a pooled
# connection just as the server closes it fails without an answer: safe requests are retried, and a
# request that is not safe to repeat never goes on a connection idle for longer than this.
IDLE_REUSE_S = 2.0


class _RetryDropped(Retry):
    """Retries a safe request whose connection failed or dropped; a server that is only slow to
    answer is not asked again (the caller's timeout stands)."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):  # type: ignore[override]
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


SAFE_RETRIES = _RetryDropped(total=3, connect=3, read=2, status=0, other=0, backoff_factor=0.1,
                             allowed_methods=Retry.DEFAULT_ALLOWED_METHODS, raise_on_status=False)


class ApiSession(requests.Session):
    """A requests session that outlives the server's keep-alive: see IDLE_REUSE_S."""

    def __init__(self) -> None:
        super().__init__()
        adapter = HTTPAdapter(max_retries=SAFE_RETRIES)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._last_answer = 0.0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if method.upper() not in SAFE_RETRIES.allowed_methods and time.monotonic() - self._last_answer > IDLE_REUSE_S:
            self.close()  # drops the idle pooled connections; the next request opens a new one
        response = super().request(method, url, *args, **kwargs)
        self._last_answer = time.monotonic()
        return response


class NiasClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 60):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = ApiSession()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            response = self.session.request(method, f"{self.base_url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"NIAS is unreachable at {self.base_url}: {exc.__class__.__name__}") from None
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def submit(self, project: Path | BinaryIO, *, name: str | None = None, params: dict | None = None,
               sweep: dict | list | None = None, on_progress: Progress | None = None, **fields: Any) -> dict:
        """Upload a project zip (a path or an open binary file); returns the new job, or the new
        sweep when `sweep` is given. A path is streamed from disk, calling `on_progress` with the
        bytes sent as they go."""
        data = self._submit_fields(name, params, sweep, fields)
        if isinstance(project, (str, Path)):
            with MultipartUpload(data, "file", Path(project), on_progress=on_progress) as body:
                return self._request("POST", "/api/jobs", data=body,
                                     headers={"Content-Type": body.content_type}).json()
        files = {"file": (getattr(project, "name", "project.zip"), project, "application/zip")}
        return self._request("POST", "/api/jobs", files=files, data=data).json()

    def submit_git(self, url: str, *, ref: str | None = None, path: str | None = None, name: str | None = None,
                   params: dict | None = None, sweep: dict | list | None = None, **fields: Any) -> dict:
        """Queue a job (or a sweep) whose project the server fetches from a git repository at `ref`
        (a branch, a tag or a commit; default its HEAD), `path` naming a subfolder as its root."""
        git = {"url": url, **({"ref": ref} if ref else {}), **({"path": path} if path else {})}
        data = {**self._submit_fields(name, params, sweep, fields), "git": json.dumps(git)}
        return self._request("POST", "/api/jobs", files={key: (None, value) for key, value in data.items()}).json()

    @staticmethod
    def _submit_fields(name: str | None, params: dict | None, sweep: dict | list | None, fields: dict) -> dict:
        datasets = fields.pop("datasets", None)  # names of data sets: ["eeg"], or "owner-email/eeg" for a shared one
        data = {key: str(value) for key, value in fields.items() if value is not None}
        for key, value in (("params", params), ("sweep", sweep), ("datasets", datasets or None)):
            if value is not None:
                data[key] = json.dumps(value)
        if name is not None:
            data["name"] = name
        return data

    def upload_dataset(self, name: str, path: Path) -> dict:
        """Store the file at `path` (a .zip is unpacked for jobs) as the data set `name`; streamed from disk."""
        with MultipartUpload({"name": name}, "file", Path(path), media_type="application/octet-stream") as body:
            return self._request("POST", "/api/datasets", data=body, headers={"Content-Type": body.content_type}).json()

    def datasets(self) -> list[dict]:
        return self._request("GET", "/api/datasets").json()["datasets"]

    def job(self, job_id: str, *, wait_s: int = 0, state: str | None = None, until_final: bool = False) -> dict:
        params: dict[str, Any] = {"wait_s": wait_s} if wait_s else {}
        if state:
            params["state"] = state
        if until_final:
            params["until"] = "final"
        return self._request("GET", f"/api/jobs/{job_id}", params=params,
                             timeout=self.timeout_s + wait_s).json()

    def jobs(self, *, state: str | None = None, page: int = 1, per_page: int = 20) -> dict:
        params = {"page": page, "per_page": per_page, **({"state": state} if state else {})}
        return self._request("GET", "/api/jobs", params=params).json()

    def wait(self, job_id: str, *, timeout_s: float = 600) -> dict:
        """Block until the job reaches a final state with its result recorded (a cancelled job's kept
        result comes a moment later); raises TimeoutError past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:  # one long poll answered when the job ends, renewed every 30 s
            remaining = deadline - time.monotonic()
            job = self.job(job_id, wait_s=max(1, min(int(remaining), 30)), until_final=True)
            if is_final(job["state"]) and not job.get("result_pending"):
                return job
            if deadline - time.monotonic() <= 0:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout_s} s")

    def log(self, job_id: str, *, offset: int = 0) -> str:
        return self._request("GET", f"/api/jobs/{job_id}/log", params={"offset": offset}).text

    def log_from(self, job_id: str, offset: int) -> tuple[bytes, int]:
        """What the log holds after byte `offset`, and the log's size when asked (where to go on from)."""
        response = self._request("GET", f"/api/jobs/{job_id}/log", params={"offset": offset})
        return response.content, int(response.headers.get("X-Log-Size", offset + len(response.content)))

    def me(self) -> dict:
        return self._request("GET", "/api/me").json()

    def summary(self) -> dict:
        return self._request("GET", "/api/summary").json()

    def set_priority(self, job_id: str, priority: int) -> dict:
        return self._request("PUT", f"/api/jobs/{job_id}/priority", json={"priority": priority}).json()

    def create_token_with_password(self, email: str, password: str, token_name: str) -> str:
        """Sign in with a password, make an API token named `token_name`, sign out; returns the token."""
        answer = self._request("POST", "/api/auth/login", json={"email": email, "password": password}).json()
        csrf = {"X-CSRF-Token": answer["csrf_token"]}
        try:
            return self._request("POST", "/api/tokens", json={"name": token_name}, headers=csrf).json()["token"]
        finally:
            self._request("POST", "/api/auth/logout", headers=csrf)
            self.session.cookies.clear()

    def _download(self, path: str, destination: Path) -> Path:
        response = self._request("GET", path, stream=True)
        with open(destination, "wb") as handle:
            for chunk in response.iter_content(1024 * 1024):
                handle.write(chunk)
        return destination

    def result(self, job_id: str, destination: Path) -> Path:
        return self._download(f"/api/jobs/{job_id}/result", destination)

    def set_state(self, job_id: str, state: str) -> dict:
        return self._request("PUT", f"/api/jobs/{job_id}/state", json={"state": state}).json()

    def history(self, job_id: str) -> list[dict]:
        return self._request("GET", f"/api/jobs/{job_id}/history").json()["transitions"]

    def rerun(self, job_id: str, *, params: dict | None = None, exact: bool = False, fresh_env: bool = False) -> dict:
        """A new job from an ended one's upload; `exact`: its environment pinned to what the original ran
        with; `fresh_env`: built anew with the newest versions."""
        body = {**({"params": params} if params is not None else {}), **({"exact": True} if exact else {}),
                **({"fresh_env": True} if fresh_env else {})}
        return self._request("POST", f"/api/jobs/{job_id}/rerun", json=body or None).json()

    def provenance(self, job_id: str) -> dict:
        """What exactly a job ran: its upload's sha256, origin, unit, host, executor, Python and packages."""
        return self._request("GET", f"/api/jobs/{job_id}/provenance").json()

    def commands(self) -> dict:
        """`{"commands": [...]}`, and for an admin `"broken": [...]` too."""
        return self._request("GET", "/api/commands").json()

    def run_command(self, command: str, *, params: dict | None = None, sweep: dict | list | None = None,
                    **fields: Any) -> dict:
        """Queue a job (or, with `sweep`, a sweep) from a command; returns it."""
        body = {"params": params or {}, **{k: v for k, v in fields.items() if v is not None}}
        if sweep is not None:
            body["sweep"] = sweep
        return self._request("POST", f"/api/commands/{command}/jobs", json=body).json()

    def sweep(self, sweep_id: str) -> dict:
        return self._request("GET", f"/api/sweeps/{sweep_id}").json()

    def cancel_sweep(self, sweep_id: str) -> dict:
        return self._request("POST", f"/api/sweeps/{sweep_id}/cancel").json()

    def sweep_results(self, sweep_id: str, destination: Path) -> Path:
        """Every finished job's result of the sweep, in one zip."""
        return self._download(f"/api/sweeps/{sweep_id}/results", destination)

    def wait_sweep(self, sweep_id: str, *, timeout_s: float = 600) -> dict:
        """Block until every job of the sweep has ended with its result recorded."""
        deadline = time.monotonic() + timeout_s
        while True:
            sweep = self.sweep(sweep_id)
            if all(is_final(job["state"]) and not job.get("result_pending") for job in sweep["jobs"]):
                return sweep
            if time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} has jobs still going after {timeout_s} s")
            waiting = next(job for job in sweep["jobs"] if not is_final(job["state"]) or job.get("result_pending"))
            self.job(waiting["id"], wait_s=5, state=waiting["state"])
