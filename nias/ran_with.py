"""What a job ran with: the Python version, the exact packages of its environment, its unit and host.

The unit reads it from the environment itself and sends it with the run's outcome (the `ran_with`
detail of a finished event); the store keeps it and the job page tables it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_PACKAGES = 1000
PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}")
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")


@dataclass(frozen=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True)
class RanWith:
    python: str | None
    packages: tuple[Package, ...]
    unit: str | None = None
    host: str | None = None

    def to_json(self) -> dict:
        return {"python": self.python, "unit": self.unit, "host": self.host,
                "packages": [[package.name, package.version] for package in self.packages]}

    @classmethod
    def from_json(cls, value: Any) -> "RanWith":
        problem = check_ran_with(value)
        if problem:
            raise ValueError(f"ran_with {problem}")
        return cls(value.get("python"), tuple(Package(*pair) for pair in value.get("packages") or []),
                   value.get("unit"), value.get("host"))


def _matches(pattern: re.Pattern, value: Any) -> bool:
    return value is None or (isinstance(value, str) and pattern.fullmatch(value) is not None)


def check_ran_with(value: Any) -> str | None:
    """None when `value` is a well-formed `RanWith.to_json()`, else what is wrong with it."""
    if not isinstance(value, dict) or set(value) - {"python", "unit", "host", "packages"}:
        return "must be an object of python, unit, host and packages"
    if not all(_matches(VERSION, value.get(key)) for key in ("python", "unit")) or not _matches(HOST, value.get("host")):
        return "has a python version, unit or host that is not a plain name"
    packages = value.get("packages") or []
    if not isinstance(packages, list) or len(packages) > MAX_PACKAGES:
        return f"must list at most {MAX_PACKAGES} packages"
    for pair in packages:
        if not (isinstance(pair, list) and len(pair) == 2 and _matches(PACKAGE, pair[0]) and _matches(VERSION, pair[1])
                and None not in pair):
            return "must list packages as [name, version] pairs"
    return None
