"""A command's parameters: their declaration in command.toml, and the check of a job's value."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nias.errors import BadRequest, NiasError
from nias.params import PARAM_NAME

TYPES = ("int", "float", "str", "bool", "choice")
PARAMETER_KEYS = {"name", "type", "default", "required", "min", "max", "choices", "help"}
MAX_TEXT = 4_096  # a str parameter's value, a description


class BadDeclaration(NiasError):
    """Raised when a command.toml cannot be used; the command is listed as broken with the reason."""

    code = "bad_command"


def bad_param(name: str, message: str, **details: Any) -> BadRequest:
    return BadRequest(f"Parameter {name!r} {message}.", code="bad_param", param=name, **details)


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this parameter, or None."""
        if self.type == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.type == "str":
            if not isinstance(value, str):
                return "must be text"
            return f"must be at most {MAX_TEXT} characters" if len(value) > MAX_TEXT else None
        if self.type == "choice":
            return None if value in self.choices and type(value) in {type(c) for c in self.choices} else \
                f"must be one of {', '.join(map(str, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, int if self.type == "int" else (int, float)):
            return "must be a whole number" if self.type == "int" else "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if self.min is not None and value < self.min:
            return f"must be at least {self.min:g}"
        if self.max is not None and value > self.max:
            return f"must be at most {self.max:g}"
        return None

    def to_json(self) -> dict:
        body: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required, "help": self.help}
        if self.default is not None:
            body["default"] = self.default
        if self.min is not None:
            body["min"] = self.min
        if self.max is not None:
            body["max"] = self.max
        if self.choices:
            body["choices"] = list(self.choices)
        return body


def _bound(raw: dict, key: str, kind: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        raise BadDeclaration(f"parameter {raw.get('name')!r}: {key} must be a {'whole ' if kind == 'int' else ''}number")
    return value


def parse_parameter(raw: Any) -> Parameter:
    if not isinstance(raw, dict):
        raise BadDeclaration("each [[parameters]] entry must be a table")
    name, kind = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
        raise BadDeclaration(f"a parameter's name {name!r} is not a letter or _ then letters, digits and _.-")
    unknown = set(raw) - PARAMETER_KEYS
    if unknown:
        raise BadDeclaration(f"parameter {name!r} has unknown keys: {', '.join(sorted(unknown))}")
    if kind not in TYPES:
        raise BadDeclaration(f"parameter {name!r} has the type {kind!r}; use one of {', '.join(TYPES)}")
    choices = raw.get("choices", ())
    if kind == "choice" and (not isinstance(choices, list) or not choices):
        raise BadDeclaration(f"parameter {name!r} is a choice without a list of choices")
    if kind != "choice" and choices:
        raise BadDeclaration(f"parameter {name!r} has choices but is not of type choice")
    numeric = kind in ("int", "float")
    if not numeric and ("min" in raw or "max" in raw):
        raise BadDeclaration(f"parameter {name!r}: min and max apply to int and float only")
    required, text = raw.get("required", False), raw.get("help", "")
    if not isinstance(required, bool) or not isinstance(text, str):
        raise BadDeclaration(f"parameter {name!r}: required must be true or false and help text")
    parameter = Parameter(name, kind, raw.get("default"), required, _bound(raw, "min", kind), _bound(raw, "max", kind),
                          tuple(choices), text[:MAX_TEXT])
    if parameter.min is not None and parameter.max is not None and parameter.min > parameter.max:
        raise BadDeclaration(f"parameter {name!r} has min above max")
    if parameter.default is not None:
        problem = parameter.problem(parameter.default)
        if problem:
            raise BadDeclaration(f"parameter {name!r}'s default {problem}")
    return parameter
