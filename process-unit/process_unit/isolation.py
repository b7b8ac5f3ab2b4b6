"""What keeps one attempt's processes together and apart from every other job's: a cgroup of its
own (every process it starts, whatever it does to its session, is frozen, limited and killed with
it) and a uid of its own (no job can signal, trace or read another's files).

Each layer falls back when the unit cannot have it (not root, no cgroup mount): to the job's
process group, and to the one uid the sandbox names. The unit says which at start.

    isolation = Isolation.for_unit(settings, sandbox)
    box = isolation.open_box(f"{job_id}-{attempt}", limits)
    Popen(..., preexec_fn=sandbox.preexec(limits, box.uid, box.enter)); box.started(process)
    box.pause(); box.resume(); box.ask_to_stop(); box.end_all(); box.memory_exceeded(); box.close()
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from dataclasses import dataclass

from nias.settings import Settings

from process_unit import cgroups, job_users
from process_unit.sandbox import MB, Limits, Sandbox

logger = logging.getLogger(__name__)

KILL_WAIT_S = 10.0


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def cgroup_name(settings: Settings) -> str:
    """The unit's cgroup: its queue prefix and name, so two deployments on one host never share one
    (a unit cleans its own stale groups at start)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{settings.queue_prefix}.{settings.unit_name}")[:200]


def _running(command: str, pids: set[int]) -> set[int]:
    """Those of `pids` whose command is `command` (from /proc; a process gone meanwhile is left out)."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == command:
                    found.add(pid)
        except OSError:
            continue
    return found


@dataclass
class JobBox:
    """One attempt's processes: its cgroup (or process group) and its uid."""

    name: str
    sandbox: Sandbox
    uid: int | None
    group: cgroups.JobGroup | None
    user: job_users.JobUser | None
    process: subprocess.Popen | None = None

    def enter(self) -> None:
        """In the child before exec, while it is still root: join the cgroup."""
        if self.group is not None:
            self.group.enter()

    def started(self, process: subprocess.Popen) -> None:
        self.process = process

    def pause(self) -> None:
        if self.group is not None and self._in_group(self.group.freeze):
            return
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.group is not None and self._in_group(self.group.thaw):
            return
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGCONT)

    def _in_group(self, operation, *args) -> bool:
        """Run a cgroup operation; False (logged) when the group is gone or refuses, so the caller falls back."""
        try:
            operation(*args)
            return True
        except OSError as exc:
            logger.warning("Job box %s: cgroup %s failed (%s); using the process group", self.name,
                           getattr(operation, "__name__", "operation"), exc)
            return False

    def ask_to_stop(self) -> None:
        """SIGTERM to the job's own processes (not bwrap's), so it can save its work in the grace period."""
        if self.process is None:
            return
        self.resume()  # a paused job must run to receive SIGTERM
        if self.group is None:
            self.sandbox.ask_to_stop(self.process.pid)
            return
        # Not bwrap itself: SIGTERM kills it, and its --die-with-parent would SIGKILL the job at once.
        try:
            sparing = _running("bwrap", self.group.pids()) if self.sandbox.bwrap else set()
        except OSError:
            self.sandbox.ask_to_stop(self.process.pid)
            return
        self._in_group(self.group.signal_all, signal.SIGTERM, sparing)

    def end_all(self) -> None:
        """Kill every process of the attempt, those that left its session too, and wait for them."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)
        try:
            if self.group is not None and not self.group.kill_all(KILL_WAIT_S):
                logger.error("Job box %s: processes outlived SIGKILL", self.name)
        except OSError as exc:
            logger.warning("Job box %s: cgroup gone before the end (%s)", self.name, exc)

    def memory_exceeded(self) -> bool:
        try:
            return self.group is not None and self.group.oom_killed()
        except OSError:
            return False

    def close(self) -> None:
        """After end_all: remove the cgroup and give the uid back."""
        try:
            if self.group is not None:
                self.group.remove()
        except OSError as exc:
            logger.warning("Job box %s: cgroup not removed (%s)", self.name, exc)
        finally:
            if self.user is not None:
                self.user.release()


class Isolation:
    """The unit's means of isolating attempts: a cgroup root and a range of uids, where it has them."""

    def __init__(self, sandbox: Sandbox, root: cgroups.CgroupRoot | None, users: job_users.JobUsers | None,
                 fixed_uid: int | None, cpus: float = 0.0):
        self.sandbox = sandbox
        self.root = root
        self.users = users
        self.fixed_uid = fixed_uid
        self.cpus = cpus

    @classmethod
    def for_unit(cls, settings: Settings, sandbox: Sandbox) -> "Isolation":
        root, why_not = cgroups.available(cgroup_name(settings))
        if root is None:
            logger.warning("Jobs run without a cgroup of their own (%s): a process that leaves the job's "
                           "session outlives it, and memory is limited per process only", why_not)
        else:
            root.clean_stale()
        users, no_users = (None, "NIAS_JOB_UID names the one uid") if settings.job_uid else job_users.available(settings)
        if users is None and sandbox.uid is not None and not settings.job_uid:
            logger.warning("Jobs share uid %s (%s)", sandbox.uid, no_users)
        logger.info("Each job gets %s and %s", "its own cgroup" if root else "its process group",
                    "its own uid" if users else f"uid {sandbox.uid if sandbox.uid is not None else os.geteuid()}")
        if settings.job_cpus and (root is None or "cpu" not in root.folders and root.version == 1):
            logger.warning("NIAS_JOB_CPUS=%s is not enforced: no cpu cgroup controller here", settings.job_cpus)
        return cls(sandbox, root, users, sandbox.uid, settings.job_cpus)

    @property
    def own_uids(self) -> bool:
        return self.users is not None

    def open_box(self, name: str, limits: Limits) -> JobBox:
        """The box for one attempt: a new cgroup with its limits, and a uid held until `close()`."""
        user = self.users.allocate(name) if self.users is not None else None
        try:
            group = None
            if self.root is not None:
                group = self.root.create(name, memory_bytes=limits.memory_mb * MB, pids_max=limits.processes,
                                         cpus=self.cpus or None)
        except BaseException:
            if user is not None:
                user.release()
            raise
        return JobBox(name, self.sandbox, user.uid if user is not None else self.fixed_uid, group, user)
