"""What `make up` needs from the system, and whether it installs it or says how.

It needs `rabbitmq-server` when no broker answers at NIAS_AMQP_URL and none is installed, and
bubblewrap when jobs run in a sandbox (NIAS_SANDBOX is not `off`). As root on Debian or Ubuntu
(apt-get present) it installs what is missing, showing each command first; with NIAS_NO_INSTALL=1,
without root or without apt-get it prints the command to run and stops (exit 2). Only a bubblewrap
that NIAS_SANDBOX=auto can do without never stops it.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

logger = logging.getLogger("nias.launcher")

RABBITMQ = "rabbitmq-server"
BUBBLEWRAP = "bubblewrap"
# Where package managers live; a user's PATH often lacks the sbin folders.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/opt/homebrew/sbin")
# The command a person runs with each package manager, and its names for the packages
# (Homebrew has no bubblewrap: macOS has no namespaces).
INSTALL = {
    "apt-get": ("apt-get install", {RABBITMQ: "rabbitmq-server", BUBBLEWRAP: "bubblewrap"}),
    "dnf": ("dnf install", {RABBITMQ: "rabbitmq-server", BUBBLEWRAP: "bubblewrap"}),
    "zypper": ("zypper install", {RABBITMQ: "rabbitmq-server", BUBBLEWRAP: "bubblewrap"}),
    "pacman": ("pacman -S", {RABBITMQ: "rabbitmq", BUBBLEWRAP: "bubblewrap"}),
    "brew": ("brew install", {RABBITMQ: "rabbitmq"}),
}
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class Needs:
    """What is missing here, and the facts that decide what to do about it."""

    rabbitmq: bool  # no broker answers and rabbitmq-server is not installed
    bubblewrap: bool  # bwrap is not on PATH
    sandbox: str  # NIAS_SANDBOX: bwrap, auto or off
    is_root: bool
    manager: str | None  # the package manager found here (apt-get, dnf, ...), or None
    no_install: bool  # NIAS_NO_INSTALL=1


@dataclass(frozen=True)
class InstallPlan:
    commands: tuple[tuple[str, ...], ...] = ()  # to run in order, each shown first
    stop: str | None = None  # why make up cannot start, with the command to run (exit 2)
    note: str | None = None  # advice that does not stop it
    packages: tuple[str, ...] = ()  # what it installs, or would


def _install_command(manager: str | None, packages: list[str], is_root: bool) -> str | None:
    if manager not in INSTALL:
        return None
    verb, names = INSTALL[manager]
    known = [names[package] for package in packages if package in names]
    if not known:
        return None
    sudo = "" if is_root or manager == "brew" else "sudo "
    return f"{sudo}{verb} {' '.join(known)}"


def plan_install(needs: Needs) -> InstallPlan:
    """Install what is missing (root with apt-get, unless NIAS_NO_INSTALL=1), or say how and stop."""
    wanted = [RABBITMQ] if needs.rabbitmq else []
    if needs.bubblewrap and needs.sandbox != "off":
        wanted.append(BUBBLEWRAP)
    if not wanted:
        return InstallPlan()
    if needs.is_root and needs.manager == "apt-get" and not needs.no_install:
        return InstallPlan(commands=(("apt-get", "update"), ("apt-get", "install", "-y", *wanted)),
                           packages=tuple(wanted))
    command = _install_command(needs.manager, wanted, needs.is_root)
    why = ("NIAS_NO_INSTALL=1" if needs.no_install else "not root" if not needs.is_root
           else f"{needs.manager or 'no known package manager'} here, not apt-get")
    run = f"run: {command}" if command else f"install {' and '.join(wanted)} with this system's package manager"
    required = [package for package in wanted if package == RABBITMQ or needs.sandbox == "bwrap"]
    if not required:  # NIAS_SANDBOX=auto runs jobs without a sandbox when bubblewrap is missing
        return InstallPlan(note=f"bubblewrap is not installed, so NIAS_SANDBOX=auto runs jobs WITHOUT A SANDBOX; "
                                f"to use one, {run}")
    lines = [f"make up needs {' and '.join(wanted)}, which {'is' if len(wanted) == 1 else 'are'} not installed "
             f"(and it does not install them: {why}). To install, {run}"]
    if RABBITMQ in wanted:
        lines.append("RabbitMQ: or point NIAS_AMQP_URL at a broker you have (e.g. docker run -d -p 5672:5672 "
                     "rabbitmq:3.13).")
    if BUBBLEWRAP in wanted:
        lines.append("bubblewrap: or set NIAS_SANDBOX=off to run jobs without a sandbox (they then see this "
                     "host's files, processes and network).")
    return InstallPlan(stop="\n".join(lines), packages=tuple(wanted))


def find_system_command(name: str) -> str | None:
    """`name` on PATH or in the system folders (where Debian and Homebrew put servers and their tools)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_DIRS]))


def find_manager() -> str | None:
    """The package manager of this system, looked for on PATH and in the system folders."""
    return next((name for name in INSTALL if find_system_command(name)), None)


def carry_out(plan: InstallPlan) -> None:
    """Run the plan's commands, each shown before it runs; SystemExit(2) when one fails or the plan stops."""
    if plan.note:
        logger.warning("%s", plan.note)
    if plan.stop:
        logger.error("Not starting: %s", plan.stop)
        raise SystemExit(2)
    for command in plan.commands:
        shown = " ".join(command)
        logger.info("Installing what make up needs: %s", shown)
        try:
            done = subprocess.run(command, env={**os.environ, **APT_ENV}, timeout=INSTALL_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.error("Not starting: %s failed: %s", shown, exc)
            raise SystemExit(2) from None
        if done.returncode != 0:
            logger.error("Not starting: %s exited with code %s; run it yourself to see why, or set "
                         "NIAS_NO_INSTALL=1 and install %s your own way", shown, done.returncode,
                         " and ".join(plan.packages))
            raise SystemExit(2)
