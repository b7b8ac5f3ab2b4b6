"""`nias-unit` (or `make unit`): one processing unit and its consumer in the foreground, on any host.

The host needs no part of the backend's disk: only the broker (NIAS_AMQP_URL), the backend's URL
(NIAS_BACKEND_URL), the internal token (NIAS_INTERNAL_TOKEN) and a name (NIAS_UNIT_NAME), with
work and environment dirs of its own. Before it starts anything it checks that it reaches the
broker and that the backend knows its token, and stops with one sentence naming what is wrong.
The two processes are supervised as in a unit container (process_unit/pair.py); Ctrl-C stops both.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from nias.amqp import connect
from nias.errors import NiasError
from nias.logs import configure_logging
from nias.settings import ENVIRONMENT, Settings, load_settings, require
from nias.transfer import BackendLink

from process_unit.pair import STOP_MARGIN_S, Pair

logger = logging.getLogger(__name__)


def check_reachable(settings: Settings) -> None:
    """Raise NiasError with one sentence when the broker or the backend (with this token) is out of reach."""
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    pika_logger.setLevel(logging.CRITICAL)  # its tracebacks would bury the one sentence that matters
    try:
        connection = connect(settings, attempts=1)  # BrokerUnavailable names the address
    except NiasError as exc:
        raise NiasError(f"{exc.message} (NIAS_AMQP_URL)", code=exc.code) from None
    finally:
        pika_logger.setLevel(level)
    connection.close()
    BackendLink(settings).ping()


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unit_environment(environ: dict[str, str]) -> dict[str, str]:
    """The pair's environment: the unit listens on loopback only (its consumer is beside it), on
    NIAS_UNIT_PORT or a free port, and is named after the host unless NIAS_UNIT_NAME says otherwise."""
    env = dict(environ)
    env.setdefault("NIAS_UNIT_NAME", socket.gethostname().split(".")[0] or "unit")
    env["NIAS_HOST"] = "127.0.0.1"
    env.setdefault("NIAS_UNIT_PORT", str(free_local_port()))
    env["NIAS_UNIT_URL"] = f"http://127.0.0.1:{env['NIAS_UNIT_PORT']}"
    return env


def pair_commands() -> list[list[str]]:
    return [[sys.executable, "-m", "gunicorn", "--config", "python:process_unit.gunicorn_config",
             "process_unit.app:create_served_app()"],
            [sys.executable, "-m", "consumer"]]


def main() -> None:
    env = unit_environment(dict(os.environ))
    try:
        settings = load_settings(env)
        configure_logging(settings.log_level, f"nias-unit-{settings.unit_name}")
        require(settings, "internal_token", "backend_url", "amqp_url")
        check_reachable(settings)
    except NiasError as exc:
        raise SystemExit(f"nias-unit: {exc.message}") from None
    named = {name: env[name] for name in ("NIAS_UNIT_NAME", "NIAS_UNIT_POOLS", "NIAS_WORK_DIR", "NIAS_ENV_DIR")
             if name in env and name in ENVIRONMENT}
    logger.info("Unit %s serves pools %s for %s (work dir %s); %s", settings.unit_name,
                ", ".join(settings.unit_pool_names), settings.backend_url, settings.unit_work_dir,
                ", ".join(f"{k}={v}" for k, v in named.items()) or "defaults")
    pair = Pair(pair_commands(), env)

    def request_stop(signum, _frame) -> None:
        logger.info("Signal %s: stopping unit %s", signum, settings.unit_name)
        pair.stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not pair.stopping.is_set():
        pair.supervise_once()
        pair.stopping.wait(0.5)
    pair.stop(settings.stop_grace_s + STOP_MARGIN_S)


if __name__ == "__main__":
    main()
