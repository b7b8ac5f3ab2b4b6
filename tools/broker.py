"""A RabbitMQ account of NIAS's own for `make up`: a vhost and a user with a random password.

RabbitMQ's `guest` can do anything on the default vhost, so a job that reaches the broker could
read or take any queue. When the admin names no broker (`NIAS_AMQP_URL` unset) and the local one
can be managed (`rabbitmqctl` works here, as root or its own user), the launcher makes a vhost
and a user for this data dir, keeps the password in `private/broker.json` (0600) and hands the
services that account's URL. Otherwise it says the services use `guest`, and why.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote, urlsplit

from tools.packages import find_system_command

logger = logging.getLogger(__name__)

CTL_TIMEOUT_S = 60
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def account_name(data_dir: Path) -> str:
    """One vhost and user per data dir, so two local deployments never share queues."""
    return f"nias-{hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]}"


def _rabbitmqctl() -> str | None:
    return find_system_command("rabbitmqctl")


def _ctl(ctl: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=CTL_TIMEOUT_S)


def _url(host_url: str, user: str, password: str, vhost: str) -> str:
    parts = urlsplit(host_url)
    port = f":{parts.port}" if parts.port else ""
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}{port}/{quote(vhost, safe='')}"


def _stored(path: Path) -> dict | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) and {"user", "password", "vhost"} <= set(stored) else None


def _create(ctl: str, name: str, password: str) -> str | None:
    """Make (or reset) the vhost, the user and its rights; the reason when rabbitmqctl refuses."""
    steps = [("add_vhost", name), ("add_user", name, password), ("change_password", name, password),
             ("set_permissions", "-p", name, name, ".*", ".*", ".*")]
    for step in steps:
        done = _ctl(ctl, *step)
        if done.returncode != 0 and "already exists" not in (done.stderr + done.stdout) and step[0] != "add_user":
            return f"rabbitmqctl {step[0]} failed: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def private_broker_url(default_url: str, data_dir: Path, private_dir: Path, works) -> tuple[str, str]:
    """(the URL the services use, what was done); `works(url)` tells whether a URL connects."""
    if urlsplit(default_url).hostname not in LOCAL_HOSTS:
        return default_url, "a broker on another host: its account is the admin's to choose"
    store = private_dir / "broker.json"
    stored = _stored(store)
    if stored is not None:
        url = _url(default_url, stored["user"], stored["password"], stored["vhost"])
        if works(url):
            return url, f"RabbitMQ vhost and user {stored['vhost']} (kept in {store})"
    ctl = _rabbitmqctl()
    if ctl is None:
        return default_url, "rabbitmqctl is not installed here, so the services use RabbitMQ's guest account"
    name, password = account_name(data_dir), secrets.token_urlsafe(24)
    try:
        refused = _create(ctl, name, password)
    except (OSError, subprocess.TimeoutExpired) as exc:
        refused = f"rabbitmqctl did not answer: {exc}"
    if refused:
        return default_url, f"{refused}; the services use RabbitMQ's guest account"
    private_dir.mkdir(parents=True, exist_ok=True)
    private_dir.chmod(0o700)
    descriptor = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"user": name, "password": password, "vhost": name}, handle)
    url = _url(default_url, name, password, name)
    if not works(url):
        return default_url, "the new RabbitMQ account does not connect; the services use RabbitMQ's guest account"
    return url, f"RabbitMQ vhost and user {name} made for this data dir (password in {store})"
