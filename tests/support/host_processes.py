"""The host's processes as /proc shows them to the tests (root): who runs what, and whether it lives."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostProcess:
    pid: int
    uid: int  # the real uid
    command: str  # /proc/<pid>/comm
    argv: tuple[bytes, ...]
    started: str  # start time in clock ticks: with the pid, names this process and no later one


def read_process(pid: int) -> HostProcess | None:
    """The process `pid`, or None when there is none or it is a zombie (it ran to its end)."""
    folder = Path(f"/proc/{pid}")
    try:
        stat = (folder / "stat").read_text()
        status = (folder / "status").read_text()
        argv = tuple((folder / "cmdline").read_bytes().split(b"\0"))
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
    return HostProcess(pid, uid, stat[stat.index("(") + 1:stat.rindex(")")], argv, fields[19])


def host_processes() -> list[HostProcess]:
    found = (read_process(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [process for process in found if process is not None]


def still_running(process: HostProcess) -> bool:
    """Whether this very process (not a later one given its pid) is still alive."""
    now = read_process(process.pid)
    return now is not None and now.started == process.started


def processes_with_argument(argument: str) -> list[HostProcess]:
    return [process for process in host_processes() if argument.encode() in process.argv]


def processes_of_uid(uid: int) -> list[HostProcess]:
    return [process for process in host_processes() if process.uid == uid]
