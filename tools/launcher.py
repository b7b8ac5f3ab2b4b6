"""`make up`: every NIAS service as a local process against a local RabbitMQ.

Starts the backend, the producer and N processing units each with its consumer, waits until
each answers its health check, prints the URL, restarts (and reports) a service that dies,
and stops them all on Ctrl-C. The commands here are the ones docker-compose.yaml runs.
"""
from __future__ import annotations

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


def ensure_rabbitmq(settings: Settings) -> None:
    """Connect to RabbitMQ; start a local node when it is installed but down; else explain."""
    try:
        connect(settings, attempts=2).close()
        return
    except BrokerUnavailable:
        pass
    server = shutil.which("rabbitmq-server") or ("/usr/sbin/rabbitmq-server" if os.path.exists("/usr/sbin/rabbitmq-server") else None)
    if server is None:
        raise SystemExit(
            "RabbitMQ is not reachable at NIAS_AMQP_URL and is not installed here.\n"
            "Install it (Debian/Ubuntu: apt-get install rabbitmq-server), or point NIAS_AMQP_URL at a broker.")
    logger.info("RabbitMQ is down; starting it with %s -detached", server)
    subprocess.run([server, "-detached"], check=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            connect(settings, attempts=1).close()
            logger.info("RabbitMQ is up")
            return
        except BrokerUnavailable:
            time.sleep(1)
    raise SystemExit("RabbitMQ was started but did not accept connections within 90 s; see its logs.")


class Stack:
    def __init__(self, services: list[Service], base_env: dict[str, str], pid_file: Path):
        self.services = services
        self.base_env = base_env
        self.pid_file = pid_file
        self.stopping = False

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
        service.process = subprocess.Popen(service.argv, cwd=ROOT, env=env)
        service.started_at = time.monotonic()
        logger.info("Started %s (pid %s)", service.name, service.process.pid)
        self._write_pids()

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        for service in self.services:
            while service.health_url:
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
        self.stopping = True
        for service in reversed(self.services):
            if service.process is not None and service.process.poll() is None:
                service.process.terminate()
        deadline = time.monotonic() + 40
        for service in self.services:
            if service.process is None:
                continue
            try:
                service.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", service.name)
                service.process.kill()


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

    def request_stop(signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    try:
        for service in stack.services:
            stack.start(service)
        stack.wait_healthy()
        url = f"http://{settings.host}:{settings.port}/"
        logger.info("NIAS is up: %s  (data in %s; Ctrl-C stops every service)", url, settings.data_dir)
        print(f"NIAS_READY {url}", flush=True)
        while True:
            stack.supervise_once()
            time.sleep(0.5)
    except KeyboardInterrupt:
        logger.info("Stopping every service")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
