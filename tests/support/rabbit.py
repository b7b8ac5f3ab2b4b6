"""A RabbitMQ node of the tests' own, beside the machine's broker: its own node name, ports,
data dir and config (a short `consumer_timeout`), so tests can restart it freely."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.stack import free_port_block

RABBITMQ_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


class BrokerNode:
    def __init__(self, *, consumer_timeout_ms: int = 5000):
        # Its own folder outside pytest's private tmp: the node runs as the rabbitmq user.
        self.workdir = Path(tempfile.mkdtemp(prefix="nias-rabbit-"))
        os.chmod(self.workdir, 0o755)
        self.node = f"nias-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port_block(2)
        self.dist_port = self.port + 1
        self.consumer_timeout_ms = consumer_timeout_ms
        self.process: subprocess.Popen | None = None
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
        }

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            f"consumer_timeout = {self.consumer_timeout_ms}\n"
        )
        (self.workdir / "rabbitmq-env.conf").write_text(f"NODENAME={self.node}\n")
        (self.workdir / "enabled_plugins").write_text("[].\n")
        # Debian's rabbitmq-server drops to the rabbitmq user: it must own its folders.
        shutil.chown(self.workdir, "rabbitmq", "rabbitmq")
        for path in self.workdir.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout_s: float = 90) -> "BrokerNode":
        if self.process is None:
            self._write_config()
        log = open(self.workdir / "server.log", "ab")
        self.process = subprocess.Popen([RABBITMQ_SERVER], env=self._environment(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.accepts_connections():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"test RabbitMQ node {self.node} did not start; see {self.workdir}/server.log")
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        subprocess.run([RABBITMQCTL, "-n", self.node, "stop"], env=self._environment(), capture_output=True,
                       timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
