"""What travels over RabbitMQ: the job message (a reference to an upload) and job events.

Both are frozen dataclasses with `encode()` to JSON bytes and `decode()` that raises
`BadMessage` for anything that is not exactly a message of this schema.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from nias.errors import BadMessage

SCHEMA_VERSION = 1
T = TypeVar("T", bound="_Message")


@dataclass(frozen=True)
class _Message:
    kind: ClassVar[str] = ""

    def encode(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "type": self.kind, **dataclasses.asdict(self)}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls: type[T], raw: bytes | str) -> T:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadMessage(f"message is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadMessage("message is not a JSON object")
        if body.pop("v", None) != SCHEMA_VERSION or body.pop("type", None) != cls.kind:
            raise BadMessage(f"message is not a version {SCHEMA_VERSION} {cls.kind!r} message")
        return cls.from_dict(body)

    @classmethod
    def from_dict(cls: type[T], body: dict[str, Any]) -> T:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(body) - set(fields)
        if unknown:
            raise BadMessage(f"unknown fields in {cls.kind} message: {', '.join(sorted(unknown))}")
        for name, spec in fields.items():
            if name not in body:
                if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                    raise BadMessage(f"{cls.kind} message lacks {name!r}")
                continue
            expected = _TYPES.get(str(spec.type))
            value = body[name]
            # bool is an int to Python, never to the schema.
            if expected and (not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)):
                raise BadMessage(f"{cls.kind} message field {name!r} has the wrong type")
        return cls(**body)


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
    "dict": (dict,),
}


@dataclass(frozen=True)
class JobMessage(_Message):
    """Asks a processing unit to run a job. A few hundred bytes whatever the upload's size."""

    kind: ClassVar[str] = "job"
    job_id: str
    upload: str  # path of the zip relative to the data dir
    sha256: str
    size: int
    dispatch: int  # the backend's dispatch number; a message with an older number is stale
    priority: int = 0
    timeout_s: int | None = None
    limits: dict = field(default_factory=dict)  # a job may ask for less than the admin's limits


@dataclass(frozen=True)
class JobEvent(_Message):
    """Reports what happened to one attempt of a job. Applied by the backend's recorder."""

    kind: ClassVar[str] = "event"
    HEARTBEAT: ClassVar[str] = "heartbeat"  # details: paused, active_s
    PROGRESS: ClassVar[str] = "progress"  # details: progress (0..1), message, active_s
    FINISHED: ClassVar[str] = "finished"
    LOST: ClassVar[str] = "lost"

    job_id: str
    attempt: int
    unit: str
    event: str
    at: float = field(default_factory=time.time)
    state: str | None = None
    exit_code: int | None = None
    error: str | None = None
    result_size: int | None = None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ControlMessage(_Message):
    """Asks whichever unit holds a job's attempt to pause, resume or cancel it (fanned out)."""

    kind: ClassVar[str] = "control"
    PAUSE: ClassVar[str] = "pause"
    RESUME: ClassVar[str] = "resume"
    CANCEL: ClassVar[str] = "cancel"

    job_id: str
    attempt: int
    action: str


PRESENCE_S = 5  # how often a processing unit announces itself


@dataclass(frozen=True)
class UnitStatus(_Message):
    """A processing unit's periodic "I am here": idle, or busy with a job."""

    kind: ClassVar[str] = "unit"
    unit: str
    state: str  # "idle" or "busy"
    job_id: str | None = None
    at: float = field(default_factory=time.time)


def decode_event(raw: bytes | str) -> JobEvent | UnitStatus:
    """Decode a message from the events queue, whichever of its kinds it is."""
    try:
        kind = json.loads(raw).get("type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        kind = None
    return UnitStatus.decode(raw) if kind == UnitStatus.kind else JobEvent.decode(raw)
