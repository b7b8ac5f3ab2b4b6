"""tools/launcher.py's `ensure_rabbitmq`: start a local broker when one is installed, else explain."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from nias.errors import BrokerUnavailable
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
