"""A job's parameters: a bounded JSON object that code.py reads from params.json.

Both ends use these: the backend checks what a user sends, the job message decodes it strictly,
the unit writes it into the project folder, and the CLI parses `--param name=value`.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_PARAMS_BYTES = 16 * 1024  # the whole object, encoded
MAX_PARAMS = 100
MAX_DEPTH = 4  # lists and objects inside a value
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
PARAMS_FILE = "params.json"  # in the job's project folder; NIAS_PARAMS_FILE names it too


def encode_params(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _value_problem(value: Any, depth: int) -> str | None:
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if depth >= MAX_DEPTH:
        return f"nests lists or objects more than {MAX_DEPTH} deep"
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return "has an object with keys that are not text"
        items = list(value.values())
    else:
        return "is not a JSON value"
    for item in items:
        problem = _value_problem(item, depth + 1)
        if problem:
            return problem
    return None


def params_problem(params: Any) -> str | None:
    """What is wrong with `params` as a job's parameters, or None: an object of at most 100 named
    JSON values, 16 KiB encoded."""
    if not isinstance(params, dict):
        return "must be a JSON object"
    if len(params) > MAX_PARAMS:
        return f"may hold at most {MAX_PARAMS} parameters"
    for name, value in params.items():
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            return (f"has the name {str(name)[:70]!r}: a parameter's name is a letter or _ then letters, "
                    "digits and _.- (at most 64)")
        problem = _value_problem(value, 0)
        if problem:
            return f"parameter {name!r} {problem}"
    if len(encode_params(params).encode()) > MAX_PARAMS_BYTES:
        return f"is larger than {MAX_PARAMS_BYTES // 1024} KiB encoded"
    return None


def parse_value(text: str) -> Any:
    """A value typed on a command line: JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_sweep_values(raw: str) -> list[Any]:
    """`v1,v2,...` or a JSON list into the values a sweep takes a parameter through."""
    value = parse_value(raw)
    if isinstance(value, list):
        return value
    return [parse_value(part.strip()) for part in raw.split(",")]
