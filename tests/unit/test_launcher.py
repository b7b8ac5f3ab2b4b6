"""tools/launcher.py: `ensure_rabbitmq` starts a local broker when one is installed, else explains;
`choose_ports` gives every service a port of its own; `ask_health` takes only an answer from the
service it asks for; `sandbox_warning` says what jobs see without a mount namespace."""
from __future__ import annotations

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nias.errors import BrokerUnavailable, ConfigurationError
from nias.health import Health, SandboxMode, ServiceKind
from nias.settings import Settings

LAUNCHER = Path(__file__).resolve().parents[2] / "tools" / "launcher.py"


@pytest.fixture(scope="module")
def launcher():
    """tools/ is not a package: load the script as a module (its dataclasses need it in sys.modules)."""
    spec = importlib.util.spec_from_file_location("nias_launcher_under_test", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


class Broker:
    """A stand-in for `connect`: refuses the first `down_for` connections, then accepts."""

    def __init__(self, down_for: int):
        self.down_for = down_for
        self.attempts = 0

    def connect(self, settings, attempts=1):
        self.attempts += 1
        if self.attempts <= self.down_for:
            raise BrokerUnavailable("connection refused")
        return self

    def close(self) -> None:
        pass


@pytest.fixture
def commands(launcher, monkeypatch) -> list[list[str]]:
    """Every command `ensure_rabbitmq` runs, recorded instead of run; its waits take no time."""
    ran: list[list[str]] = []
    monkeypatch.setattr(launcher.subprocess, "run", lambda argv, **kwargs: ran.append(list(argv)))
    monkeypatch.setattr(launcher.time, "sleep", lambda seconds: None)
    return ran


def test_a_reachable_broker_is_used_as_it_is_and_nothing_is_started(launcher, monkeypatch, commands):
    broker = Broker(down_for=0)
    monkeypatch.setattr(launcher, "connect", broker.connect)
    launcher.ensure_rabbitmq(Settings())
    assert commands == []
    assert broker.attempts == 1


def test_an_installed_but_stopped_broker_is_started_detached_and_waited_for(launcher, monkeypatch, commands):
    broker = Broker(down_for=4)  # the first check, then three refusals while the node boots
    monkeypatch.setattr(launcher, "connect", broker.connect)
    monkeypatch.setattr(launcher.shutil, "which",
                        lambda name, path=None: "/usr/lib/rabbitmq/bin/rabbitmq-server" if name == "rabbitmq-server"
                        else None)
    launcher.ensure_rabbitmq(Settings())
    assert commands == [["/usr/lib/rabbitmq/bin/rabbitmq-server", "-detached"]]
    assert broker.attempts == 5  # it returned only once a connection was accepted


def test_the_broker_is_looked_for_in_the_sbin_folders_a_user_path_often_lacks(launcher, monkeypatch):
    searched = []
    monkeypatch.setattr(launcher.shutil, "which", lambda name, path=None: searched.append(path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert launcher.find_rabbitmq_server() is None
    assert "/usr/sbin" in searched[0].split(":")


def test_a_started_broker_that_never_accepts_connections_stops_the_launcher_with_a_reason(
        launcher, monkeypatch, commands):
    monkeypatch.setattr(launcher, "connect", Broker(down_for=10**9).connect)
    monkeypatch.setattr(launcher.shutil, "which", lambda name, path=None: "/usr/sbin/rabbitmq-server")
    monkeypatch.setattr(launcher, "RABBITMQ_START_TIMEOUT_S", 0.05)
    with pytest.raises(SystemExit) as stopped:
        launcher.ensure_rabbitmq(Settings())
    assert commands == [["/usr/sbin/rabbitmq-server", "-detached"]]
    assert "did not accept connections" in str(stopped.value)


def test_without_a_broker_or_rabbitmq_server_the_launcher_exits_explaining_how_to_get_one(
        launcher, monkeypatch, commands):
    monkeypatch.setattr(launcher, "connect", Broker(down_for=10**9).connect)
    monkeypatch.setattr(launcher.shutil, "which", lambda name, path=None: None)
    with pytest.raises(SystemExit) as stopped:
        launcher.ensure_rabbitmq(Settings())
    message = str(stopped.value)
    assert commands == []
    assert "not installed" in message
    assert "apt-get install rabbitmq-server" in message
    assert "NIAS_AMQP_URL" in message


# --- ports ---------------------------------------------------------------------------------


def _free_except(*taken: int):
    return lambda host, port: port not in taken


def test_an_explicit_web_port_on_a_default_unit_port_moves_that_unit_to_the_next_free_port(launcher):
    ports = launcher.choose_ports({"NIAS_PORT": "8091"}, "127.0.0.1", 2, _free_except())
    assert ports.backend == 8091
    assert ports.units == (8090, 8092)
    assert ports.producer == 8081
    assert len({ports.backend, ports.producer, *ports.units}) == 4


def test_default_ports_taken_by_another_program_move_to_the_next_free_ones(launcher):
    ports = launcher.choose_ports({}, "127.0.0.1", 2, _free_except(8080, 8090))
    assert ports.backend not in (8080, 8090) and 8090 not in ports.units
    assert len({ports.backend, ports.producer, *ports.units}) == 4


def test_an_explicit_port_in_use_is_refused_naming_its_variable_and_port(launcher):
    with pytest.raises(ConfigurationError) as refused:
        launcher.choose_ports({"NIAS_PRODUCER_PORT": "9100"}, "127.0.0.1", 2, _free_except(9100))
    assert "NIAS_PRODUCER_PORT=9100" in refused.value.message and "port 9100" in refused.value.message


def test_explicit_ports_that_overlap_are_refused_naming_the_unit_and_the_variable(launcher):
    with pytest.raises(ConfigurationError) as refused:
        launcher.choose_ports({"NIAS_PORT": "8091", "NIAS_UNIT_BASE_PORT": "8090"}, "127.0.0.1", 2, _free_except())
    assert "NIAS_UNIT_BASE_PORT=8090 gives unit-2 port 8091" in refused.value.message
    assert "backend" in refused.value.message


def test_an_explicit_port_is_never_pushed_aside_by_a_default_one(launcher):
    ports = launcher.choose_ports({"NIAS_UNIT_BASE_PORT": "8080"}, "127.0.0.1", 2, _free_except())
    assert ports.units == (8080, 8081)
    assert ports.backend not in ports.units and ports.producer not in ports.units


def test_a_port_variable_that_is_not_a_port_number_is_refused_with_its_name(launcher):
    with pytest.raises(ConfigurationError, match="NIAS_PORT must be a port number"):
        launcher.choose_ports({"NIAS_PORT": "80a"}, "127.0.0.1", 1, _free_except())


def test_a_port_a_server_listens_on_is_not_free(launcher):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        assert not launcher.port_free("127.0.0.1", server.server_address[1])
    finally:
        server.server_close()
    assert launcher.port_free("127.0.0.1", server.server_address[1])


# --- who answers -----------------------------------------------------------------------------


@pytest.fixture
def answering():
    """A real HTTP server whose /healthz answers with the body and status the test sets."""
    reply = {"status": 200, "body": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            data = json.dumps(reply["body"]).encode()
            self.send_response(reply["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield reply, f"http://127.0.0.1:{server.server_address[1]}/healthz"
    server.shutdown()
    server.server_close()


def _unit_2(launcher, url):
    return launcher.Service("unit-2", ["true"], health_url=url, kind=ServiceKind.UNIT)


def test_a_200_from_the_backend_at_a_units_health_url_does_not_count_as_the_unit(launcher, answering):
    reply, url = answering
    reply["body"] = Health(ServiceKind.BACKEND, "backend", {"store": True}).to_dict()
    health, why = launcher.ask_health(_unit_2(launcher, url))
    assert health is None
    assert "backend" in why and "unit-2" in why


def test_a_200_from_another_unit_does_not_count_either(launcher, answering):
    reply, url = answering
    reply["body"] = Health(ServiceKind.UNIT, "unit-1", {}, sandbox=SandboxMode.BWRAP).to_dict()
    assert launcher.ask_health(_unit_2(launcher, url))[0] is None


def test_a_200_that_names_no_nias_service_does_not_count(launcher, answering):
    reply, url = answering
    reply["body"] = {"ok": True}
    health, why = launcher.ask_health(_unit_2(launcher, url))
    assert health is None and "not a NIAS service" in why


def test_the_unit_itself_counts_once_its_checks_pass(launcher, answering):
    reply, url = answering
    reply["status"], reply["body"] = 503, Health(ServiceKind.UNIT, "unit-2", {"uv": False}).to_dict()
    health, why = launcher.ask_health(_unit_2(launcher, url))
    assert health is None and "uv" in why
    reply["status"], reply["body"] = 200, Health(ServiceKind.UNIT, "unit-2", {"uv": True}).to_dict()
    assert launcher.ask_health(_unit_2(launcher, url))[0].is_of(ServiceKind.UNIT, "unit-2")


# --- the sandbox warning ----------------------------------------------------------------------


def _units(launcher, *modes):
    services = []
    for index, mode in enumerate(modes, start=1):
        service = launcher.Service(f"unit-{index}", ["true"], kind=ServiceKind.UNIT)
        service.health = Health(ServiceKind.UNIT, service.name, {}, sandbox=mode)
        services.append(service)
    return services


def test_no_warning_when_every_unit_runs_jobs_under_bubblewrap(launcher):
    assert launcher.sandbox_warning(_units(launcher, SandboxMode.BWRAP), Settings(), as_root=True) is None


def test_units_without_a_mount_namespace_are_named_with_what_their_jobs_can_see(launcher):
    services = _units(launcher, SandboxMode.BWRAP, SandboxMode.NONE)
    warning = launcher.sandbox_warning(services, Settings(sandbox="auto"), as_root=True)
    assert warning.startswith("unit-2 runs jobs") and "unit-1" not in warning
    assert "bubblewrap (bwrap) is not installed" in warning
    assert "every file on this host that its user may read" in warning and "network" in warning


def test_without_root_the_warning_says_jobs_can_read_the_data_dir_and_the_job_store(launcher):
    warning = launcher.sandbox_warning(_units(launcher, SandboxMode.NONE), Settings(sandbox="off"), as_root=False)
    assert "NIAS_SANDBOX=off" in warning
    assert "the job store" in warning and "your own user" in warning
