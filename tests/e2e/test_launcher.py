"""The launcher behind `make up`: Ctrl-C or SIGTERM stops every service it started, leaving none behind.

Only the launcher is signalled, and nothing else is cleaned up before the check: LocalStack.stop
kills the launcher's whole session, which would hide a service left running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.stack import LocalStack, wait_until


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def _descendants(pid: int) -> list[int]:
    """Every process under `pid` (gunicorn masters and their workers, consumers, ...)."""
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return "(gone)"


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Running, sleeping or stopped: a zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def launched(tmp_path):
    stack = LocalStack(tmp_path / "stack", units=1)
    stack.start()
    yield stack
    if stack.process.poll() is None:
        _kill(_descendants(stack.process.pid))
    stack.stop()


def _service_processes(stack: LocalStack) -> tuple[dict[str, int], set[int]]:
    """The pids the launcher recorded, and every process under the launcher."""
    recorded = json.loads((stack.data_dir / "run" / "services.json").read_text())
    assert set(recorded) == {"backend", "producer", "unit-1", "consumer-1"}
    processes = set(recorded.values()) | set(_descendants(stack.process.pid))
    assert len(processes) > len(recorded), "the gunicorn workers were not found"
    return recorded, processes


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["ctrl-c", "sigterm", "ctrl-c-twice"])
def test_the_launcher_stops_every_service_it_started_when_interrupted(launched, signals):
    recorded, processes = _service_processes(launched)
    for signum in signals:
        launched.process.send_signal(signum)
        time.sleep(0.2)  # an impatient second Ctrl-C arrives while the services are stopping
    assert launched.process.wait(90) == 0, launched.log_tail()
    leftovers = {pid: _command_line(pid) for pid in processes if _alive(pid)}
    _kill(leftovers)
    assert not leftovers, f"still running after the launcher exited: {leftovers}"
    log = launched.log_tail(200)
    assert f"{signals[0].name} received: stopping every service" in log
    assert all(f"Stopped {name}" in log for name in recorded)
    assert not (launched.data_dir / "run" / "services.json").exists()


def test_services_stop_by_themselves_when_the_launcher_is_killed_outright(launched):
    _, processes = _service_processes(launched)
    launched.process.kill()
    launched.process.wait(10)
    try:
        wait_until(lambda: not any(_alive(pid) for pid in processes), timeout_s=60,
                   message="every service stopped after its launcher was killed")
    finally:
        _kill(pid for pid in processes if _alive(pid))
