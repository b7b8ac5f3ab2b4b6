"""`make up`: every NIAS service as a local process against a local RabbitMQ.

Starts the backend, the producer and N processing units each with its consumer, waits until
each answers its health check, prints the URL, restarts (and reports) a service that dies,
and stops them all on Ctrl-C (SIGINT), SIGTERM or SIGHUP. The commands here are the ones
docker-compose.yaml runs.

Each service runs in a process group of its own, so a Ctrl-C in the terminal reaches only the
launcher, which stops the services in order (a unit hands its running job back); a service
whose launcher dies anyway gets SIGTERM from the kernel (parent-death signal).
"""
from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nias.amqp import connect  # noqa: E402
from nias.errors import BrokerUnavailable  # noqa: E402
from nias.logs import configure_logging  # noqa: E402
from nias.settings import Settings, load_settings  # noqa: E402

logger = logging.getLogger("nias.launcher")

BIN = Path(sys.executable).parent
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
STABLE_AFTER_S = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A unit may take NIAS_STOP_GRACE_S (20 s) plus the kill grace to hand its job back.
STOP_TIMEOUT_S = 45
RABBITMQ_START_TIMEOUT_S = 90
# Where Debian and Homebrew put rabbitmq-server; a user's PATH often lacks the sbin folders.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/opt/homebrew/sbin")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0


def gunicorn(config: str, app: str) -> list[str]:
    return [str(BIN / "gunicorn"), "--config", str(ROOT / config), app]


def service_specs(settings: Settings, units: int, producer_port: int, unit_base_port: int) -> list[Service]:
    """The services `make up` runs; docker-compose.yaml runs the same commands."""
    host = settings.host
    backend_url = f"http://{host}:{settings.port}"
    producer_url = f"http://{host}:{producer_port}"
    services = [
        Service("backend", gunicorn("backend/gunicorn.conf.py", "backend.app:create_served_app()"),
                {"NIAS_PRODUCER_URL": producer_url}, f"{backend_url}/healthz"),
        Service("producer", gunicorn("producer/gunicorn.conf.py", "producer.app:create_served_app()"),
                {"NIAS_PRODUCER_PORT": str(producer_port)}, f"{producer_url}/healthz"),
    ]
    for index in range(1, units + 1):
        port = unit_base_port + index - 1
        unit_url = f"http://{host}:{port}"
        unit_env = {"NIAS_UNIT_NAME": f"unit-{index}", "NIAS_UNIT_PORT": str(port), "NIAS_UNIT_URL": unit_url,
                    "NIAS_BACKEND_URL": backend_url}
        services.append(Service(f"unit-{index}", gunicorn("process-unit/gunicorn.conf.py",
                                                          "process_unit.app:create_served_app()"),
                                unit_env, f"{unit_url}/healthz"))
        services.append(Service(f"consumer-{index}", [sys.executable, "-m", "consumer"], unit_env))
    return services


def find_rabbitmq_server() -> str | None:
    """The local rabbitmq-server, on PATH or in the sbin folders."""
    return shutil.which("rabbitmq-server", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS]))


def ensure_rabbitmq(settings: Settings) -> None:
    """Connect to RabbitMQ; start a local node when it is installed but down; else explain."""
    try:
        connect(settings, attempts=2).close()
        return
    except BrokerUnavailable:
        pass
    server = find_rabbitmq_server()
    if server is None:
        raise SystemExit(
            "RabbitMQ is not reachable at NIAS_AMQP_URL and rabbitmq-server is not installed here.\n"
            "Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server; macOS: brew install rabbitmq),\n"
            "run one in a container (docker run -d -p 5672:5672 rabbitmq:3.13),\n"
            "or point NIAS_AMQP_URL at a broker you have.")
    logger.info("RabbitMQ is down; starting it with %s -detached", server)
    subprocess.run([server, "-detached"], check=False)
    # `-detached` returns at once and the port opens some seconds later: wait by connecting.
    deadline = time.monotonic() + RABBITMQ_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            connect(settings, attempts=1).close()
            logger.info("RabbitMQ is up")
            return
        except BrokerUnavailable:
            time.sleep(1)
    raise SystemExit(f"RabbitMQ was started with {server} -detached but did not accept connections within "
                     f"{RABBITMQ_START_TIMEOUT_S} s; see its logs (/var/log/rabbitmq/).")


def _die_with_launcher(launcher_pid: int) -> None:
    """In the child, before exec: SIGTERM when the launcher dies, however it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher_pid:  # it died before the prctl took effect
        os._exit(1)


class Stack:
    def __init__(self, services: list[Service], base_env: dict[str, str], pid_file: Path):
        self.services = services
        self.base_env = base_env
        self.pid_file = pid_file
        self.stop_requested = False

    def request_stop(self, signum: int, _frame=None) -> None:
        """The signal handler: only a flag, so a stop never interrupts a start half-way."""
        if not self.stop_requested:
            logger.info("%s received: stopping every service", signal.Signals(signum).name)
        self.stop_requested = True

    def _write_pids(self) -> None:
        """`<data>/run/services.json`: each service's pid, for admins and tests."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        pids = {s.name: s.process.pid for s in self.services if s.process is not None}
        partial = self.pid_file.with_suffix(".part")
        partial.write_text(json.dumps(pids, indent=1))
        os.replace(partial, self.pid_file)

    def start(self, service: Service) -> None:
        env = {**self.base_env, **service.env, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "backend"), str(ROOT / "producer"), str(ROOT / "consumer"),
             str(ROOT / "process-unit")])}
        service.process = subprocess.Popen(service.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                           process_group=0,
                                           preexec_fn=functools.partial(_die_with_launcher, os.getpid()))
        service.started_at = time.monotonic()
        logger.info("Started %s (pid %s)", service.name, service.process.pid)
        self._write_pids()

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        for service in self.services:
            while service.health_url and not self.stop_requested:
                if service.process.poll() is not None:
                    raise SystemExit(f"{service.name} exited with code {service.process.returncode} while starting")
                try:
                    if requests.get(service.health_url, timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{service.name} did not become healthy at {service.health_url}")
                time.sleep(0.1)

    def supervise_once(self) -> None:
        now = time.monotonic()
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                code = service.process.returncode
                _kill_group(service)  # e.g. a gunicorn worker whose master was killed still holds the port
                if now - service.started_at > STABLE_AFTER_S:
                    service.restarts = 0  # it had been running well: this is a new failure, not a crash loop
                delay = RESTART_BACKOFF_S[min(service.restarts, len(RESTART_BACKOFF_S) - 1)]
                logger.error("%s exited with code %s; restarting in %s s", service.name, code, delay)
                service.restarts += 1
                service.process = None
                service.next_start = now + delay
            if service.process is None and now >= service.next_start:
                self.start(service)

    def stop(self) -> None:
        """SIGTERM every service (consumers first), wait for each, and kill what outlives the timeout."""
        started = [s for s in reversed(self.services) if s.process is not None]
        for service in started:
            if service.process.poll() is None:
                service.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for service in started:
            try:
                service.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %s s; killing it", service.name, STOP_TIMEOUT_S)
            _kill_group(service)
            service.process.wait()
            logger.info("Stopped %s (exit code %s)", service.name, service.process.returncode)
        self.pid_file.unlink(missing_ok=True)


def _kill_group(service: Service) -> None:
    """SIGKILL whatever is left in the service's process group (jobs run in sessions of their own)."""
    try:
        os.killpg(service.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(stack: Stack, settings: Settings) -> None:
    """Start every service, wait until each is healthy, then supervise until asked to stop."""
    for service in stack.services:
        if stack.stop_requested:
            return
        stack.start(service)
    stack.wait_healthy()
    if stack.stop_requested:
        return
    url = f"http://{settings.host}:{settings.port}/"
    logger.info("NIAS is up: %s  (data in %s; Ctrl-C stops every service)", url, settings.data_dir)
    print(f"NIAS_READY {url}", flush=True)
    while not stack.stop_requested:
        stack.supervise_once()
        time.sleep(0.5)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, "launcher")
    units = int(os.environ.get("NIAS_UNITS", "2"))
    producer_port = int(os.environ.get("NIAS_PRODUCER_PORT", "8081"))
    unit_base_port = int(os.environ.get("NIAS_UNIT_BASE_PORT", "8090"))
    ensure_rabbitmq(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # One credential for the services to know each other by, unless the admin set one.
    internal_token = settings.internal_token or secrets.token_urlsafe(32)
    base_env = {**os.environ, "NIAS_DATA_DIR": str(settings.data_dir), "NIAS_INTERNAL_TOKEN": internal_token}
    stack = Stack(service_specs(settings, units, producer_port, unit_base_port), base_env,
                  settings.data_dir / "run" / "services.json")

    for signum in STOP_SIGNALS:
        signal.signal(signum, stack.request_stop)
    try:
        run(stack, settings)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
