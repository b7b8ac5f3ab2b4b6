"""`make up`: every NIAS service as a local process against a local RabbitMQ.

Chooses ports that clash with nothing (tools/ports.py), installs or names what is missing
(tools/packages.py), puts the units' work dirs where job users can reach them (tools/workplace.py),
starts the backend, the producer and N processing units each with its consumer, waits until each
answers its health check as itself, from the very process it started (a 200 from another service,
or an older start of the same one, is not enough), warns when units run jobs without a mount
namespace, ends with a short block (tools/banner.py: the URL, how to sign in, the data dir, the
units and their sandbox), restarts (and reports) a service that dies, and stops them all on Ctrl-C
(SIGINT), SIGTERM or SIGHUP. A service that dies or never answers as itself while the stack
starts stops everything: the launcher names it, shows the last lines it wrote and exits 1.
The commands here are the ones docker-compose.yaml runs.

Each service runs in a process group of its own, so a Ctrl-C in the terminal reaches only the
launcher, which stops the services in order (a unit hands its running job back); a service
whose launcher dies anyway gets SIGTERM from the kernel (parent-death signal).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nias.amqp import connect  # noqa: E402
from nias.errors import BadMessage, BrokerUnavailable, ConfigurationError, NiasError  # noqa: E402
from nias.health import Health, SandboxMode, ServiceKind  # noqa: E402
from nias.logs import configure_logging  # noqa: E402
from nias.settings import Settings, load_settings  # noqa: E402
from tools.banner import Banner, sign_in_hint  # noqa: E402
from tools.broker import private_broker_url  # noqa: E402
from tools.packages import Needs, carry_out, find_manager, find_system_command, plan_install  # noqa: E402
from tools.ports import PORT_VARIABLES, Ports, choose_ports, port_free  # noqa: E402,F401 (for the tests)
from tools.workplace import WorkPlace, choose_work_place, prepare_place  # noqa: E402

logger = logging.getLogger("nias.launcher")

BIN = Path(sys.executable).parent
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
STABLE_AFTER_S = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A unit may take NIAS_STOP_GRACE_S (20 s) plus the kill grace to hand its job back.
STOP_TIMEOUT_S = 45
RABBITMQ_START_TIMEOUT_S = 90
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
START_TIMEOUT_S = 60
TAIL_LINES = 20  # of a service's output, shown when it fails to start
KEPT_LINES = 200
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")  # the last line of a Python traceback
_output_lock = threading.Lock()


class StartFailed(NiasError):
    """Raised when a service dies, or does not answer as itself, while the stack starts."""

    code = "start_failed"


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None
    kind: ServiceKind | None = None  # what must answer at health_url
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    output: deque = field(default_factory=lambda: deque(maxlen=KEPT_LINES))  # its last lines
    pump: threading.Thread | None = None
    health: Health | None = None  # its last answer as itself
    instance_id: str = field(default_factory=lambda: secrets.token_hex(8))  # NIAS_INSTANCE_ID: this start's

    def first_error(self) -> str:
        """The first exception it reported: the cause, before the noise that may follow it."""
        found = next((line for line in self.output if ERROR_LINE.match(line)), None)
        return f": {found}" if found else ""

    def output_tail(self, lines: int = TAIL_LINES) -> str:
        tail = list(self.output)[-lines:]
        return "\n".join(f"  {self.name} | {line}" for line in tail) if tail else f"  ({self.name} wrote nothing)"


def gunicorn(config: str, app: str) -> list[str]:
    return [str(BIN / "gunicorn"), "--config", str(ROOT / config), app]


def service_specs(settings: Settings, ports: Ports, place: WorkPlace | None = None) -> list[Service]:
    """The services `make up` runs; docker-compose.yaml runs the same commands. Each unit works in a
    folder of its own (a unit clears its work dir of leftovers at start); they share the environments."""
    place = place or WorkPlace(settings.data_dir / "work", settings.environments_dir)
    host = settings.host
    backend_url = f"http://{host}:{ports.backend}"
    producer_url = f"http://{host}:{ports.producer}"
    # Moved where job users reach it: the units build there, the backend counts its disk use there.
    moved_envs = {"NIAS_ENV_DIR": str(place.env_dir)} if place.env_dir != settings.environments_dir else {}
    services = [
        Service("backend", gunicorn("backend/gunicorn.conf.py", "backend.app:create_served_app()"),
                {"NIAS_PORT": str(ports.backend), "NIAS_PRODUCER_URL": producer_url, **moved_envs},
                f"{backend_url}/healthz", ServiceKind.BACKEND),
        Service("producer", gunicorn("producer/gunicorn.conf.py", "producer.app:create_served_app()"),
                {"NIAS_PRODUCER_PORT": str(ports.producer)}, f"{producer_url}/healthz", ServiceKind.PRODUCER),
    ]
    for index, port in enumerate(ports.units, start=1):
        unit_url = f"http://{host}:{port}"
        unit_env = {"NIAS_UNIT_NAME": f"unit-{index}", "NIAS_UNIT_PORT": str(port), "NIAS_UNIT_URL": unit_url,
                    "NIAS_BACKEND_URL": backend_url, "NIAS_WORK_DIR": str(place.unit_work_dir(f"unit-{index}")),
                    **moved_envs}
        services.append(Service(f"unit-{index}", gunicorn("process-unit/gunicorn.conf.py",
                                                          "process_unit.app:create_served_app()"),
                                unit_env, f"{unit_url}/healthz", ServiceKind.UNIT))
        services.append(Service(f"consumer-{index}", [sys.executable, "-m", "consumer"], unit_env))
    return services


def find_rabbitmq_server() -> str | None:
    """The local rabbitmq-server, on PATH or in the sbin folders."""
    return find_system_command("rabbitmq-server")


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


def use_own_broker_account(settings: Settings) -> Settings:
    """The settings with a RabbitMQ account of NIAS's own, unless the admin named the broker's URL."""
    if os.environ.get("NIAS_AMQP_URL"):
        return settings

    def works(url: str) -> bool:
        try:
            connect(dataclasses.replace(settings, amqp_url=url), attempts=1).close()
            return True
        except BrokerUnavailable:
            return False

    url, how = private_broker_url(settings.amqp_url, settings.data_dir, settings.private_dir, works)
    if url == settings.amqp_url:
        logger.warning("RabbitMQ: %s (a job that reaches the broker could read the queues; set NIAS_AMQP_URL "
                       "to an account of NIAS's own)", how)
    else:
        logger.info("RabbitMQ: %s", how)
    return dataclasses.replace(settings, amqp_url=url)


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
        service.instance_id = secrets.token_hex(8)  # this start's: an answer from an older one does not count
        env = {**self.base_env, **service.env, "NIAS_INSTANCE_ID": service.instance_id, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "backend"), str(ROOT / "producer"), str(ROOT / "consumer"),
             str(ROOT / "process-unit")])}
        service.process = subprocess.Popen(service.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0,
                                           preexec_fn=functools.partial(_die_with_launcher, os.getpid()))
        service.started_at = time.monotonic()
        service.pump = threading.Thread(target=_pump_output, args=(service, service.process.stdout),
                                        name=f"output-{service.name}", daemon=True)
        service.pump.start()
        where = f" at {service.health_url.removesuffix('/healthz')}" if service.health_url else ""
        logger.info("Started %s (pid %s)%s", service.name, service.process.pid, where)
        self._write_pids()

    def wait_started(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every service answers its health check as itself; StartFailed names the first that dies
        (any of them, consumers too) or does not answer as itself in time."""
        deadline = time.monotonic() + timeout_s
        for service in self.services:
            answer = "nothing answered"
            while service.health_url and not self.stop_requested:
                self._check_running()
                service.health, answer = ask_health(service)
                if service.health is not None:
                    break
                if time.monotonic() > deadline:
                    raise StartFailed(f"{service.name} did not answer as itself at {service.health_url} within "
                                      f"{timeout_s:g} s: {answer}.\nIts last lines:\n{service.output_tail()}")
                time.sleep(0.1)
        self._check_running()

    def _check_running(self) -> None:
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                if service.pump is not None:
                    service.pump.join(2)  # the lines it wrote just before it exited
                raise StartFailed(f"{service.name} exited with code {service.process.returncode} while starting"
                                  f"{service.first_error()}\n"
                                  f"Its last lines:\n{service.output_tail()}")

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
            if service.pump is not None:
                service.pump.join(2)  # its last lines, before the launcher's own
            logger.info("Stopped %s (exit code %s)", service.name, service.process.returncode)
        self.pid_file.unlink(missing_ok=True)


def _kill_group(service: Service) -> None:
    """SIGKILL whatever is left in the service's process group (jobs run in sessions of their own)."""
    try:
        os.killpg(service.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump_output(service: Service, stream) -> None:
    """Pass a service's output on to the launcher's, line by line, keeping the last lines for a failed start."""
    with stream:
        for line in iter(stream.readline, b""):
            service.output.append(line.decode(errors="replace").rstrip())
            with _output_lock:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()


def ask_health(service: Service) -> tuple[Health | None, str]:
    """The service's health answer if it is healthy and it is this service that answers; else why not."""
    try:
        response = requests.get(service.health_url, timeout=2)
    except requests.RequestException:
        return None, "nothing answered"
    try:
        health = Health.from_dict(response.json())
    except (ValueError, BadMessage):
        return None, f"something that is not a NIAS service answered {response.status_code}"
    if not health.is_of(service.kind, service.name):
        return None, f"the answer came from {health.service.value} {health.name!r}, not from {service.name}"
    if health.instance != service.instance_id:
        return None, (f"the answer came from another {service.name} (instance {health.instance or 'unnamed'!r}, "
                      f"not {service.instance_id!r}: one started before, still holding the port?)")
    if response.status_code != 200 or not health.ok:
        failing = ", ".join(name for name, passed in health.checks.items() if not passed)
        return None, f"it answered {response.status_code}, failing its checks: {failing or 'none named'}"
    return health, "healthy"


def sandbox_warning(services: list[Service], settings: Settings, as_root: bool) -> str | None:
    """What jobs can see when units run them without a mount namespace, or None when every unit has one."""
    bare = [s.name for s in services if s.health and s.health.sandbox is SandboxMode.NONE]
    if not bare:
        return None
    why = "NIAS_SANDBOX=off" if settings.sandbox == "off" else "bubblewrap (bwrap) is not installed"
    text = (f"{', '.join(bare)} {'runs' if len(bare) == 1 else 'run'} jobs WITHOUT A SANDBOX ({why}): a job sees every file on this host that its "
            "user may read, the other processes, the shared /tmp and the network (NIAS_JOB_NETWORK=0 is not "
            "enforced).")
    if as_root:
        text += " Jobs still run as their own user, so the data dir's private folders stay closed to them."
    else:
        text += (" The units do not run as root, so jobs run as your own user: they can read and change the data "
                 "dir, the job store and every other job's uploads and results.")
    return text + (" Install bubblewrap (Debian: apt-get install bubblewrap) and leave NIAS_SANDBOX unset (bwrap, "
                   "the default) to require it.")


def run(stack: Stack, settings: Settings, ports: Ports, place: WorkPlace) -> None:
    """Start every service, wait until each answers as itself, then supervise until asked to stop."""
    for service in stack.services:
        if stack.stop_requested:
            return
        stack.start(service)
    stack.wait_started()
    if stack.stop_requested:
        return
    warning = sandbox_warning(stack.services, settings, os.geteuid() == 0)
    if warning:
        logger.warning("%s", warning)
    url = f"http://{settings.host}:{ports.backend}/"
    print(closing_banner(stack.services, settings, url, place).text(), flush=True)
    print(f"NIAS_READY {url}", flush=True)
    while not stack.stop_requested:
        stack.supervise_once()
        time.sleep(0.5)


def closing_banner(services: list[Service], settings: Settings, url: str, place: WorkPlace) -> Banner:
    backend = next(s for s in services if s.kind is ServiceKind.BACKEND)
    units = [s for s in services if s.kind is ServiceKind.UNIT]
    return Banner(url, sign_in_hint(settings.admin_email, bool(settings.admin_password), list(backend.output)),
                  str(settings.data_dir), place.describe(), len(units),
                  tuple(s.name for s in units if s.health and s.health.sandbox is SandboxMode.NONE))


def install_needs(settings: Settings) -> None:
    """Install (or say how to install) what is missing: rabbitmq-server when no broker answers, bubblewrap."""
    try:
        connect(settings, attempts=1).close()
        broker_missing = False
    except BrokerUnavailable:
        broker_missing = find_rabbitmq_server() is None
    needs = Needs(rabbitmq=broker_missing, bubblewrap=shutil.which("bwrap") is None, sandbox=settings.sandbox,
                  is_root=os.geteuid() == 0, manager=find_manager(),
                  no_install=bool(settings.no_install))
    carry_out(plan_install(needs))


def work_place(settings: Settings) -> WorkPlace:
    """Where the units' work dirs and environments go (said at start); SystemExit(2) if it cannot be made."""
    place = choose_work_place(os.environ, settings.data_dir, os.geteuid() == 0)
    try:
        prepare_place(place)
    except ConfigurationError as exc:
        logger.error("Not starting: %s", exc.message)
        raise SystemExit(2) from None
    if place.moved_to is not None:
        logger.info("Jobs run as other users, who cannot pass through %s: their work dirs and environments go to "
                    "%s (uploads, results and private/ stay in %s)", place.blocked_by, place.moved_to,
                    settings.data_dir)
    logger.info("Jobs: %s", place.describe())
    return place


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, "launcher")
    units = int(os.environ.get("NIAS_UNITS", "2"))
    try:
        ports = choose_ports(os.environ, settings.host, units)
    except ConfigurationError as exc:
        logger.error("Not starting: %s", exc.message)
        raise SystemExit(2) from None
    install_needs(settings)
    ensure_rabbitmq(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    place = work_place(settings)
    settings = use_own_broker_account(settings)
    # One credential for the services to know each other by, unless the admin set one.
    internal_token = settings.internal_token or secrets.token_urlsafe(32)
    base_env = {**os.environ, "NIAS_DATA_DIR": str(settings.data_dir), "NIAS_INTERNAL_TOKEN": internal_token,
                "NIAS_AMQP_URL": settings.amqp_url}
    stack = Stack(service_specs(settings, ports, place), base_env, settings.data_dir / "run" / "services.json")

    for signum in STOP_SIGNALS:
        signal.signal(signum, stack.request_stop)
    failed = False
    try:
        run(stack, settings, ports, place)
    except StartFailed as exc:
        logger.error("NIAS did not start: %s\nStopping the other services.", exc.message)
        failed = True
    finally:
        stack.stop()
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
