"""The launcher behind `make up`: Ctrl-C or SIGTERM stops every service it started, leaving none behind;
it says "up" only when every service answered as itself, on ports that clash with nothing.

Only the launcher is signalled, and nothing else is cleaned up before the check: LocalStack.stop
kills the launcher's whole session, which would hide a service left running.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from nias.health import Health, ServiceKind
from tests.support.stack import LocalStack, free_port_block, wait_until

LAUNCHER = Path(__file__).resolve().parents[2] / "tools" / "launcher.py"


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


# --- ports and who answers --------------------------------------------------------------------


def _launcher_module():
    spec = importlib.util.spec_from_file_location("nias_launcher_for_ports", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _started_urls(stack: LocalStack) -> dict[str, str]:
    """Where the launcher says it started each HTTP service."""
    return dict(re.findall(r"Started (\S+) \(pid \d+\) at (http://\S+)", stack.log_path.read_text(errors="replace")))


def test_a_web_port_set_on_unit_2s_default_port_gives_unit_2_another_port_and_every_service_answers_as_itself(
        tmp_path):
    # Where unit-2 would listen by default on this machine now; the web port is set to exactly that.
    unit_2_default = _launcher_module().choose_ports({}, "127.0.0.1", 2).units[1]
    stack = LocalStack(tmp_path / "clash", units=2, NIAS_PORT=str(unit_2_default), NIAS_UNIT_BASE_PORT="")
    stack.url = f"http://127.0.0.1:{unit_2_default}"
    try:
        stack.start()
        urls = _started_urls(stack)
        assert urls["backend"] == stack.url
        assert urls["unit-2"] != stack.url
        assert len(set(urls.values())) == len(urls) == 4
        instances = set()
        for name, kind in [("backend", ServiceKind.BACKEND), ("producer", ServiceKind.PRODUCER),
                           ("unit-1", ServiceKind.UNIT), ("unit-2", ServiceKind.UNIT)]:
            answer = Health.from_dict(requests.get(f"{urls[name]}/healthz", timeout=5).json())
            assert answer.is_of(kind, name), (name, answer)
            # The answer names the instance the launcher started this very process with.
            environ = Path(f"/proc/{stack.service_pid(name)}/environ").read_bytes().split(b"\0")
            assert f"NIAS_INSTANCE_ID={answer.instance}".encode() in environ and len(answer.instance) >= 16
            instances.add(answer.instance)
        assert len(instances) == 4
        assert "exited with code" not in stack.log_path.read_text(errors="replace")
    finally:
        stack.stop()


def _failed_start(stack: LocalStack) -> str:
    with pytest.raises(RuntimeError):
        stack.start()
    assert stack.process.wait(60) != 0
    return stack.log_path.read_text(errors="replace")


def test_an_explicit_port_in_use_stops_the_launcher_before_anything_starts_naming_the_variable(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", free_port_block(1)))
    holder.listen()
    port = holder.getsockname()[1]
    stack = LocalStack(tmp_path / "taken", units=1, NIAS_PRODUCER_PORT=str(port))
    try:
        log = _failed_start(stack)
        assert stack.process.returncode == 2
        assert f"NIAS_PRODUCER_PORT={port}" in log and f"port {port} on 127.0.0.1 is in use" in log
        assert f"in use by pid {os.getpid()} (" in log  # who holds it: this test's own process
        assert "Started" not in log and "NIAS is up" not in log
    finally:
        holder.close()
        stack.stop()


def test_a_unit_that_dies_at_start_is_named_with_its_last_lines_and_the_others_are_stopped(tmp_path):
    stack = LocalStack(tmp_path / "dies", units=1, NIAS_SANDBOX="a-sandbox-that-does-not-exist")
    try:
        log = _failed_start(stack)
        assert stack.process.returncode == 1
        assert re.search(r"NIAS did not start: unit-1 exited with code \d+ while starting: .*NIAS_SANDBOX must be "
                         r"auto, bwrap or off", log)
        assert re.search(r"Its last lines:\n  unit-1 \| ", log)
        assert "NIAS is up" not in log and "NIAS_READY" not in log
        assert all(f"Stopped {name}" in log for name in ("backend", "producer", "consumer-1"))
    finally:
        stack.stop()


def _path_without_bwrap(folder: Path) -> str:
    """A PATH of links to the programs a stack needs, bubblewrap left out."""
    folder.mkdir()
    for program in ("python3", "rabbitmqctl", "sh", "pgrep"):  # uv: the one beside this Python
        found = shutil.which(program, path=os.environ["PATH"] + ":/usr/sbin:/sbin")
        assert found, f"{program} is needed on this machine"
        (folder / program).symlink_to(found)
    assert shutil.which("bwrap", path=str(folder)) is None
    return str(folder)


def test_without_bubblewrap_and_with_no_install_set_make_up_stops_at_once_naming_the_command_and_the_opt_out(
        tmp_path):
    stack = LocalStack(tmp_path / "no-bwrap", units=1, PATH=_path_without_bwrap(tmp_path / "bin"),
                       NIAS_NO_INSTALL="1", NIAS_SANDBOX="")
    try:
        log = _failed_start(stack)
        assert stack.process.returncode == 2
        assert "make up needs bubblewrap" in log and "run: apt-get install bubblewrap" in log
        assert "NIAS_SANDBOX=off" in log and "NIAS_NO_INSTALL=1" in log
        assert "Started" not in log and "Installing" not in log
    finally:
        stack.stop()


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True).stdout


def test_with_no_broker_url_the_launcher_gives_the_services_a_rabbitmq_account_that_guest_cannot_enter(tmp_path):
    import pika
    import pika.exceptions

    from tools.broker import account_name
    from tests.support.projects import zip_entries

    stack = LocalStack(tmp_path / "account", units=1, own_broker_account=True)
    name = account_name(stack.data_dir)
    try:
        stack.start()
        store = stack.data_dir / "private" / "broker.json"
        account = json.loads(store.read_text())
        assert (account["user"], account["vhost"]) == (name, name) and len(account["password"]) >= 24
        assert store.stat().st_mode & 0o777 == 0o600
        environ = Path(f"/proc/{stack.service_pid('backend')}/environ").read_bytes().split(b"\0")
        [url] = [entry.decode() for entry in environ if entry.startswith(b"NIAS_AMQP_URL=")]
        assert f"@127.0.0.1:5672/{name}" in url and "guest" not in url
        assert f"{stack.prefix}.jobs" in _rabbitmqctl("list_queues", "-p", name, "name")
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:5672/{name}"))
        job = stack.client.submit(zip_entries(tmp_path / "ok.zip", {"code.py": "print('hello')\n"}))
        assert stack.client.wait(job["id"], timeout_s=120)["state"] == "succeeded"
        assert "guest account" not in stack.log_path.read_text(errors="replace")
    finally:
        stack.stop()
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "delete_user", name], capture_output=True, timeout=120)
