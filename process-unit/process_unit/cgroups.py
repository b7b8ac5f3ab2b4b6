"""A control group per job attempt: everything the job started ends with it.

A job that calls setsid() or double-forks leaves its process group, but never its cgroup. So
each attempt gets one, below a parent of its unit, nested in the unit's own cgroup:
`<the unit's cgroup>/nias/<unit name>/<job>-<attempt>`, in the memory, pids and freezer
hierarchies (cgroup v1) or in the one unified hierarchy (cgroup v2). Through it the unit
freezes and thaws every process of the job, kills them all and waits until none is left,
limits memory and processes, and learns whether the kernel killed one for want of memory.

    root, reason = available(settings.unit_name)   # None and why, e.g. not root, not mounted
    root.clean_stale()                               # groups a crashed unit left behind
    group = root.create(f"{job_id}-{attempt}", memory_bytes=..., pids_max=...)
    Popen(..., preexec_fn=group.enter)               # the child joins before it runs anything
    group.freeze(); group.thaw(); group.kill_all(); group.oom_killed(); group.remove()
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path
from typing import Collection

from nias.errors import NiasError

logger = logging.getLogger(__name__)

V1_CONTROLLERS = ("memory", "pids", "freezer")
V2_CONTROLLERS = ("memory", "pids")
OPTIONAL_CONTROLLERS = ("cpu",)  # used where mounted (v1) or offered (v2): a CPU quota per job
CPU_PERIOD_US = 100_000
UNIFIED = "unified"  # the key of the one hierarchy of cgroup v2
PARENT = "nias"
SERVICE_LEAF = "nias-service"  # v2: where the unit's own processes go, so its cgroup can delegate
POLL_S = 0.02


class CgroupsUnavailable(NiasError):
    """Raised when this unit cannot give its jobs cgroups; the message says why."""

    code = "cgroups_unavailable"


def _write(path: Path, value: str) -> None:
    """One write(2), as cgroup files expect."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _pids_in(folder: Path) -> set[int]:
    try:
        return {int(line) for line in (folder / "cgroup.procs").read_text().split()}
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODEV):  # gone, or being removed at this moment
            return set()
        raise


def _wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def _keyed(text: str) -> dict[str, int]:
    """`oom_kill 2\\nunder_oom 0` -> {"oom_kill": 2, "under_oom": 0}."""
    pairs = (line.split() for line in text.splitlines())
    return {pair[0]: int(pair[1]) for pair in pairs if len(pair) == 2 and pair[1].isdigit()}


class JobGroup:
    """One attempt's cgroup: `folders` maps each hierarchy to the attempt's folder in it."""

    def __init__(self, name: str, folders: dict[str, Path]):
        self.name = name
        self.folders = folders
        # Encoded once, so the child needs no allocation between fork and exec beyond the call itself.
        self._procs_files = [str(folder / "cgroup.procs").encode() for folder in folders.values()]

    def enter(self) -> None:
        """Move the calling process into the group: usable as (or first inside) a Popen preexec_fn.

        Writing 0 to cgroup.procs means "the writer": no pid to format. It needs root, so it
        must run before the child gives up its user; Popen(user=...) switches before preexec_fn
        runs: with it, call `add(pid)` after Popen instead (the job then starts outside the
        group for a moment).
        """
        for path in self._procs_files:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def add(self, pid: int) -> None:
        """Move an already started process into the group (its children from then on follow it)."""
        for folder in self.folders.values():
            _write(folder / "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        """Every process in the group, whatever its session or process group."""
        found: set[int] = set()
        for folder in self.folders.values():
            found |= _pids_in(folder)
        return found

    def signal_all(self, signum: int, sparing: Collection[int] = ()) -> int:
        """Send `signum` to every process of the group but `sparing`; returns to how many.

        A SIGTERM this way reaches the processes that left the job's process group too. A
        frozen group handles it only once thawed.
        """
        sent = 0
        for pid in self.pids() - set(sparing):
            try:
                os.kill(pid, signum)
                sent += 1
            except ProcessLookupError:
                pass
        return sent

    def kill_all(self, timeout_s: float = 10.0) -> bool:
        """SIGKILL every process and wait until the group is empty; False if some outlived `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._kill_members()
            if _wait_until(lambda: not self.pids(), min(0.5, max(deadline - time.monotonic(), 0))):
                return True
            if time.monotonic() >= deadline:
                logger.warning("Cgroup %s: processes %s outlived SIGKILL", self.name, sorted(self.pids()))
                return False

    def _kill_members(self) -> None:
        # Frozen, the group cannot fork while its members are signalled one by one.
        self.freeze(timeout_s=1.0)
        self.signal_all(signal.SIGKILL)
        self.thaw()  # a frozen process dies only once it runs again

    def remove(self, timeout_s: float = 5.0) -> bool:
        """Delete the group's folders; they must be empty (see `kill_all`). False if one stayed."""
        removed = True
        for folder in self.folders.values():
            removed = _remove_folder(folder, timeout_s) and removed
        return removed

    # -- what each cgroup version does its own way -------------------------------------------
    def set_limits(self, memory_bytes: int | None = None, pids_max: int | None = None,
                   cpus: float | None = None) -> None:
        raise NotImplementedError

    def freeze(self, timeout_s: float = 5.0) -> bool:
        """Stop every process of the group; True once the kernel says all are frozen."""
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group because it hit the memory limit."""
        raise NotImplementedError


class JobGroupV1(JobGroup):
    """cgroup v1: one folder each in the memory, pids and freezer hierarchies."""

    def set_limits(self, memory_bytes: int | None = None, pids_max: int | None = None,
                   cpus: float | None = None) -> None:
        memory = self.folders["memory"]
        if memory_bytes is not None:
            names = ["memory.limit_in_bytes"]
            if (memory / "memory.memsw.limit_in_bytes").exists():  # memory and swap: no escape into swap
                names.append("memory.memsw.limit_in_bytes")
            current = _read_or_empty(memory / "memory.limit_in_bytes").strip()
            if current.isdigit() and memory_bytes > int(current):
                names.reverse()  # the kernel keeps memsw >= the limit: raise memsw first, lower it last
            for name in names:
                _write(memory / name, str(memory_bytes))
        if pids_max is not None:
            _write(self.folders["pids"] / "pids.max", str(pids_max))
        if cpus and "cpu" in self.folders:
            _write(self.folders["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.folders["cpu"] / "cpu.cfs_quota_us", str(max(int(cpus * CPU_PERIOD_US), 1000)))

    def freeze(self, timeout_s: float = 5.0) -> bool:
        state = self.folders["freezer"] / "freezer.state"
        _write(state, "FROZEN")
        return _wait_until(lambda: state.read_text().strip() == "FROZEN", timeout_s)

    def thaw(self) -> None:
        _write(self.folders["freezer"] / "freezer.state", "THAWED")

    def oom_killed(self) -> bool:
        memory = self.folders["memory"]
        control = _keyed((memory / "memory.oom_control").read_text())
        if "oom_kill" in control:
            return control["oom_kill"] > 0
        return int((memory / "memory.failcnt").read_text()) > 0  # kernels before 4.13 count only the hits


class JobGroupV2(JobGroup):
    """cgroup v2: one folder in the unified hierarchy."""

    @property
    def folder(self) -> Path:
        return self.folders[UNIFIED]

    def set_limits(self, memory_bytes: int | None = None, pids_max: int | None = None,
                   cpus: float | None = None) -> None:
        if memory_bytes is not None:
            _write(self.folder / "memory.max", str(memory_bytes))
            if (self.folder / "memory.swap.max").exists():
                _write(self.folder / "memory.swap.max", "0")
        if pids_max is not None:
            _write(self.folder / "pids.max", str(pids_max))
        if cpus and (self.folder / "cpu.max").exists():
            _write(self.folder / "cpu.max", f"{max(int(cpus * CPU_PERIOD_US), 1000)} {CPU_PERIOD_US}")

    def freeze(self, timeout_s: float = 5.0) -> bool:
        _write(self.folder / "cgroup.freeze", "1")
        return _wait_until(lambda: _keyed((self.folder / "cgroup.events").read_text()).get("frozen") == 1, timeout_s)

    def thaw(self) -> None:
        _write(self.folder / "cgroup.freeze", "0")

    def _kill_members(self) -> None:
        if (self.folder / "cgroup.kill").exists():  # Linux 5.14: the kernel kills the whole group at once
            _write(self.folder / "cgroup.kill", "1")
        else:
            super()._kill_members()

    def oom_killed(self) -> bool:
        return _keyed((self.folder / "memory.events").read_text()).get("oom_kill", 0) > 0


def _remove_folder(folder: Path, timeout_s: float) -> bool:
    def gone() -> bool:
        try:
            folder.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            return False  # the last processes are still leaving
        return True

    if not _wait_until(gone, timeout_s):
        logger.warning("Cgroup %s: still busy, not removed", folder)
        return False
    return True


class CgroupRoot:
    """The unit's parent cgroup, `<own cgroup>/nias/<unit name>`, in each hierarchy it uses."""

    def __init__(self, version: int, folders: dict[str, Path], unit_name: str):
        self.version = version
        self.folders = folders
        self.unit_name = unit_name

    @classmethod
    def open(cls, unit_name: str, proc: Path = Path("/proc/self")) -> "CgroupRoot":
        """Find the hierarchies and make the unit's parent; CgroupsUnavailable says why it cannot."""
        if "/" in unit_name or unit_name in ("", ".", ".."):
            raise CgroupsUnavailable(f"the unit name {unit_name!r} cannot name a cgroup")
        version, bases = _own_cgroups(proc)
        for base in bases.values():
            if not os.access(base, os.W_OK):
                why = "the unit does not run as root" if os.geteuid() != 0 else "it is read-only"
                raise CgroupsUnavailable(f"cannot create cgroups in {base}: {why}")
        try:
            folders = {key: _make_parent(version, base, unit_name) for key, base in bases.items()}
        except OSError as exc:
            raise CgroupsUnavailable(f"cannot create the unit's cgroup: {exc}") from None
        return cls(version, folders, unit_name)

    def create(self, name: str, memory_bytes: int | None = None, pids_max: int | None = None,
               cpus: float | None = None) -> JobGroup:
        """A new, empty group for one attempt (a stale one of the same name is emptied first)."""
        group = self.group(name)
        if any(folder.exists() for folder in group.folders.values()):
            _empty_and_remove(group)
        for folder in group.folders.values():
            folder.mkdir()
        group.set_limits(memory_bytes, pids_max, cpus)
        return group

    def group(self, name: str) -> JobGroup:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a cgroup name: {name!r}")
        kind = JobGroupV1 if self.version == 1 else JobGroupV2
        return kind(name, {key: folder / name for key, folder in self.folders.items()})

    def clean_stale(self) -> list[str]:
        """Kill and remove every group below the unit's parent: at start, each is a crashed run's."""
        names = sorted({child.name for folder in self.folders.values() for child in folder.iterdir()
                        if child.is_dir()})
        for name in names:
            killed = _empty_and_remove(self.group(name))
            logger.warning("Cgroup %s: left by an earlier run of unit %s; removed, %d processes killed",
                           name, self.unit_name, killed)
        return names

    def remove(self) -> bool:
        """Delete the unit's parent once its groups are gone (tests, or a unit taken out of service)."""
        removed = all([_remove_folder(folder, 1.0) for folder in self.folders.values()])
        for folder in self.folders.values():
            try:
                folder.parent.rmdir()  # `nias` too, unless another unit's parent is in it
            except OSError:
                pass
        return removed


def _empty_and_remove(group: JobGroup) -> int:
    """Kill what is left in a stale group and remove it; how many processes it held."""
    for folder in group.folders.values():
        folder.mkdir(exist_ok=True)  # a unit that died while creating it left only some of its folders
    left = len(group.pids())
    group.kill_all()
    group.remove()
    return left


def available(unit_name: str, proc: Path = Path("/proc/self")) -> tuple[CgroupRoot | None, str]:
    """The unit's CgroupRoot and "", or None and why its jobs fall back to process groups."""
    try:
        return CgroupRoot.open(unit_name, proc), ""
    except CgroupsUnavailable as exc:
        return None, exc.message


# -- finding the hierarchies -------------------------------------------------------------------
def _mounts(mountinfo: str) -> tuple[dict[str, tuple[Path, str]], list[tuple[Path, str]]]:
    """v1 controller -> (mount point, the cgroup shown there); and the cgroup2 mounts, likewise."""
    v1: dict[str, tuple[Path, str]] = {}
    v2: list[tuple[Path, str]] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1:]
        mounted = (Path(fields[4].replace("\\040", " ")), fields[3])
        if tail[0] == "cgroup2":
            v2.append(mounted)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                v1.setdefault(option, mounted)
    return v1, v2


def _own_paths(cgroup: str) -> tuple[dict[str, str], str | None]:
    """From /proc/self/cgroup: each v1 controller's cgroup of this process, and its v2 one."""
    v1: dict[str, str] = {}
    v2 = None
    for line in cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        for controller in controllers.split(","):
            v1[controller] = path
    return v1, v2


def _seen_at(mount: tuple[Path, str], own: str) -> Path:
    point, shown = mount
    relative = os.path.relpath(own, shown)
    return point if relative.startswith("..") else point / relative  # outside the mount's view: its top


def _own_cgroups(proc: Path) -> tuple[int, dict[str, Path]]:
    try:
        v1_mounts, v2_mounts = _mounts((proc / "mountinfo").read_text())
        v1_own, v2_own = _own_paths((proc / "cgroup").read_text())
    except OSError as exc:
        raise CgroupsUnavailable(f"cannot read this process's cgroups: {exc}") from None
    if all(name in v1_mounts and name in v1_own for name in V1_CONTROLLERS):
        names = V1_CONTROLLERS + tuple(n for n in OPTIONAL_CONTROLLERS if n in v1_mounts and n in v1_own)
        return 1, {name: _seen_at(v1_mounts[name], v1_own[name]) for name in names}
    for mount in v2_mounts:
        base = _seen_at(mount, v2_own or "/")
        offered = set(_read_or_empty(base / "cgroup.controllers").split())
        if offered >= set(V2_CONTROLLERS):
            return 2, {UNIFIED: base}
    missing = [name for name in V1_CONTROLLERS if name not in v1_mounts]
    if not v1_mounts and not v2_mounts:
        raise CgroupsUnavailable("no cgroup file system is mounted")
    raise CgroupsUnavailable(f"the cgroup v1 controllers {', '.join(missing) or 'needed'} are not mounted, "
                             "and no cgroup2 mount offers memory and pids")


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _make_parent(version: int, base: Path, unit_name: str) -> Path:
    parent = base / PARENT / unit_name
    if version == 2:
        _delegate(base)
        (base / PARENT).mkdir(exist_ok=True)
        _delegate(base / PARENT)
        parent.mkdir(exist_ok=True)
        _delegate(parent)
    else:
        parent.mkdir(parents=True, exist_ok=True)
    return parent


def _delegate(folder: Path) -> None:
    """v2: let `folder`'s children use memory and pids. A cgroup with processes of its own cannot,
    so the processes in the unit's own cgroup (the unit's) move to a leaf beside `nias` first."""
    enabled = set(_read_or_empty(folder / "cgroup.subtree_control").split())
    offered = set(_read_or_empty(folder / "cgroup.controllers").split())
    names = V2_CONTROLLERS + tuple(n for n in OPTIONAL_CONTROLLERS if n in offered)
    wanted = " ".join(f"+{name}" for name in names if name not in enabled)
    if not wanted:
        return
    try:
        _write(folder / "cgroup.subtree_control", wanted)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        leaf = folder / SERVICE_LEAF
        leaf.mkdir(exist_ok=True)
        for pid in _pids_in(folder):
            _write(leaf / "cgroup.procs", str(pid))
        logger.info("Cgroup %s: the unit's processes moved to %s so jobs can have controllers", folder, leaf.name)
        _write(folder / "cgroup.subtree_control", wanted)
