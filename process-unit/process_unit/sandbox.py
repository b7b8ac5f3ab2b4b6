"""The job's sandbox: who the job runs as, what it can see, and how much it may use.

- An unprivileged user that is not the service's: the uid the attempt holds (`isolation.py`,
  from NIAS_JOB_UID_RANGE), or the one `NIAS_JOB_UID` names (by default 61000 plus a number
  derived from the unit's name). A unit not started as root cannot switch users and runs jobs as itself.
- With bubblewrap (`NIAS_SANDBOX=bwrap`, the default: a unit without it refuses to start), a mount, PID,
  IPC and network namespace that shows the job only its project folder, its environment, a
  small private /tmp and the system's read-only files; no network unless `NIAS_JOB_NETWORK=1`.
- Resource limits (setrlimit): memory (data segment, so GPU libraries that reserve address
  space still load), CPU time, processes, open files and file size; memory, processes and CPUs
  are limited again on the attempt's cgroup, where the unit has one.
"""
from __future__ import annotations

import ctypes
import logging
import os
import resource
import shutil
import signal
import subprocess
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from nias.errors import ConfigurationError
from nias.health import SandboxMode
from nias.settings import Settings

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
MB = 1024 * 1024
# System files a Python job may need, shown read-only; nothing else of /etc.
SYSTEM_FILES = ("/etc/alternatives", "/etc/ssl", "/etc/ca-certificates", "/etc/localtime", "/etc/mime.types",
                "/etc/fonts", "/etc/ld.so.cache", "/etc/nsswitch.conf")
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts")


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_s: int
    processes: int
    open_files: int
    file_mb: int

    def tightened(self, asked: dict | None) -> "Limits":
        """A job may ask for less than the admin's limits, never for more."""
        if not asked:
            return self
        lower = {name: min(int(value), getattr(self, name)) for name, value in asked.items()
                 if name in self.__dataclass_fields__ and isinstance(value, int) and value > 0}
        return replace(self, **lower)


def limits_from(settings: Settings) -> Limits:
    return Limits(settings.job_memory_mb, settings.job_cpu_s or settings.job_timeout_s, settings.job_processes,
                  settings.job_open_files, settings.job_file_mb)


def job_uid(settings: Settings) -> int | None:
    """The uid jobs run as, or None when this unit cannot switch users (it is not root)."""
    if os.geteuid() != 0:
        return None
    return settings.job_uid or 61000 + zlib.crc32(settings.unit_name.encode()) % 1000


class Sandbox:
    def __init__(self, settings: Settings):
        self.uid = job_uid(settings)
        self.network = bool(settings.job_network)
        self.tmp_mb = settings.job_tmp_mb
        self.limits = limits_from(settings)
        wanted = settings.sandbox
        if wanted not in ("auto", "bwrap", "off"):
            raise ConfigurationError(f"NIAS_SANDBOX must be auto, bwrap or off, not {wanted!r}")
        self.bwrap = shutil.which("bwrap") if wanted != "off" else None
        if wanted == "bwrap" and self.bwrap is None:
            raise ConfigurationError(
                "Jobs run in a bubblewrap sandbox (NIAS_SANDBOX=bwrap, the default), but bubblewrap (bwrap) is not "
                "installed: install it (Debian and Ubuntu: apt-get install bubblewrap), or set NIAS_SANDBOX=off to "
                "run jobs without one (they then see this host's files, processes and network; admins are warned).")
        if wanted == "auto" and self.bwrap is None:
            logger.warning("NIAS_SANDBOX=auto and bubblewrap is not installed: jobs run WITHOUT A SANDBOX")
        if self.bwrap is not None:
            self._check_bwrap_works()
        logger.info("Jobs run as uid %s, %s", self.uid if self.uid is not None else os.geteuid(),
                    "in a bubblewrap sandbox" if self.bwrap else "without a mount namespace")

    @property
    def mode(self) -> SandboxMode:
        return SandboxMode.BWRAP if self.bwrap else SandboxMode.NONE

    def _check_bwrap_works(self) -> None:
        """Make one empty sandbox as the job's user, so a host (or a container) that refuses bubblewrap
        its namespaces stops the unit at start with the reason, instead of failing every job."""
        uid = self.uid

        def as_job_user() -> None:
            if uid is not None:
                become(uid)

        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]
        try:
            probe = subprocess.run(argv, capture_output=True, timeout=30, preexec_fn=as_job_user, cwd="/")
            failure = probe.stderr.decode(errors="replace").strip()[:300] if probe.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = str(exc)[:300]
        if failure:
            raise ConfigurationError(
                f"bubblewrap cannot make a sandbox on this host ({failure}). It needs unprivileged user namespaces "
                "(in a container: security_opt seccomp=unconfined and apparmor=unconfined, see docker-compose.yaml); "
                "or set NIAS_SANDBOX=off to run jobs without a sandbox.")

    def check_reachable(self, *folders: Path) -> None:
        """The job's user must be able to pass through every parent of its folders and its environments."""
        if self.uid is None:
            return
        for folder in folders:
            for parent in [folder.resolve(), *folder.resolve().parents]:
                if parent.exists() and not os.stat(parent).st_mode & 0o001:
                    raise ConfigurationError(
                        f"Jobs run as uid {self.uid}, which cannot pass through {parent} (mode "
                        f"{oct(os.stat(parent).st_mode & 0o777)}); allow it (chmod o+x {parent}) or move "
                        "NIAS_WORK_DIR / NIAS_ENV_DIR elsewhere.")

    def prepare(self, work: Path, uid: int | None) -> None:
        """Give the attempt's folder to its user, closed to every other (0700); the unit (root) still
        reads what it writes. Without a user switch, it is still closed to other users."""
        work.chmod(0o700)
        if uid is None:
            return
        for folder, dirs, files in os.walk(work):
            os.chown(folder, uid, uid)
            for name in dirs + files:
                os.lchown(os.path.join(folder, name), uid, uid)

    def command(self, python: Path, project: Path, environment: Path) -> list[str]:
        if self.bwrap is None:
            return [str(python), "code.py"]
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--disable-userns",
                "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
                "--proc", "/proc", "--dev", "/dev", "--size", str(self.tmp_mb * MB), "--tmpfs", "/tmp"]
        for path in SYSTEM_FILES + (NETWORK_FILES if self.network else ()):
            argv += ["--ro-bind-try", path, path]
        if self.network:
            argv.append("--share-net")
        real_python = os.path.realpath(python)
        if not real_python.startswith("/usr/"):  # an interpreter outside /usr must be visible too
            argv += ["--ro-bind", str(Path(real_python).parents[1]), str(Path(real_python).parents[1])]
        argv += ["--ro-bind", str(environment), str(environment), "--bind", str(project), str(project),
                 "--ro-bind-try", str(project / "data"), str(project / "data"),  # the job's data sets: read only
                 "--remount-ro", "/", "--setenv", "TMPDIR", "/tmp", "--chdir", str(project), "--", str(python),
                 "code.py"]
        return argv

    def ask_to_stop(self, pgid: int) -> None:
        """SIGTERM to the job's processes, so the job may save its work within the grace period.

        Under bubblewrap, not to bwrap itself: SIGTERM kills it, and its --die-with-parent would
        then SIGKILL the whole job at once.
        """
        targets = [pgid] if self.bwrap is None else group_members(pgid, except_command="bwrap")
        signal_each = os.killpg if self.bwrap is None else os.kill
        for target in targets:
            try:
                signal_each(target, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def preexec(self, limits: Limits, uid: int | None, join: Callable[[], None] | None = None) -> Callable[[], None]:
        """Runs in the child before exec: `join` (its cgroup, while still root), limits, the job's
        user, then the parent-death signal."""

        rlimits = [(getattr(resource, name), value) for name, value in process_limits(limits, uid)]

        def enter() -> None:
            if join is not None:
                join()
            for which, value in rlimits:
                resource.setrlimit(which, value)
            if uid is not None:
                become(uid)
            # After the user switch, which clears it: if the unit dies, so does the job.
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        return enter


def process_limits(limits: Limits, uid: int | None) -> list[tuple[str, tuple[int, int]]]:
    """The rlimits a job's first process gets (by `resource` name): what the kernel enforces per
    process; the process count only for a uid of the job's own, since it counts per user."""
    rlimits = [("RLIMIT_DATA", (limits.memory_mb * MB,) * 2), ("RLIMIT_CPU", (limits.cpu_s, limits.cpu_s + 5)),
               ("RLIMIT_NOFILE", (limits.open_files,) * 2), ("RLIMIT_FSIZE", (limits.file_mb * MB,) * 2)]
    if uid is not None:
        rlimits.append(("RLIMIT_NPROC", (limits.processes,) * 2))
    return rlimits


def die_with_unit() -> None:
    """In a child before exec: SIGKILL it if the unit dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def become(uid: int) -> None:
    """In a child before exec: give up root for `uid` (its own group, no others)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def group_members(pgid: int, except_command: str = "") -> list[int]:
    """The pids in process group `pgid` (read from /proc), leaving out those running `except_command`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        command = text[text.index("(") + 1:text.rindex(")")]
        state_ppid_pgrp = text[text.rindex(")") + 2:].split()[:3]
        if int(state_ppid_pgrp[2]) == pgid and command != except_command:
            members.append(int(stat.parent.name))
    return members
