"""The ports `make up` gives its services, and who holds a port that is taken.

A port set explicitly (`NIAS_PORT`, `NIAS_PRODUCER_PORT`, `NIAS_UNIT_BASE_PORT`) is used as it is,
or refused, naming the variable, the port and (where this host tells) the process that holds it;
a port left to its default moves on to the next free one.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from nias.errors import ConfigurationError

logger = logging.getLogger("nias.launcher")

# The variable that sets each service's port, and its default; units take consecutive ports.
PORT_VARIABLES = {"backend": ("NIAS_PORT", 8080), "producer": ("NIAS_PRODUCER_PORT", 8081),
                  "units": ("NIAS_UNIT_BASE_PORT", 8090)}
LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp
MAX_COMMAND = 120


@dataclass(frozen=True)
class Ports:
    backend: int
    producer: int
    units: tuple[int, ...]


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as gunicorn binds: with SO_REUSEADDR)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return False
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _listening_inodes(port: int, proc: Path) -> set[str]:
    """The socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _socket_owners(inodes: set[str], proc: Path) -> Iterator[int]:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.glob("[0-9]*"):
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue  # ended meanwhile, or another user's
        if wanted.intersection(_link(fd) for fd in descriptors):
            yield int(entry.name)


def _link(descriptor: Path) -> str:
    try:
        return os.readlink(descriptor)
    except OSError:
        return ""  # closed meanwhile (the one that listed the folder, for one)


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """Who listens on `port`: "pid N (its command line)", a hint when the holder is hidden, None if unknown."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    for pid in sorted(_socket_owners(inodes, proc)):
        try:
            command = (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            command = "?"
        return f"pid {pid} ({command.strip()[:MAX_COMMAND]})"
    return "a process of another user (as root, `ss -ltnp` names it)"


def _explicit_port(environ: Mapping[str, str], variable: str) -> int | None:
    raw = environ.get(variable, "")
    if raw == "":
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigurationError(f"{variable} must be a port number (1-65535), got {raw!r}")
    return int(raw)


def choose_ports(environ: Mapping[str, str], host: str, units: int,
                 is_free: Callable[[str, int], bool] = port_free,
                 holder_of: Callable[[int], str | None] = port_holder) -> Ports:
    """Every service's port: an explicit one as set (refused, naming its variable, when it is in use
    or another service's), a default one moved on to the next free port. Explicit ones go first,
    so a default never pushes a port the admin chose."""
    wanted = [("backend", "backend", 0), ("producer", "producer", 0)]
    wanted += [(f"unit-{index}", "units", index - 1) for index in range(1, units + 1)]
    taken: dict[int, str] = {}
    chosen: dict[str, int] = {}
    explicit = {group: _explicit_port(environ, variable) for group, (variable, _) in PORT_VARIABLES.items()}
    for name, group, offset in sorted(wanted, key=lambda want: explicit[want[1]] is None):
        variable, default = PORT_VARIABLES[group]
        if explicit[group] is not None:
            port = explicit[group] + offset
            setting = f"{variable}={explicit[group]}" + (f" gives {name} port {port}" if offset else "")
            if port in taken:
                raise ConfigurationError(f"{setting}, which {taken[port]} uses too: choose ports that do not overlap")
            if port > 65535 or not is_free(host, port):
                holder = holder_of(port) if port <= 65535 else None
                raise ConfigurationError(f"{setting}, but port {port} on {host} is in use by "
                                         f"{holder or 'another program'}: stop it or set {variable} to a free port")
        else:
            port = default + offset
            while port in taken or not is_free(host, port):
                port += 1
                if port > 65535:
                    raise ConfigurationError(f"No free port for {name} above {default + offset}; set {variable}")
            if port != default + offset:
                holder = taken.get(default + offset, "another program")
                logger.info("Port %s is taken (by %s): %s listens on %s instead (set %s to choose)", default + offset,
                            holder, name, port, variable)
        taken[port] = name
        chosen[name] = port
    return Ports(chosen["backend"], chosen["producer"], tuple(chosen[f"unit-{i}"] for i in range(1, units + 1)))
