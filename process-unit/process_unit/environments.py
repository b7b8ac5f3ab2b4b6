"""Python environments for jobs, built with uv and cached by a hash of the requirements.

A repeat job with the same requirements finds its environment ready and pays nothing.
Builds happen in a private folder under a per-key file lock, then move into place with one
rename, so units sharing the cache never see (or corrupt) a half-built environment.

An environment whose requirements are not all pinned (`numpy`, `scipy>=1.13`) is not reused for
ever: older than NIAS_ENV_MAX_AGE_DAYS, or when a job asks for the newest versions, it is built
again. Each build is a generation of its own (`<key>@<time>`), and `<key>` links to the newest:
a job keeps the generation it started with, and an old generation is removed once no job that
started with it can still be running.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nias.errors import ExecutionFailed
from nias.ran_with import MAX_PACKAGES, PACKAGE, VERSION, Package, RanWith
from nias.requirements import check_requirements

logger = logging.getLogger(__name__)

READY_MARKER = ".nias-ready"
INSTALL_TIMEOUT_S = 900
# Installed into every environment, so `import nias_job; nias_job.progress(0.5, "half way")` works.
HELPER_MODULE = '''"""Report a NIAS job's progress: nias_job.progress(0.42, "filtering channel 3").

The same as printing the line `##nias progress 0.42 filtering channel 3` to stdout.
"""
import sys


def progress(fraction, message=""):
    fraction = min(max(float(fraction), 0.0), 1.0)
    sys.stdout.write(f"##nias progress {fraction:.4f} {message}\\n")
    sys.stdout.flush()
'''
HELPER_VERSION = "nias_job-1"


@dataclass(frozen=True)
class Environment:
    path: Path
    key: str
    cached: bool
    seconds: float
    built_at: float | None = None  # when this generation was built (epoch seconds)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def interpreter_identity(python: str) -> str:
    real = os.path.realpath(python)
    info = os.stat(real)
    return f"{real}:{info.st_size}:{int(info.st_mtime)}"


def all_pinned(requirements: list[str]) -> bool:
    """Whether every requirement names one exact version (`name==1.2.3`), so a rebuild changes nothing."""
    return all(re.fullmatch(r"[A-Za-z0-9._\-\[\], ]+==[A-Za-z0-9.+!_-]+(\s*;.*)?", line.strip())
               for line in requirements)


def environment_key(requirements: list[str], python_identity: str) -> str:
    digest = hashlib.sha256(f"{python_identity}|{HELPER_VERSION}".encode())
    digest.update(b"\0" + "\n".join(requirements).encode())
    return digest.hexdigest()[:32]


def _built_at(environment: Path) -> float | None:
    """When a ready environment was built: its marker's time (an old marker's file time); None if not ready."""
    marker = environment / READY_MARKER
    try:
        text = marker.read_text().strip()
    except OSError:
        return None
    try:
        return float(text)
    except ValueError:
        return marker.stat().st_mtime


class EnvironmentCache:
    def __init__(self, root: Path, uv: str, python: str, build_sdists: bool = False, *,
                 max_age_s: float = 7 * 86400, keep_old_s: float = 86400):
        self.root = root
        self.uv = uv
        self.python = python
        self.build_sdists = build_sdists  # building a source distribution runs its code as this unit
        self.max_age_s = max_age_s  # an unpinned environment older than this is built again
        self.keep_old_s = keep_old_s  # a replaced generation outlives every job that may still use it
        self._identity = interpreter_identity(python)
        root.mkdir(parents=True, exist_ok=True)

    def _uv_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            # The cache sits beside the environments so uv hard-links instead of copying.
            "UV_CACHE_DIR": str(self.root / ".uv-cache"),
            "UV_NO_PROGRESS": "1",
            "UV_PYTHON_DOWNLOADS": "never",
            **{k: v for k, v in os.environ.items()
               if k.startswith(("PIP_", "UV_INDEX", "UV_FIND_LINKS", "UV_NO_INDEX", "SSL_CERT"))},
        }

    def prepare(self, requirements_file: Path | None, log: Callable[[str], None], *,
                fresh: bool = False, pins: list[str] | None = None) -> Environment:
        """Return a ready environment for these requirements, building it if none is cached, or if
        the cached one is unpinned and too old, or `fresh` (the job asked for the newest versions).
        With `pins` ("re-run exactly": `name==version` of every package an earlier run had), those
        are the requirements instead of the project's, so the cache key is theirs."""
        started, asked_at = time.perf_counter(), time.time()
        if pins:
            text = "\n".join(pins)
            log(f"Re-running exactly: the environment is built from {len(pins)} pinned packages")
        else:
            text = requirements_file.read_text(errors="replace") if requirements_file and requirements_file.is_file() else ""
        requirements = check_requirements(text)  # again here: the unit trusts no file on the volume
        key = environment_key(requirements, self._identity)
        current = self.root / key
        if (usable := self._usable(current, requirements, fresh)) is not None:
            return Environment(usable, key, True, time.perf_counter() - started, _built_at(usable))
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Another unit may have built it while we waited: a fresh request takes that one too.
            if (usable := self._usable(current, requirements, fresh, built_since=asked_at)) is not None:
                return Environment(usable, key, True, time.perf_counter() - started, _built_at(usable))
            if _built_at(current) is not None and not fresh:
                log(f"Rebuilding the environment: it is older than {self.max_age_s / 86400:g} days and its "
                    "requirements are not all pinned")
            elif fresh and _built_at(current) is not None:
                log("Rebuilding the environment with the newest versions, as the job asked")
            generation = self._build(key, requirements, log)
        return Environment(generation, key, False, time.perf_counter() - started, _built_at(generation))

    def _usable(self, current: Path, requirements: list[str], fresh: bool,
                built_since: float | None = None) -> Path | None:
        """The generation `current` points to, if a job may use it as it is."""
        built = _built_at(current)
        if built is None:
            return None
        if fresh:  # only one built after the request (by another unit while we waited) will do
            return current.resolve() if built_since is not None and built >= built_since else None
        if not all_pinned(requirements) and time.time() - built > self.max_age_s:
            return None
        return current.resolve()

    def _build(self, key: str, requirements: list[str], log: Callable[[str], None]) -> Path:
        """Build a new generation of `key`, point `key` at it, and drop generations no job can still use."""
        current = self.root / key
        generation = self.root / f"{key}@{time.time():.3f}"
        self._build_into(generation, requirements, log)
        if current.exists() and not current.is_symlink():  # one made before generations: set it aside
            os.rename(current, self.root / f"{key}@{os.stat(current).st_mtime:.3f}-old")
        link = self.root / f".link-{key}-{uuid.uuid4().hex[:8]}"
        os.symlink(generation.name, link)
        os.replace(link, current)
        self._drop_old_generations(key, keep=generation)
        return generation

    def _drop_old_generations(self, key: str, keep: Path) -> None:
        for old in self.root.glob(f"{key}@*"):
            if old != keep and time.time() - os.stat(old).st_mtime > self.keep_old_s:
                shutil.rmtree(old, ignore_errors=True)

    def _build_into(self, target: Path, requirements: list[str], log: Callable[[str], None]) -> None:
        scratch = self.root / f".build-{target.name}-{uuid.uuid4().hex[:8]}"
        log(f"Preparing a Python environment ({len(requirements)} requirements)")
        try:
            self._run([self.uv, "venv", "--quiet", "--relocatable", "--python", self.python, str(scratch)], log)
            for site_packages in scratch.glob("lib/python3*/site-packages"):
                (site_packages / "nias_job.py").write_text(HELPER_MODULE)
            if requirements:
                listing = scratch / "requirements.lock.in"
                listing.write_text("\n".join(requirements) + "\n")
                wheels_only = [] if self.build_sdists else ["--no-build"]
                self._run([self.uv, "pip", "install", "--python", str(scratch / "bin" / "python"), *wheels_only,
                           "-r", str(listing)], log)
            (scratch / READY_MARKER).write_text(f"{time.time():.3f}\n")
            if target.exists():  # a leftover without its marker: never a usable environment
                shutil.rmtree(target)
            os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def touch(self, environment: Environment) -> None:
        """Mark a generation as in use now, so it is kept at least keep_old_s after its last job began."""
        try:
            os.utime(environment.path)
        except OSError:
            pass

    def _run(self, argv: list[str], log: Callable[[str], None]) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=self._uv_env(), timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ExecutionFailed(f"Installing the requirements took longer than {INSTALL_TIMEOUT_S} s.") from None
        except OSError as exc:
            raise ExecutionFailed(f"The environment tool could not start: {exc}") from None
        output = (done.stdout + done.stderr).strip()
        for line in output.splitlines():
            log(line)
        if done.returncode != 0:
            tail = "\n".join(output.splitlines()[-6:])
            raise ExecutionFailed(f"The requirements could not be installed:\n{tail}")


def _metadata_field(header: str, name: str) -> str | None:
    for line in header.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return None


def installed_packages(environment: Path) -> tuple[Package, ...]:
    """The distributions in an environment and their versions, read from their metadata files
    (nothing of the environment runs), sorted by name; the unit's own helper module is not one."""
    found = {}
    for info in sorted(environment.glob("lib/python3*/site-packages/*.dist-info"))[:MAX_PACKAGES]:
        try:
            with open(info / "METADATA", errors="replace") as handle:
                header = handle.read(4096).split("\n\n", 1)[0]
        except OSError:
            continue
        name, version = _metadata_field(header, "Name"), _metadata_field(header, "Version")
        if name and version and PACKAGE.fullmatch(name) and VERSION.fullmatch(version):
            found[name.lower()] = Package(name, version)
    return tuple(found[key] for key in sorted(found))


def python_version(environment: Path) -> str | None:
    """`3.11.7`, from the environment's pyvenv.cfg."""
    try:
        config = (environment / "pyvenv.cfg").read_text(errors="replace")
    except OSError:
        return None
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version") and VERSION.fullmatch(value.strip()):
            return value.strip()
    return None


def describe_environment(environment: Path, unit: str, host: str | None) -> RanWith:
    return RanWith(python_version(environment), installed_packages(environment), unit, host)
