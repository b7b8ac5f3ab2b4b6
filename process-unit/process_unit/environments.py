"""Python environments for jobs, built with uv and cached by a hash of the requirements.

A repeat job with the same requirements finds its environment ready and pays nothing.
Builds happen in a private folder under a per-key file lock, then move into place with one
rename, so units sharing the cache never see (or corrupt) a half-built environment.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
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

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def interpreter_identity(python: str) -> str:
    real = os.path.realpath(python)
    info = os.stat(real)
    return f"{real}:{info.st_size}:{int(info.st_mtime)}"


def environment_key(requirements: list[str], python_identity: str) -> str:
    digest = hashlib.sha256(f"{python_identity}|{HELPER_VERSION}".encode())
    digest.update(b"\0" + "\n".join(requirements).encode())
    return digest.hexdigest()[:32]


class EnvironmentCache:
    def __init__(self, root: Path, uv: str, python: str, build_sdists: bool = False):
        self.root = root
        self.uv = uv
        self.python = python
        self.build_sdists = build_sdists  # building a source distribution runs its code as this unit
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
            **{k: v for k, v in os.environ.items() if k.startswith(("PIP_", "UV_INDEX", "SSL_CERT"))},
        }

    def prepare(self, requirements_file: Path | None, log: Callable[[str], None]) -> Environment:
        """Return a ready environment for these requirements, building it if none is cached."""
        started = time.perf_counter()
        text = requirements_file.read_text(errors="replace") if requirements_file and requirements_file.is_file() else ""
        requirements = check_requirements(text)  # again here: the unit trusts no file on the volume
        key = environment_key(requirements, self._identity)
        target = self.root / key
        if (target / READY_MARKER).exists():
            return Environment(target, key, True, time.perf_counter() - started)
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / READY_MARKER).exists():  # another unit built it while we waited
                return Environment(target, key, True, time.perf_counter() - started)
            self._build(target, requirements, log)
        return Environment(target, key, False, time.perf_counter() - started)

    def _build(self, target: Path, requirements: list[str], log: Callable[[str], None]) -> None:
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
            (scratch / READY_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
            if target.exists():  # a leftover without its marker: never a usable environment
                shutil.rmtree(target)
            os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

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
