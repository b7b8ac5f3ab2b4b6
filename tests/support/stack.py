"""Starting the whole NIAS stack for tests exactly as `make up` does (tools/launcher.py),
on free ports, with a temporary data dir and its own RabbitMQ queue names."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from nias.amqp import Topology, connect
from nias.client import NiasClient
from nias.settings import load_settings, parse_pools

ROOT = Path(__file__).resolve().parents[2]


def free_port_block(count: int) -> int:
    """A first port such that `count` consecutive ports are free on loopback."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


class LocalStack:
    def __init__(self, workdir: Path, *, units: int = 2, data_dir: Path | None = None,
                 own_broker_account: bool = False, **env: str):
        self.workdir = workdir
        self.units = units
        base = free_port_block(2 + units)
        self.port, self.producer_port, self.unit_base_port = base, base + 1, base + 2
        self.prefix = f"test-{uuid.uuid4().hex[:10]}"
        # Outside pytest's private tmp: jobs run as another user, who must pass through it.
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="nias-data-"))
        self.data_dir.chmod(0o711)
        self.log_path = workdir / "stack.log"
        self.env = {
            **os.environ,
            "NIAS_DATA_DIR": str(self.data_dir),
            "NIAS_QUEUE_PREFIX": self.prefix,
            "NIAS_PORT": str(self.port),
            "NIAS_PRODUCER_PORT": str(self.producer_port),
            "NIAS_UNIT_BASE_PORT": str(self.unit_base_port),
            "NIAS_UNITS": str(units),
            "NIAS_LOG_LEVEL": "INFO",
            "NIAS_ADMIN_EMAIL": "admin@example.org",
            "NIAS_ADMIN_PASSWORD": "admin-password-for-tests",
            "NIAS_ADMIN_TOKEN": f"nias_test_{uuid.uuid4().hex}",
            "NIAS_INTERNAL_TOKEN": uuid.uuid4().hex,
            # Named, so the launcher keeps RabbitMQ's guest account and the tests can look at the queues.
            "NIAS_AMQP_URL": os.environ.get("NIAS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            **{key: str(value) for key, value in env.items()},
        }
        if own_broker_account:  # as `make up` runs by default: the launcher makes an account of its own
            del self.env["NIAS_AMQP_URL"]
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = self.env["NIAS_ADMIN_TOKEN"]
        self.client = NiasClient(self.url, token=self.admin_token)
        self.http = self.client.session  # a requests session that carries the admin's token

    @property
    def internal_headers(self) -> dict[str, str]:
        return {"X-Nias-Internal-Token": self.env["NIAS_INTERNAL_TOKEN"]}

    def unit_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.unit_base_port + index - 1}"

    def start(self, timeout_s: float = 90) -> "LocalStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "launcher.py")], cwd=ROOT,
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited while starting:\n{self.log_tail()}")
            if b"NIAS_READY" in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not start within {timeout_s} s:\n{self.log_tail()}")

    def __enter__(self) -> "LocalStack":
        try:
            return self.start()
        except BaseException:
            self.stop()  # a stack that failed to start leaves no process or queue behind
            raise

    def __exit__(self, *_exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pids(self, name: str) -> list[int]:
        """PIDs of the launcher's children whose command line mentions `name`."""
        out = subprocess.run(["pgrep", "-f", "-s", str(self.process.pid), name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def service_pid(self, service: str) -> int:
        """The pid the launcher recorded for a service (`backend`, `unit-1`, `consumer-2`, ...)."""
        return json.loads((self.data_dir / "run" / "services.json").read_text())[service]

    def kill_service(self, service: str, signum: int = signal.SIGKILL) -> int:
        """Signal a service and every process under it (a gunicorn master and its worker)."""
        pid = self.service_pid(service)
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for target in [pid, *map(int, children)]:
            try:
                os.kill(target, signum)
            except ProcessLookupError:
                pass
        return pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None
        delete_queues(self.prefix, self.env.get("NIAS_AMQP_URL"), self.env.get("NIAS_POOLS") or "default")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def delete_queues(prefix: str, amqp_url: str | None = None, pools: str = "default") -> None:
    settings = load_settings({"NIAS_AMQP_URL": amqp_url} if amqp_url else {}, queue_prefix=prefix)
    connection = connect(settings, attempts=3)
    try:
        Topology(prefix, parse_pools(pools, "NIAS_POOLS")).delete(connection.channel())
    finally:
        connection.close()


def wait_until(predicate, timeout_s: float = 30, interval_s: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{message} did not hold within {timeout_s} s")


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
