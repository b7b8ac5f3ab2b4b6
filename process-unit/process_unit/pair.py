"""A processing unit and its consumer in one container, supervised as `make up` supervises them.

    python -m process_unit.pair -- <unit command ...> -- <consumer command ...>

The two commands are given by the caller (docker-compose.yaml), so they stay the ones `make up`
runs. Both get the same environment, with NIAS_UNIT_NAME defaulting to the container's hostname,
so every replica of a scaled service is a distinct unit. A command that exits is restarted after
a back-off; SIGTERM stops both (consumer first) and waits for them, so the unit can let its job
finish within its grace period or hand it back.

Files the pair writes on the shared volume are group-writable (umask 002): under compose the
unit runs as root in the group of the backend's user, which must be able to delete them.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Mapping

from nias.logs import configure_logging
from nias.settings import load_settings

logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
STABLE_AFTER_S = 30
# Beyond NIAS_STOP_GRACE_S: the unit's gunicorn itself waits the grace period + 10 s.
STOP_MARGIN_S = 15
USAGE = "usage: python -m process_unit.pair -- UNIT COMMAND... -- CONSUMER COMMAND..."


def split_commands(argv: list[str]) -> list[list[str]]:
    """`-- a b -- c d` -> [["a", "b"], ["c", "d"]]; each command follows its own `--`."""
    if not argv or argv[0] != "--":
        raise SystemExit(USAGE)
    commands: list[list[str]] = []
    for word in argv:
        if word == "--":
            commands.append([])
        else:
            commands[-1].append(word)
    if any(not command for command in commands):
        raise SystemExit(USAGE)
    return commands


def pair_environment(environ: Mapping[str, str], hostname: str) -> dict[str, str]:
    """The environment both commands share: the unit is named after the host unless told."""
    env = dict(environ)
    if not env.get("NIAS_UNIT_NAME"):
        env["NIAS_UNIT_NAME"] = hostname
    return env


class Pair:
    def __init__(self, commands: list[list[str]], env: dict[str, str]):
        self.commands = commands
        self.env = env
        self.processes: list[subprocess.Popen | None] = [None] * len(commands)
        self.restarts = [0] * len(commands)
        self.next_start = [0.0] * len(commands)
        self.started_at = [0.0] * len(commands)
        self.stopping = threading.Event()

    def supervise_once(self) -> None:
        now = time.monotonic()
        for index, command in enumerate(self.commands):
            process = self.processes[index]
            if process is not None and process.poll() is not None:
                if now - self.started_at[index] > STABLE_AFTER_S:
                    self.restarts[index] = 0  # it had been running well: a new failure, not a crash loop
                delay = RESTART_BACKOFF_S[min(self.restarts[index], len(RESTART_BACKOFF_S) - 1)]
                logger.error("%s exited with code %s; restarting in %s s", command[0], process.returncode, delay)
                self.restarts[index] += 1
                self.processes[index] = None
                self.next_start[index] = now + delay
            if self.processes[index] is None and now >= self.next_start[index]:
                self.processes[index] = subprocess.Popen(command, env=self.env)
                self.started_at[index] = now
                logger.info("Started %s (pid %s)", " ".join(command), self.processes[index].pid)

    def stop(self, wait_s: float) -> None:
        running = [p for p in reversed(self.processes) if p is not None and p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + wait_s
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> None:
    commands = split_commands(sys.argv[1:] if argv is None else argv)
    env = pair_environment(os.environ, socket.gethostname())
    settings = load_settings(env)
    configure_logging(settings.log_level, f"pair-{settings.unit_name}")
    os.umask(0o002)
    pair = Pair(commands, env)

    def request_stop(signum, _frame) -> None:
        logger.info("Signal %s: stopping unit %s", signum, settings.unit_name)
        pair.stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not pair.stopping.is_set():
        pair.supervise_once()
        pair.stopping.wait(0.5)
    pair.stop(settings.stop_grace_s + STOP_MARGIN_S)


if __name__ == "__main__":
    main()
