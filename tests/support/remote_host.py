"""A host that shares nothing with the stack, on this machine: its own network namespace, joined
to ours by a veth pair, and its own mount namespace with a tmpfs over every folder of the stack's
(its data dir, its units' work dirs and environments), so what runs there cannot see them.

It reaches the broker and the backend only at addresses on the link: `forward()` puts a TCP
forwarder on our end of the veth in front of a loopback service (RabbitMQ and the backend listen
on 127.0.0.1 only, and RabbitMQ's guest may only sign in from loopback). Needs root.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.support.proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class RemoteHost:
    def __init__(self, hide: list[Path]):
        tag = uuid.uuid4().hex[:6]
        self.netns = f"nias-{tag}"
        self._veth = f"vn{tag}"
        taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        subnet = random.choice([n for n in range(1, 251) if f"10.231.{n}." not in taken])  # hosts of other tests
        self.address = f"10.231.{subnet}.1"  # our end of the link: what the host reaches us at
        self.remote_address = f"10.231.{subnet}.2"
        self.hide = [path for path in hide if path.exists()]
        # Its own disk: folders no one else uses, where job users may pass (not under a 0700 tmp dir).
        self.home = Path(tempfile.mkdtemp(prefix="nias-remote-", dir="/var/tmp"))
        self.home.chmod(0o711)
        self._proxies: list[TcpProxy] = []
        self.units: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "RemoteHost":
        _ip("netns", "add", self.netns)
        _ip("link", "add", f"{self._veth}h", "type", "veth", "peer", "name", f"{self._veth}r")
        _ip("link", "set", f"{self._veth}r", "netns", self.netns)
        _ip("addr", "add", f"{self.address}/30", "dev", f"{self._veth}h")
        _ip("link", "set", f"{self._veth}h", "up")
        for args in (("addr", "add", f"{self.remote_address}/30", "dev", f"{self._veth}r"),
                     ("link", "set", f"{self._veth}r", "up"), ("link", "set", "lo", "up")):
            _ip("netns", "exec", self.netns, "ip", *args)
        return self

    def forward(self, port: int) -> int:
        """Make 127.0.0.1:`port` reachable from the remote host at `self.address`; returns the port there."""
        proxy = TcpProxy(("127.0.0.1", port), host=self.address)
        self._proxies.append(proxy)
        return proxy.port

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as it runs on the remote host: in its network namespace, with the hidden folders covered."""
        covers = " && ".join(f'mount -t tmpfs -o size=1m,mode=0700 nias-hidden "${index + 1}"'
                             for index in range(len(self.hide)))
        script = f'{covers + " && " if covers else ""}shift {len(self.hide)} && exec "$@"'
        return ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, "remote", *map(str, self.hide), *argv]

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=60)

    def start_unit(self, name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        """`make unit` on the remote host, with work and environment dirs of its own there."""
        unit_env = {**os.environ, **env, "NIAS_UNIT_NAME": name,
                    "NIAS_DATA_DIR": str(self.home / name), "NIAS_WORK_DIR": str(self.home / name / "work"),
                    "NIAS_ENV_DIR": str(self.home / "envs")}
        for variable in ("NIAS_PORT", "NIAS_PRODUCER_PORT", "NIAS_UNIT_BASE_PORT", "NIAS_UNIT_PORT",
                         "NIAS_UNIT_URL", "DATABASE_URL"):
            unit_env.pop(variable, None)
        unit_env.update(env)
        with open(log, "ab") as output:
            process = subprocess.Popen(self.command(["make", "--no-print-directory", "-C", str(ROOT), "unit"]),
                                       env=unit_env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.units[name] = process
        return process

    def kill_unit(self, name: str, signum: int = signal.SIGKILL) -> None:
        process = self.units.pop(name)
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        process.wait(60)

    def stop_unit(self, name: str) -> None:
        """Ctrl-C, as an admin stops it; SIGKILL for what outlives a minute."""
        process = self.units[name]
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
        self.kill_unit(name)

    def __exit__(self, *_exc) -> None:
        for name in list(self.units):
            self.kill_unit(name)
        for proxy in self._proxies:
            proxy.cut()
        subprocess.run(["ip", "link", "del", f"{self._veth}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)
