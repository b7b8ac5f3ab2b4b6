"""What every `nias` command shares: the client built from options, environment and config file,
the exit codes, and the translation of errors into one line and one of those codes."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import click

from nias.cli_config import DEFAULT_URL, load_config
from nias.client import ApiError, NiasClient
from nias.errors import NiasError, ServiceUnavailable
from nias.params import parse_value

T = TypeVar("T")


class Exit(enum.IntEnum):
    """The exit codes of `nias` (docs/api.md, "The command line")."""

    OK = 0
    JOB_DID_NOT_SUCCEED = 1  # a job (or one of a sweep's jobs) that was waited for failed or was cancelled
    USAGE = 2  # a bad option or argument (click's own code), or a project folder that cannot be sent
    REFUSED = 3  # the server refused the request: a bad upload, an unknown job, a state change not allowed
    NOT_SIGNED_IN = 4  # no token, or one the server does not accept (or that may not do this)
    UNAVAILABLE = 5  # the server could not be reached, failed, or did not answer in time


class Failure(click.ClickException):
    def __init__(self, message: str, exit_code: Exit):
        super().__init__(message)
        self.exit_code = int(exit_code)


def exit_code_for(exc: Exception) -> Exit:
    if isinstance(exc, ApiError):
        if exc.status in (401, 403):
            return Exit.NOT_SIGNED_IN
        return Exit.REFUSED if exc.status < 500 else Exit.UNAVAILABLE
    if isinstance(exc, (ServiceUnavailable, TimeoutError)):
        return Exit.UNAVAILABLE
    return Exit.USAGE if isinstance(exc, NiasError) and exc.status < 500 else Exit.UNAVAILABLE


def call(action: Callable[[], T]) -> T:
    """Run `action`; a NIAS error becomes one line on stderr and its exit code."""
    try:
        return action()
    except (NiasError, TimeoutError) as exc:
        message = getattr(exc, "message", str(exc))
        code = exit_code_for(exc)
        if code is Exit.NOT_SIGNED_IN and getattr(exc, "status", None) == 401:
            message += " Sign in with `nias login`, or set NIAS_TOKEN."
        raise Failure(message, code) from None


@dataclass
class Session:
    """The server and token a command talks to, and the client made from them on first use."""

    url: str
    token: str | None
    _client: NiasClient | None = field(default=None, repr=False)

    @property
    def client(self) -> NiasClient:
        if self._client is None:
            self._client = NiasClient(self.url, token=self.token)
        return self._client


def open_session(url: str | None, token: str | None) -> Session:
    """Options and NIAS_URL / NIAS_TOKEN first, then the config file, then the local default URL."""
    saved = call(load_config)
    return Session(url or saved.get("url") or DEFAULT_URL, token or saved.get("token"))


def client_of(ctx: click.Context) -> NiasClient:
    return ctx.find_object(Session).client


def assignments(texts: tuple[str, ...], option: str, parse=parse_value) -> dict:
    """`--param name=value` (value as JSON when it parses, else text) or `--sweep name=v1,v2`."""
    values = {}
    for text in texts:
        name, equals, raw = text.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{text!r} is not name=value", param_hint=option)
        values[name.strip()] = parse(raw)
    return values


PARAM = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                     help="a parameter for code.py (repeatable); the value is read as JSON when it parses")
SWEEP = click.option("--sweep", "sweeps", multiple=True, metavar="NAME=V1,V2",
                     help="run one job per combination of these values (repeatable)")
POOL = click.option("--pool", default=None, help="the pool of units to run it on (default: the default pool)")
WAIT = click.option("--wait", is_flag=True,
                    help="wait for the job (or every job of the sweep) to end and exit with its outcome")
