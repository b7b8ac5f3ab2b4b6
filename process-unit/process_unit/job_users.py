"""A uid of its own for each running job, so no job can signal, trace or read another's files.

Uids come from NIAS_JOB_UID_RANGE. A uid is held by an exclusive flock on its lock file in a
host-local folder (/run/nias/job-uids): two units on one host never hold the same uid, and the
kernel frees the lock of a unit that dies, however it dies. Allocation starts after the last
uid this unit took, so a uid just given back is the last to be given again, and it skips uids
that still own a process (one a job left behind without a cgroup) or that name an account.

    users, reason = available(settings)   # None and why when the unit cannot switch users
    with users.allocate(f"{job_id}-{attempt}") as user:
        ... os.setgid(user.gid); os.setuid(user.uid) in the child ...
"""
from __future__ import annotations

import fcntl
import logging
import os
import pwd
import stat
from pathlib import Path

from nias.errors import NiasError
from nias.settings import Settings

logger = logging.getLogger(__name__)

RUNTIME_DIR = Path("/run/nias/job-uids")


class JobUsersUnavailable(NiasError):
    """Raised when jobs cannot get uids of their own on this unit; the message says why."""

    code = "job_users_unavailable"


class NoFreeJobUser(NiasError):
    """Raised when every uid of NIAS_JOB_UID_RANGE is held by a running job."""

    code = "no_free_job_user"
    status = 503


class JobUser:
    """One held uid; its lock lasts until `release()` or the death of the process that holds it."""

    def __init__(self, uid: int, lock_fd: int):
        self.uid = uid
        self.gid = uid
        self._lock_fd: int | None = lock_fd

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def release(self) -> None:
        if self._lock_fd is None:
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> "JobUser":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"JobUser(uid={self.uid}, held={self.held})"


class JobUsers:
    """The uids of one range, shared by every unit of the host through lock files in `runtime_dir`."""

    def __init__(self, uids: range, runtime_dir: Path = RUNTIME_DIR):
        self.uids = uids
        self.runtime_dir = runtime_dir
        self._next = 0
        _make_private_dir(runtime_dir)

    def allocate(self, holder: str = "") -> JobUser:
        """Hold a free uid for one job; `holder` (the job and attempt) is written into its lock file."""
        busy = uids_with_processes()
        count = len(self.uids)
        for step in range(count):
            index = (self._next + step) % count
            uid = self.uids[index]
            if uid in busy or _names_an_account(uid):
                continue
            user = self._try_lock(uid, holder)
            if user is not None:
                self._next = (index + 1) % count
                logger.info("Job user %s: held for %s", uid, holder or "a job")
                return user
        raise NoFreeJobUser(f"All {count} job uids ({self.uids.start}-{self.uids.stop - 1}) are in use.")

    def _try_lock(self, uid: int, holder: str) -> JobUser | None:
        fd = os.open(self.runtime_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)  # who holds it, for an admin's eyes
        return JobUser(uid, fd)


def available(settings: Settings, runtime_dir: Path = RUNTIME_DIR) -> tuple[JobUsers | None, str]:
    """The unit's JobUsers and "", or None and why its jobs run without a uid of their own."""
    uids = settings.job_uids  # a malformed range fails here, at start, with its name
    if os.geteuid() != 0:
        return None, "the unit does not run as root, so it cannot run jobs as other users"
    try:
        return JobUsers(uids, runtime_dir), ""
    except JobUsersUnavailable as exc:
        return None, exc.message


def uids_with_processes() -> set[int]:
    """The effective uids of every running process (the owner of its /proc entry)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                found.add(entry.stat(follow_symlinks=False).st_uid)
            except OSError:
                pass  # ended meanwhile
    return found


def _names_an_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _make_private_dir(folder: Path) -> None:
    """The lock folder must be root's alone: a job able to write there could hold uids hostage."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise JobUsersUnavailable(f"cannot create {folder} for the job uids' locks: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise JobUsersUnavailable(f"{folder} must be a folder owned by uid {os.geteuid()} that only it may write")
