"""tools/launcher.py: `ensure_rabbitmq` starts a local broker when one is installed, else explains;
`plan_install` installs or names what is missing; `choose_ports` gives every service a port of its
own and names who holds a taken one; `choose_work_place` puts work dirs where job users reach them,
one per unit; `ask_health` takes only an answer from the very process it started; `sandbox_warning`
says what jobs see without a mount namespace; the closing block says how to sign in."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nias.errors import BrokerUnavailable, ConfigurationError
from nias.health import Health, SandboxMode, ServiceKind
from nias.settings import Settings
from tools import packages, workplace
from tools.banner import Banner, sign_in_hint
from tools.packages import InstallPlan, Needs, plan_install
from tools.ports import port_holder
from tools.workplace import WorkPlace, choose_work_place, prepare_place

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


def test_an_explicit_port_in_use_is_refused_naming_its_variable_its_port_and_who_holds_it(launcher):
    with pytest.raises(ConfigurationError) as refused:
        launcher.choose_ports({"NIAS_PRODUCER_PORT": "9100"}, "127.0.0.1", 2, _free_except(9100),
                              lambda port: f"pid 4242 (a program on {port})")
    assert "NIAS_PRODUCER_PORT=9100" in refused.value.message and "port 9100" in refused.value.message
    assert "in use by pid 4242 (a program on 9100)" in refused.value.message


def test_the_holder_of_a_listening_port_is_found_by_pid_and_command_line():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        holder = port_holder(port)
    assert holder.startswith(f"pid {os.getpid()} (") and "python" in holder
    assert port_holder(port) is None  # closed: nobody listens there now


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
    return launcher.Service("unit-2", ["true"], health_url=url, kind=ServiceKind.UNIT, instance_id="started-now")


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
    reply["status"], reply["body"] = 503, Health(ServiceKind.UNIT, "unit-2", {"uv": False},
                                                  instance="started-now").to_dict()
    health, why = launcher.ask_health(_unit_2(launcher, url))
    assert health is None and "uv" in why
    reply["status"], reply["body"] = 200, Health(ServiceKind.UNIT, "unit-2", {"uv": True},
                                                  instance="started-now").to_dict()
    assert launcher.ask_health(_unit_2(launcher, url))[0].is_of(ServiceKind.UNIT, "unit-2")


def test_a_200_from_the_same_unit_started_before_does_not_count_as_the_one_just_started(launcher, answering):
    reply, url = answering
    reply["body"] = Health(ServiceKind.UNIT, "unit-2", {"uv": True}, instance="an-older-start").to_dict()
    health, why = launcher.ask_health(_unit_2(launcher, url))
    assert health is None
    assert "an-older-start" in why and "started-now" in why


def test_each_start_of_a_service_gets_a_new_instance_id_in_its_environment(launcher, tmp_path):
    service = launcher.Service("producer", [sys.executable, "-c", "import os; print(os.environ['NIAS_INSTANCE_ID'])"])
    stack = launcher.Stack([service], dict(os.environ), tmp_path / "services.json")
    seen = []
    for _ in range(2):
        stack.start(service)
        service.process.wait(30)
        service.pump.join(5)
        seen.append(service.output[-1])
    assert seen[0] != seen[1] and seen[1] == service.instance_id and len(seen[1]) >= 16


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


# --- what make up installs --------------------------------------------------------------------


def _needs(**facts) -> Needs:
    defaults = dict(rabbitmq=False, bubblewrap=False, sandbox="bwrap", is_root=True, manager="apt-get",
                    no_install=False)
    return Needs(**{**defaults, **facts})


def test_nothing_missing_means_nothing_is_installed():
    assert plan_install(_needs()) == InstallPlan()


def test_as_root_with_apt_get_what_is_missing_is_installed_after_an_apt_get_update():
    plan = plan_install(_needs(rabbitmq=True, bubblewrap=True))
    assert plan.commands == (("apt-get", "update"), ("apt-get", "install", "-y", "rabbitmq-server", "bubblewrap"))
    assert plan.stop is None


def test_bubblewrap_is_not_wanted_when_the_sandbox_is_off():
    assert plan_install(_needs(bubblewrap=True, sandbox="off")) == InstallPlan()
    plan = plan_install(_needs(rabbitmq=True, bubblewrap=True, sandbox="off"))
    assert plan.commands[-1] == ("apt-get", "install", "-y", "rabbitmq-server")


def test_with_no_install_set_it_stops_naming_the_command_and_the_way_to_run_without_a_sandbox():
    plan = plan_install(_needs(bubblewrap=True, no_install=True))
    assert plan.commands == ()
    assert "run: apt-get install bubblewrap" in plan.stop and "NIAS_NO_INSTALL=1" in plan.stop
    assert "NIAS_SANDBOX=off" in plan.stop and "NIAS_AMQP_URL" not in plan.stop


def test_without_root_it_stops_naming_the_sudo_command_for_both_packages():
    plan = plan_install(_needs(rabbitmq=True, bubblewrap=True, is_root=False))
    assert plan.commands == ()
    assert "run: sudo apt-get install rabbitmq-server bubblewrap" in plan.stop
    assert "NIAS_AMQP_URL" in plan.stop and "NIAS_SANDBOX=off" in plan.stop


def test_without_apt_get_it_names_the_command_of_the_package_manager_it_found():
    assert "run: dnf install bubblewrap" in plan_install(_needs(bubblewrap=True, manager="dnf")).stop
    assert "run: brew install rabbitmq" in plan_install(_needs(rabbitmq=True, manager="brew", is_root=False)).stop
    unknown = plan_install(_needs(rabbitmq=True, manager=None))
    assert unknown.commands == () and "with this system's package manager" in unknown.stop


def test_a_missing_bubblewrap_that_the_auto_sandbox_can_do_without_only_brings_a_note():
    plan = plan_install(_needs(bubblewrap=True, sandbox="auto", is_root=False))
    assert plan.stop is None and plan.commands == ()
    assert "sudo apt-get install bubblewrap" in plan.note and "WITHOUT A SANDBOX" in plan.note
    assert plan_install(_needs(bubblewrap=True, sandbox="auto")).commands[-1][-1] == "bubblewrap"


def test_each_install_command_is_shown_before_it_runs_and_a_failed_one_stops_make_up(monkeypatch, caplog):
    ran = []

    def fake_run(command, **kwargs):
        shown = [r.getMessage() for r in caplog.records if "Installing what make up needs" in r.getMessage()]
        ran.append((command, len(shown)))
        return type("Done", (), {"returncode": 0 if command[1] == "update" else 100})()

    monkeypatch.setattr(packages.subprocess, "run", fake_run)
    caplog.set_level(logging.INFO, "nias.launcher")
    with pytest.raises(SystemExit) as stopped:
        packages.carry_out(plan_install(_needs(bubblewrap=True)))
    assert stopped.value.code == 2
    assert ran == [(("apt-get", "update"), 1), (("apt-get", "install", "-y", "bubblewrap"), 2)]
    assert "apt-get install -y bubblewrap exited with code 100" in caplog.text


def test_a_plan_that_stops_exits_2_without_running_anything(monkeypatch):
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(SystemExit) as stopped:
        packages.carry_out(plan_install(_needs(bubblewrap=True, is_root=False)))
    assert stopped.value.code == 2


# --- where jobs work ----------------------------------------------------------------------------


@pytest.fixture
def open_dir():
    """A folder every user passes through (pytest's own tmp is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="nias-launcher-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def closed_data_dir(open_dir) -> Path:
    """A data dir inside a 0700 folder, as under /root or a `mktemp -d`."""
    (open_dir / "closed").mkdir(mode=0o700)
    return open_dir / "closed" / "data"


def test_as_root_a_data_dir_job_users_cannot_pass_through_moves_work_and_environments_to_var_tmp(closed_data_dir):
    place = choose_work_place({}, closed_data_dir, as_root=True)
    assert place.blocked_by == closed_data_dir.parent
    assert place.moved_to.parent == Path("/var/tmp") and place.moved_to.name.startswith("nias-")
    assert (place.work_dir, place.env_dir) == (place.moved_to / "work", place.moved_to / "envs")
    assert place == choose_work_place({}, closed_data_dir, as_root=True)  # the same place on every start
    assert choose_work_place({}, closed_data_dir.with_name("other"), as_root=True).moved_to != place.moved_to


def test_a_reachable_data_dir_or_an_ordinary_user_keeps_the_work_dirs_in_the_data_dir(open_dir, closed_data_dir):
    for data_dir, as_root in [(open_dir / "data", True), (closed_data_dir, False)]:
        place = choose_work_place({}, data_dir, as_root)
        assert place.moved_to is None and place.work_dir == data_dir / "work" and place.env_dir == data_dir / "envs"


def test_work_and_environment_folders_set_explicitly_are_kept(closed_data_dir, tmp_path):
    both = {"NIAS_WORK_DIR": str(tmp_path / "w"), "NIAS_ENV_DIR": str(tmp_path / "e")}
    assert choose_work_place(both, closed_data_dir, True) == WorkPlace(tmp_path / "w", tmp_path / "e")
    only_env = choose_work_place({"NIAS_ENV_DIR": str(tmp_path / "e")}, closed_data_dir, True)
    assert only_env.env_dir == tmp_path / "e" and only_env.work_dir == only_env.moved_to / "work"


def test_every_unit_gets_a_work_dir_of_its_own_and_they_share_the_environments(launcher, closed_data_dir):
    place = choose_work_place({}, closed_data_dir, as_root=True)
    ports = launcher.Ports(8080, 8081, (8090, 8091, 8092))
    services = launcher.service_specs(Settings(data_dir=closed_data_dir), ports, place)
    units = [s for s in services if s.kind is ServiceKind.UNIT]
    work_dirs = [s.env["NIAS_WORK_DIR"] for s in units]
    assert work_dirs == [str(place.moved_to / "work" / f"unit-{i}") for i in (1, 2, 3)]
    assert {s.env["NIAS_ENV_DIR"] for s in units} == {str(place.moved_to / "envs")}


def test_the_chosen_place_is_made_0711_and_one_another_user_made_is_refused(monkeypatch, tmp_path, closed_data_dir):
    monkeypatch.setattr(workplace, "PLACES", tmp_path)
    place = choose_work_place({}, closed_data_dir, as_root=True)
    prepare_place(place)
    assert place.moved_to.stat().st_mode & 0o777 == 0o711 and place.work_dir.stat().st_mode & 0o777 == 0o711
    prepare_place(place)  # again, on the next start
    with pytest.raises(ConfigurationError, match="not a folder of uid 12345"):
        prepare_place(place, uid=12345)
    place.work_dir.rmdir()
    place.moved_to.rmdir()
    place.moved_to.symlink_to(tmp_path)
    with pytest.raises(ConfigurationError, match="it is a link"):
        prepare_place(place)


# --- the closing block ----------------------------------------------------------------------------


def test_the_sign_in_hint_repeats_the_password_the_backend_made_for_the_first_admin():
    lines = ["2026-01-01 WARNING backend [backend.accounts] No admin existed: created admin@localhost. Sign in at "
             "http://127.0.0.1:8080/signin.html with the password s3cret-Pass (then change it, or set "
             "NIAS_ADMIN_PASSWORD)"]
    assert sign_in_hint("admin@localhost", False, lines).startswith("admin@localhost with the password s3cret-Pass")
    assert "NIAS_ADMIN_PASSWORD" in sign_in_hint("boss@lab.org", True, [])
    earlier = sign_in_hint("boss@lab.org", False, [])
    assert "printed when that admin was made" in earlier and "nias-admin set-password --email boss@lab.org" in earlier


def test_the_closing_block_names_the_url_the_data_dir_the_units_and_the_sandbox():
    sandboxed = Banner("http://127.0.0.1:8080/", "a@b with the password p", "/srv/nias", "work dirs in /w/<unit>",
                       2, ()).text()
    assert sandboxed.splitlines()[0] == "NIAS is up: http://127.0.0.1:8080/"
    assert "/srv/nias" in sandboxed and "/w/<unit>" in sandboxed and "a@b with the password p" in sandboxed
    assert "2; jobs run in a bubblewrap sandbox" in sandboxed and len(sandboxed.splitlines()) <= 7
    bare = Banner("u", "s", "d", "w", 1, ("unit-1",)).text()
    assert "WITHOUT A SANDBOX on unit-1" in bare
