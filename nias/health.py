"""What every NIAS HTTP service answers at `GET /healthz`: who it is, and whether it can work.

The answer names its service (`backend`, `producer` or `unit`) and the service's name (a
processing unit's `NIAS_UNIT_NAME`), so whoever asks can tell the service it wants from another
one that answers on the same port. `instance` is the `NIAS_INSTANCE_ID` the service was started
with (`make up` gives each service a random one), so a launcher counts only its own child's
answer, not one from an older copy of the same service still holding the port. A processing
unit also says how it sandboxes its jobs.

One flat JSON object: `service`, `name`, `instance` (when set), `ok`, one boolean per check (`store`,
`data_dir`, ...), and for a unit `unit` (its name again, as consumers read it), `busy` and `sandbox`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from nias.errors import BadMessage

MAX_NAME = 100


class ServiceKind(str, Enum):
    BACKEND = "backend"
    PRODUCER = "producer"
    UNIT = "unit"


class SandboxMode(str, Enum):
    """How a processing unit runs its jobs."""

    BWRAP = "bwrap"  # in bubblewrap's namespaces: the job sees its project, its environment and a few system files
    NONE = "none"  # without a mount namespace: the job sees what its user may read on the host, and the network


_FIELDS = ("service", "name", "instance", "ok", "unit", "busy", "sandbox")


@dataclass(frozen=True)
class Health:
    service: ServiceKind
    name: str
    checks: dict[str, bool] = field(default_factory=dict)
    busy: str | None = None  # a unit's current job
    sandbox: SandboxMode | None = None  # a unit's only
    instance: str = ""  # NIAS_INSTANCE_ID: which start of the service answers

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    @property
    def status(self) -> int:
        return 200 if self.ok else 503

    def is_of(self, service: ServiceKind, name: str) -> bool:
        """Whether this answer came from that service of that name."""
        return self.service is service and self.name == name

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"service": self.service.value, "name": self.name,
                                **({"instance": self.instance} if self.instance else {}), "ok": self.ok, **self.checks}
        if self.service is ServiceKind.UNIT:
            body.update(unit=self.name, busy=self.busy, sandbox=self.sandbox.value if self.sandbox else None)
        return body

    @classmethod
    def from_dict(cls, body: Any) -> "Health":
        """The answer in `body`, checked; `BadMessage` for anything else (e.g. another program's answer)."""
        if not isinstance(body, dict):
            raise BadMessage("a health answer is a JSON object")
        try:
            service = ServiceKind(body.get("service"))
        except ValueError:
            raise BadMessage(f"a health answer names no NIAS service: {str(body.get('service'))[:100]!r}") from None
        name = body.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise BadMessage("a health answer names its service in `name`")
        checks = {key: value for key, value in body.items() if key not in _FIELDS}
        if not all(isinstance(value, bool) for value in checks.values()) or not isinstance(body.get("ok"), bool):
            raise BadMessage("a health answer's checks are true or false")
        instance = body.get("instance") or ""
        if not isinstance(instance, str) or len(instance) > MAX_NAME:
            raise BadMessage("a health answer's `instance` is a short string")
        busy = body.get("busy")
        if busy is not None and not isinstance(busy, str):
            raise BadMessage("a health answer's `busy` names a job")
        try:
            sandbox = SandboxMode(body["sandbox"]) if body.get("sandbox") is not None else None
        except ValueError:
            raise BadMessage(f"a health answer's sandbox is one of {', '.join(m.value for m in SandboxMode)}") from None
        return cls(service, name, checks, busy, sandbox, instance)
