"""A job's project taken from a git repository instead of a zip.

The backend fetches the one commit a ref names (`git fetch --depth 1`: a branch, a tag or a full
commit id; no submodules, no tags beyond it, no hooks, no credentials but an admin's per-host
token), records the commit, and packs its tree (or a subfolder of it, as the project's root) with
`git archive` into the zip the job is then accepted as, under the usual upload rules. Only the
hosts the admin lists in NIAS_GIT_HOSTS are reached, over https (or plain http for the hosts of
NIAS_GIT_HTTP_HOSTS); the fetch has NIAS_GIT_TIMEOUT_S and the upload size limit.
"""
from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from nias.errors import BadRequest, NiasError
from nias.settings import Settings

logger = logging.getLogger(__name__)

REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
WATCH_EVERY_S = 0.2


class GitFetchFailed(NiasError):
    """The repository could not be fetched or packed; the message says what git said."""

    code = "git_fetch_failed"
    status = 422


@dataclass(frozen=True)
class GitSource:
    url: str
    ref: str  # a branch, a tag or a full commit id
    path: str = ""  # the project's root inside the repository ("" is its top)

    def to_dict(self, commit: str | None = None) -> dict:
        return {"url": self.url, "ref": self.ref, "path": self.path, "commit": commit}


def _hosts(raw: str) -> set[str]:
    return {host.strip().lower() for host in raw.split(",") if host.strip()}


def parse_git_source(raw: Any, settings: Settings) -> GitSource:
    """The `git` field of a submit, checked against the admin's hosts; BadRequest naming what is wrong."""
    allowed = _hosts(settings.git_hosts)
    if not allowed:
        raise BadRequest("This server takes no jobs from git repositories (NIAS_GIT_HOSTS is empty).",
                         code="git_disabled")
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
        raise BadRequest('git must be an object like {"url": "https://host/repo.git", "ref": "main"}.')
    unknown = sorted(set(raw) - {"url", "ref", "path"})
    if unknown:
        raise BadRequest(f"git takes url, ref and path, not {', '.join(unknown)}.")
    url, ref, path = raw["url"].strip(), raw.get("ref") or "HEAD", raw.get("path") or ""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.username or parts.password:
        raise BadRequest("A git URL may not carry credentials; the admin sets a token per host.")
    if parts.scheme == "http" and host not in _hosts(settings.git_http_hosts):
        raise BadRequest(f"Plain http is not allowed for {host or 'this host'}; use https.")
    if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment:
        raise BadRequest("The git URL must be https://host/path (no query, no fragment).")
    if host not in allowed:
        raise BadRequest(f"Jobs may come only from the git hosts {', '.join(sorted(allowed))}, not {host}.",
                         code="git_host_not_allowed")
    if not isinstance(ref, str) or not (ref == "HEAD" or REF.fullmatch(ref)) or ".." in ref or ref.endswith(".lock"):
        raise BadRequest("ref must be a branch, a tag or a commit id (letters, digits, . _ / -).")
    if not isinstance(path, str) or len(path) > 500:
        raise BadRequest("path must be a folder of the repository, as text.")
    clean = PurePosixPath(path.strip("/"))
    if path and (clean.is_absolute() or any(part in ("..", ".git") for part in clean.parts)):
        raise BadRequest("path must be a folder inside the repository.")
    return GitSource(url=url, ref=ref, path="" if str(clean) == "." else str(clean))


def _token_header(settings: Settings, host: str) -> list[str]:
    """`http.extraHeader` for the admin's token of `host` (NIAS_GIT_TOKENS: host=user:token,...)."""
    for entry in settings.git_tokens.split(","):
        name, _, credential = entry.strip().partition("=")
        if name.strip().lower() == host and credential:
            basic = base64.b64encode(credential.strip().encode()).decode()
            return ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
    return []


def _git(settings: Settings, source: GitSource) -> list[str]:
    http = "always" if urlsplit(source.url).scheme == "http" else "never"
    return ["git", "-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", f"protocol.http.allow={http}",
            "-c", "http.followRedirects=false", "-c", "core.hooksPath=/dev/null", "-c", "credential.helper=",
            "-c", "submodule.recurse=false", "-c", "transfer.fsckObjects=true", "-c", "core.symlinks=false",
            *_token_header(settings, (urlsplit(source.url).hostname or "").lower())]


def _environment(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ASKPASS": "/bin/false",
            "LC_ALL": "C"}


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _run(argv: list[str], home: Path, settings: Settings, watch: Path | None = None) -> str:
    """Run git with the time limit (and, for a fetch, the size limit on what it writes); its output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=_environment(home), cwd=home,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + settings.git_timeout_s
        while True:
            ended = process.poll() is not None
            why = None
            if time.monotonic() > deadline:
                why = f"the fetch took longer than NIAS_GIT_TIMEOUT_S ({settings.git_timeout_s:g} s)"
            elif watch is not None and _folder_bytes(watch) > settings.max_upload_bytes:
                why = f"the repository is larger than the upload limit of {settings.max_upload_mb} MB"
            if why:
                if not ended:
                    os.killpg(process.pid, 9)
                process.wait()
                raise GitFetchFailed(f"The repository could not be fetched: {why}.")
            if ended:
                break
            time.sleep(WATCH_EVERY_S)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            said = err.read().decode(errors="replace").strip().splitlines()
            detail = next((line for line in reversed(said) if line.startswith(("fatal:", "error:"))),
                          said[-1] if said else f"git exited with {process.returncode}")
            raise GitFetchFailed(f"The repository could not be fetched: {detail[:300]}")
        return out.read().decode(errors="replace").strip()


def fetch_project(source: GitSource, settings: Settings, target: Path) -> str:
    """Pack the tree of `source` into the zip `target`; returns the commit it came from."""
    home = Path(tempfile.mkdtemp(prefix="git-", dir=target.parent))
    try:
        git = _git(settings, source)
        _run([*git, "init", "-q", "--bare", "repo.git"], home, settings)
        repo = ["--git-dir", str(home / "repo.git")]
        _run([*git, *repo, "fetch", "-q", "--depth", "1", "--no-tags", "--no-recurse-submodules", source.url,
              source.ref],
             home, settings, watch=home / "repo.git")
        commit = _run([*git, *repo, "rev-parse", "--verify", "FETCH_HEAD^{commit}"], home, settings)
        tree = f"{commit}:{source.path}" if source.path else commit
        try:
            _run([*git, *repo, "archive", "--format=zip", "-o", str(target), tree], home, settings)
        except GitFetchFailed:
            target.unlink(missing_ok=True)
            raise GitFetchFailed(f"The repository has no folder {source.path!r} at {source.ref}.") from None
        if target.stat().st_size > settings.max_upload_bytes:
            target.unlink()
            raise GitFetchFailed(f"The project packed from the repository is larger than the upload limit of "
                                 f"{settings.max_upload_mb} MB.")
        logger.info("Fetched %s at %s (%s)", source.url, source.ref, commit)
        return commit
    finally:
        shutil.rmtree(home, ignore_errors=True)
