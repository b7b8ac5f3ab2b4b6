"""What travels over RabbitMQ: the job message (a reference to an upload), job events, controls and
unit presence.

All are frozen dataclasses with `encode()` to JSON bytes and `decode()` that raises `BadMessage`
for anything that is not exactly a message of this schema: every field of its type, enums where
a field names one of a few things, every size bounded, and each event kind's `details` of its
one shape (`DETAILS`). What passes `decode` can be applied; what does not is a dead letter.

Events and presence messages are signed by their unit: `encode(key=unit_key(token, unit))` adds
an HMAC-SHA256 (`sig`) over the job id, the attempt, the unit and the encoded content, and
`decode(raw, key_for=...)` refuses (`BadSignature`) a message whose signature is missing or does
not verify under the key of the unit it names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, TypeVar

from nias.errors import BadMessage, BadSignature
from nias.health import SandboxMode
from nias.settings import DEFAULT_POOL, POOL_NAME
from nias.params import params_problem
from nias.provenance import check_origin, check_pins
from nias.ran_with import check_ran_with
from nias.states import FINAL_STATES, JobState
from nias.timeline import UNIT_HOPS

SCHEMA_VERSION = 1
T = TypeVar("T", bound="_Message")

MAX_MESSAGE_BYTES = 64 * 1024  # a whole encoded message
MAX_ERROR_BYTES = 8 * 1024  # a job's error: the reason and the last lines of stderr; the rest stays in the log
MAX_TEXT_BYTES = 1024  # any other text field
MAX_INT = 2**53  # what every JSON reader and the store's BIGINT hold exactly
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")  # job ids and unit names
LIMIT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
SHA256 = re.compile(r"[0-9a-f]{64}")
KeyFor = Callable[[str], bytes]  # a unit's name -> the key its messages are signed with


class EventKind(str, Enum):
    HEARTBEAT = "heartbeat"  # the unit still holds the attempt: renews its lease
    PROGRESS = "progress"  # the job reported how far it is
    FINISHED = "finished"  # the attempt ended: `state` says how
    LOST = "lost"  # the attempt is gone (unit stopped or died): queue the job again

    def __str__(self) -> str:
        return self.value


class ControlAction(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    PRIORITY = "priority"  # a new priority for a batch job still waiting on its cluster

    def __str__(self) -> str:
        return self.value


class UnitState(str, Enum):
    IDLE = "idle"
    BUSY = "busy"

    def __str__(self) -> str:
        return self.value


def clip_text(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, with a marker when something was cut."""
    raw = text.encode(errors="replace")
    if len(raw) <= limit:
        return text
    marker = f"\n[... {len(raw) - limit + 64} more bytes not shown]"
    return raw[: limit - len(marker.encode())].decode(errors="ignore") + marker


def unit_key(internal_token: str, unit: str) -> bytes:
    """The key a unit signs its events with, derived from the internal token: the backend knows them all."""
    return hmac.new(internal_token.encode(), f"unit:{unit}".encode(), hashlib.sha256).digest()


def _signature(key: bytes, body: dict[str, Any]) -> str:
    signed = f"{body.get('job_id')}\n{body.get('attempt')}\n{body.get('unit')}\n".encode()
    signed += json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


# -- checks of single values: each returns what is wrong, or None --------------------------------
Check = Callable[[Any], "str | None"]


def _number(low: float, high: float, *, integer: bool = False, nullable: bool = True) -> Check:
    def check(value: Any) -> str | None:
        if value is None:
            return None if nullable else "is missing"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return "must be an integer" if integer else "must be a number"
        if not math.isfinite(value) or not low <= value <= high:
            return f"must be between {low:g} and {high:g}"
        return None
    return check


def _flag(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "must be true or false"


def _text(limit: int = MAX_TEXT_BYTES) -> Check:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            return "must be text"
        return f"is longer than {limit} bytes" if len(value.encode(errors="replace")) > limit else None
    return check


def _matching(pattern: re.Pattern, what: str, *, nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        return None if isinstance(value, str) and pattern.fullmatch(value) else f"must be {what}"
    return check


def _limits(value: Any) -> str | None:
    if not isinstance(value, dict) or len(value) > 16:
        return "must be an object of at most 16 limits"
    for name, amount in value.items():
        if not LIMIT_NAME.fullmatch(name) or _number(0, MAX_INT, integer=True, nullable=False)(amount):
            return "must map limit names to non-negative integers"
    return None


def _names(pattern: re.Pattern, most: int, what: str) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) > most:
            return f"must be a list of at most {most} {what}"
        return None if all(isinstance(item, str) and pattern.fullmatch(item) for item in value) else f"must list {what}"
    return check


DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
MAX_JOB_DATASETS = 20


def _datasets(value: Any) -> str | None:
    """A job's data sets: [{"name", "sha256", "size", "filename" (a single file's name)}], at most MAX_JOB_DATASETS, names unique."""
    problem = f"must be a list of at most {MAX_JOB_DATASETS} {{name, sha256, size}} objects with distinct names"
    if not isinstance(value, list) or len(value) > MAX_JOB_DATASETS:
        return problem
    for item in value:
        if (not isinstance(item, dict) or not {"name", "sha256", "size"} <= set(item) <= {"name", "sha256", "size", "filename"}
                or not isinstance(item.get("filename", ""), str) or len(item.get("filename", "")) > 200
                or "/" in item.get("filename", "") or item.get("filename") in ("", ".", "..")
                or not isinstance(item["name"], str) or not DATASET_NAME.fullmatch(item["name"])
                or not isinstance(item["sha256"], str) or not SHA256.fullmatch(item["sha256"])
                or _COUNT(item["size"])):
            return problem
    return None if len({item["name"] for item in value}) == len(value) else problem


def _texts(most: int) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) > most or any(_text(200)(item) or item is None for item in value):
            return f"must be a list of at most {most} short texts"
        return None
    return check


def _upload_path(value: Any) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= 300:
        return "must be a path of at most 300 characters"
    if value.startswith("/") or ".." in value.split("/") or "\0" in value:
        return "must be a path inside the data dir"
    return None


_SECONDS = _number(0, MAX_INT)
_COUNT = _number(0, MAX_INT, integer=True)
_NAME = _matching(NAME, "a name of letters, digits and _.:- (at most 100)")

EXECUTORS = ("local", "slurm")
EXECUTION_FIELDS = ("executor", "slurm_job_id", "slurm_state", "reason", "node")


def _execution(value: Any) -> str | None:
    """Where and how an attempt runs: `{"executor": "slurm", "slurm_job_id": "42", "slurm_state":
    "PENDING", "reason": "Resources", "node": "c12"}`; each a short text, the executor one of EXECUTORS."""
    if not isinstance(value, dict) or not set(value) <= set(EXECUTION_FIELDS) or value.get("executor") not in EXECUTORS:
        return f"must be an object of {', '.join(EXECUTION_FIELDS)} with an executor of {', '.join(EXECUTORS)}"
    if any(item is not None and _text(200)(item) for item in value.values()):
        return "must hold short texts"
    return None


def _timeline(value: Any) -> str | None:
    """A unit's marks of one attempt (nias.timeline): hop name to seconds since the epoch."""
    if not isinstance(value, dict) or not set(value) <= {hop.value for hop in UNIT_HOPS}:
        return f"must map the unit's hops ({', '.join(sorted(hop.value for hop in UNIT_HOPS))}) to times"
    return None if all(not _SECONDS(at) and at is not None for at in value.values()) else "must hold times"


# The one shape of each event kind's details. A key not listed is refused.
_LIVE: dict[str, Check] = {"paused": _flag, "active_s": _SECONDS, "progress": _number(0, 1),
                           "message": _text(), "execution": _execution}
DETAILS: dict[EventKind, dict[str, Check]] = {
    EventKind.HEARTBEAT: _LIVE,
    EventKind.PROGRESS: _LIVE,
    EventKind.FINISHED: {
        **_LIVE, "env_seconds": _SECONDS, "env_cached": _flag, "env_built_at": _SECONDS, "run_seconds": _SECONDS,
        "total_seconds": _SECONDS, "log_bytes": _COUNT, "limits": _limits, "log_incomplete": _text(),
        "handed_back": _flag, "result_files": _COUNT, "result_left_out": _COUNT, "ran_with": check_ran_with,
        "timeline": _timeline,
    },
    EventKind.LOST: {},
}


@dataclass(frozen=True)
class _Message:
    kind: ClassVar[str] = ""
    checks: ClassVar[dict[str, Check]] = {}  # per field, beyond its type
    enums: ClassVar[dict[str, type[Enum]]] = {}  # fields decoded into an enum

    def encode(self, key: bytes | None = None) -> bytes:
        """JSON bytes; signed (a `sig` field) when a unit's `key` is given."""
        fields = {name: _plain(value) for name, value in dataclasses.asdict(self).items()}
        body = {"v": SCHEMA_VERSION, "type": self.kind, **fields}
        if key is not None:
            body["sig"] = _signature(key, body)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls: type[T], raw: bytes | str, key_for: KeyFor | None = None) -> T:
        """The message in `raw`, checked; with `key_for`, only if signed by the unit it names."""
        if len(raw) > MAX_MESSAGE_BYTES:
            raise BadMessage(f"message is larger than {MAX_MESSAGE_BYTES} bytes ({len(raw)})")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadMessage(f"message is not JSON: {str(exc)[:100]}") from None
        if not isinstance(body, dict):
            raise BadMessage("message is not a JSON object")
        signature = body.pop("sig", None)
        signed = dict(body)
        if body.pop("v", None) != SCHEMA_VERSION or body.pop("type", None) != cls.kind:
            raise BadMessage(f"message is not a version {SCHEMA_VERSION} {cls.kind!r} message")
        message = cls.from_dict(body)
        if key_for is not None:
            _verify(signature, key_for(str(signed.get("unit"))), signed, cls.kind)
        return message

    @classmethod
    def from_dict(cls: type[T], body: dict[str, Any]) -> T:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(body) - set(fields)
        if unknown:
            raise BadMessage(f"unknown fields in {cls.kind} message: {', '.join(sorted(unknown)[:10])[:300]}")
        values = dict(body)
        for name, spec in fields.items():
            if name not in body:
                if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                    raise BadMessage(f"{cls.kind} message lacks {name!r}")
                continue
            values[name] = cls._checked(name, str(spec.type), body[name])
        message = cls(**values)
        message.validate()
        return message

    @classmethod
    def _checked(cls, name: str, annotation: str, value: Any) -> Any:
        expected = _TYPES.get(annotation)
        # bool is an int to Python, never to the schema.
        if expected and (not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)):
            raise BadMessage(f"{cls.kind} message field {name!r} has the wrong type")
        problem = cls.checks.get(name, _text() if isinstance(value, str) else _no_check)(value)
        if problem is None and isinstance(value, float) and not math.isfinite(value):
            problem = "must be a finite number"
        if problem:
            raise BadMessage(f"{cls.kind} message field {name!r} {problem}")
        enum = cls.enums.get(name)
        if enum is not None and value is not None:
            try:
                return enum(value)
            except ValueError:
                choices = ", ".join(member.value for member in enum)
                raise BadMessage(f"{cls.kind} message field {name!r} must be one of {choices}") from None
        return value

    def validate(self) -> None:
        """Checks across fields, once each field is of its type."""

    def __str__(self) -> str:  # for logs: what and whose, never a whole error or body
        named = ", ".join(f"{name}={_plain(getattr(self, name))!r}" for name in ("job_id", "attempt", "unit", "event",
                                                                                  "state", "action", "dispatch")
                          if hasattr(self, name))
        return f"{self.kind} message ({named})"[:300]


def _no_check(_value: Any) -> None:
    return None


def _verify(signature: Any, key: bytes, signed: dict[str, Any], kind: str) -> None:
    if not isinstance(signature, str):
        raise BadSignature(f"{kind} message from {signed.get('unit')!r} is not signed")
    if not hmac.compare_digest(signature, _signature(key, signed)):
        raise BadSignature(f"{kind} message's signature does not verify for unit {signed.get('unit')!r}")


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
    "dict": (dict,),
    "bool": (bool,),
    "list": (list,),
    "EventKind": (str,),
    "ControlAction": (str,),
    "UnitState": (str,),
    "SandboxMode | None": (str, type(None)),
    "JobState | None": (str, type(None)),
}


@dataclass(frozen=True)
class JobMessage(_Message):
    """Asks a processing unit to run a job. A few hundred bytes whatever the upload's size."""

    kind: ClassVar[str] = "job"
    checks: ClassVar[dict[str, Check]] = {
        "job_id": _NAME, "upload": _upload_path, "sha256": _matching(SHA256, "64 lowercase hex digits"),
        "size": _COUNT, "dispatch": _COUNT, "priority": _number(0, 10, integer=True),
        "timeout_s": _number(1, 2**31, integer=True), "limits": _limits, "params": params_problem,
        "pool": _matching(POOL_NAME, "a pool name of lowercase letters, digits, _ and - (at most 32)"),
        "pins": check_pins, "origin": check_origin,
        "datasets": _datasets,
    }
    job_id: str
    upload: str  # path of the zip relative to the data dir
    sha256: str
    size: int
    dispatch: int  # the backend's dispatch number; a message with an older number is stale
    priority: int = 0
    timeout_s: int | None = None
    limits: dict = field(default_factory=dict)  # a job may ask for less than the admin's limits
    pool: str = DEFAULT_POOL  # whose queue it waits in: the units serving that pool run it
    params: dict = field(default_factory=dict)  # written to params.json in the project folder (nias.params)
    fresh_env: bool = False  # build the environment anew with the newest versions (unpinned requirements)
    pins: list = field(default_factory=list)  # "re-run exactly": build the environment from these name==version
    origin: dict = field(default_factory=dict)  # where the project came from, for its provenance (nias.provenance)
    datasets: list = field(default_factory=list)  # [{name, sha256, size, filename}]: provided at data/<name>/


@dataclass(frozen=True)
class JobEvent(_Message):
    """Reports what happened to one attempt of a job. Applied by the backend's recorder."""

    kind: ClassVar[str] = "event"
    HEARTBEAT: ClassVar[EventKind] = EventKind.HEARTBEAT  # details: paused, active_s, progress, message
    PROGRESS: ClassVar[EventKind] = EventKind.PROGRESS  # details: progress (0..1), message, active_s
    FINISHED: ClassVar[EventKind] = EventKind.FINISHED
    LOST: ClassVar[EventKind] = EventKind.LOST
    checks: ClassVar[dict[str, Check]] = {
        "job_id": _NAME, "attempt": _number(0, 10**6, integer=True), "unit": _NAME, "at": _SECONDS,
        "exit_code": _number(-(2**31), 2**31, integer=True), "error": _text(MAX_ERROR_BYTES),
        "result_size": _COUNT,
    }
    enums: ClassVar[dict[str, type[Enum]]] = {"event": EventKind, "state": JobState}

    job_id: str
    attempt: int
    unit: str
    event: EventKind
    at: float = field(default_factory=time.time)
    state: JobState | None = None
    exit_code: int | None = None
    error: str | None = None
    result_size: int | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Whatever a job printed, its error stays a few kilobytes: the rest is in its log.
        if isinstance(self.error, str):
            object.__setattr__(self, "error", clip_text(self.error, MAX_ERROR_BYTES))

    def validate(self) -> None:
        if self.state is not None and (self.event is not EventKind.FINISHED or self.state not in FINAL_STATES):
            raise BadMessage(f"a {self.event.value} event cannot report the state {self.state.value!r}")
        shape = DETAILS[self.event]
        unknown = set(self.details) - set(shape)
        if unknown:
            raise BadMessage(f"unknown details in a {self.event.value} event: "
                             f"{', '.join(sorted(map(str, unknown))[:10])[:300]}")
        for name, value in self.details.items():
            problem = shape[name](value)
            if problem:
                raise BadMessage(f"{self.event.value} event detail {name!r} {problem}")


@dataclass(frozen=True)
class ControlMessage(_Message):
    """Asks whichever unit holds a job's attempt to pause, resume or cancel it (fanned out)."""

    kind: ClassVar[str] = "control"
    PAUSE: ClassVar[ControlAction] = ControlAction.PAUSE
    RESUME: ClassVar[ControlAction] = ControlAction.RESUME
    CANCEL: ClassVar[ControlAction] = ControlAction.CANCEL
    PRIORITY: ClassVar[ControlAction] = ControlAction.PRIORITY
    checks: ClassVar[dict[str, Check]] = {"job_id": _NAME, "attempt": _number(0, 10**6, integer=True),
                                          "priority": _number(0, 10, integer=True)}
    enums: ClassVar[dict[str, type[Enum]]] = {"action": ControlAction}

    job_id: str
    attempt: int
    action: ControlAction
    priority: int | None = None  # the job's new priority, with PRIORITY only

    def validate(self) -> None:
        if (self.priority is not None) != (self.action is ControlAction.PRIORITY):
            raise BadMessage("a control message carries a priority with the priority action only")


PRESENCE_S = 5  # how often a processing unit announces itself


@dataclass(frozen=True)
class UnitStatus(_Message):
    """A processing unit's periodic "I am here": idle, or busy with a job; and how it sandboxes jobs."""

    kind: ClassVar[str] = "unit"
    checks: ClassVar[dict[str, Check]] = {
        "unit": _NAME, "job_id": _matching(NAME, "a job id", nullable=True), "at": _SECONDS,
        "pools": _names(POOL_NAME, 32, "pool names"), "host": _text(255), "cpus": _number(0, 1_000_000, integer=True),
        "memory_mb": _number(0, MAX_INT, integer=True), "gpus": _texts(64), "python": _text(64),
        "executor": _matching(re.compile("|".join(EXECUTORS)), f"one of {', '.join(EXECUTORS)}"),
        "pause_refusal": _text(),
    }
    enums: ClassVar[dict[str, type[Enum]]] = {"state": UnitState, "sandbox": SandboxMode}
    unit: str
    state: UnitState  # "idle" or "busy"
    job_id: str | None = None
    at: float = field(default_factory=time.time)
    sandbox: SandboxMode | None = None  # None from units that predate it
    # What the unit has, said with every announcement (process_unit/host_facts.py).
    pools: list = field(default_factory=lambda: [DEFAULT_POOL])
    host: str | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    gpus: list = field(default_factory=list)
    python: str | None = None
    executor: str = "local"  # "slurm": a unit on a cluster's login node, submitting batch jobs
    pause_refusal: str | None = None  # why this unit cannot pause its jobs, if it cannot


@dataclass(frozen=True)
class UnitDrain(_Message):
    """Asks one unit's consumer to take no more jobs once its current one is over (`drain`), or to
    take them again; fanned out on the control exchange like ControlMessage, the named unit acts."""

    kind: ClassVar[str] = "drain"
    checks: ClassVar[dict[str, Check]] = {"unit": _NAME}
    unit: str
    drain: bool


def _kind_of(raw: bytes | str) -> str | None:
    try:
        return json.loads(raw).get("type") if len(raw) <= MAX_MESSAGE_BYTES else None
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None


def decode_control(raw: bytes | str) -> ControlMessage | UnitDrain:
    """Decode a message of the control exchange, whichever of its kinds it is."""
    return (UnitDrain if _kind_of(raw) == UnitDrain.kind else ControlMessage).decode(raw)


def decode_event(raw: bytes | str, key_for: KeyFor | None = None) -> JobEvent | UnitStatus:
    """Decode a message from the events queue, whichever of its kinds it is (signed, given `key_for`)."""
    message_class = UnitStatus if _kind_of(raw) == UnitStatus.kind else JobEvent
    return message_class.decode(raw, key_for)
