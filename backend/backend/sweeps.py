"""Sweeps: one submit, many jobs, each with its own parameters (a grid or an explicit list)."""
from __future__ import annotations

import itertools
import json
import math
from typing import Any

from nias.errors import BadRequest, NiasError
from nias.params import MAX_PARAMS_BYTES, PARAM_NAME, params_problem

MAX_SWEEP_BYTES = 4 * MAX_PARAMS_BYTES  # the sweep as sent, before it is expanded


def sweep_too_large(count: int, most: int) -> NiasError:
    return BadRequest(f"The sweep makes {count} jobs; at most {most} are allowed in one sweep (NIAS_MAX_SWEEP_JOBS).",
                      code="sweep_too_large", limit=most)


def _grid_points(grid: dict[str, Any], most: int) -> list[dict[str, Any]]:
    for name, values in grid.items():
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            raise BadRequest(f"The sweep names {str(name)[:70]!r}, which is not a parameter name.", code="bad_sweep")
        if not isinstance(values, list) or not values:
            raise BadRequest(f"The sweep's {name!r} must be a non-empty list of values.", code="bad_sweep",
                             param=name)
    count = math.prod(len(values) for values in grid.values())
    if count > most:
        raise sweep_too_large(count, most)
    names = list(grid)
    return [dict(zip(names, combination)) for combination in itertools.product(*grid.values())]


def _list_points(points: list[Any], most: int) -> list[dict[str, Any]]:
    if len(points) > most:
        raise sweep_too_large(len(points), most)
    for index, point in enumerate(points):
        if not isinstance(point, dict):
            raise BadRequest(f"The sweep's entry {index + 1} must be an object of parameters.", code="bad_sweep")
    return [dict(point) for point in points]


def expand_sweep(sweep: Any, params: dict[str, Any], most: int) -> list[dict[str, Any]]:
    """Every job's parameters: the product of a grid `{"a": [1, 2], "b": ["x"]}` or each entry of a
    list `[{"a": 1}, {"a": 2, "b": "y"}]`, merged over the fixed `params`."""
    if len(json.dumps(sweep, default=str)) > MAX_SWEEP_BYTES:
        raise BadRequest(f"The sweep is larger than {MAX_SWEEP_BYTES // 1024} KiB.", code="bad_sweep")
    if isinstance(sweep, dict) and sweep:
        points = _grid_points(sweep, most)
    elif isinstance(sweep, list) and sweep:
        points = _list_points(sweep, most)
    else:
        raise BadRequest("sweep must be a non-empty object of lists (a grid) or a non-empty list of objects.",
                         code="bad_sweep")
    merged = [{**params, **point} for point in points]
    for index, job_params in enumerate(merged):
        problem = params_problem(job_params)
        if problem:
            raise BadRequest(f"The parameters of the sweep's job {index + 1} {problem}.", code="bad_params")
    return merged


def parse_json_field(raw: str | None, field: str) -> Any:
    """A form field holding JSON (`params`, `sweep`); None when absent or empty."""
    if raw is None or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest(f"{field} must be JSON, e.g. {{\"alpha\": 0.5}}.", code=f"bad_{field}", field=field) from None


def checked_params(params: Any) -> dict[str, Any]:
    """The fixed parameters of a submit: absent means none."""
    if params is None:
        return {}
    problem = params_problem(params)
    if problem:
        raise BadRequest(f"params {problem}.", code="bad_params")
    return params


def point_label(params: dict[str, Any], varied: list[str]) -> str:
    """A job's folder name in a sweep's combined download: its varied parameters, e.g. alpha=0.1_mode=fast."""
    parts = []
    for name in varied or sorted(params):
        value = params.get(name)
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{name}={text}")
    label = "_".join(parts) or "job"
    safe = "".join(ch if ch.isalnum() or ch in "=._,-+" else "-" for ch in label)
    return safe[:120]


def varied_names(sweep: Any) -> list[str]:
    """The parameters a sweep varies, in the order it names them."""
    if isinstance(sweep, dict):
        return list(sweep)
    names: list[str] = []
    for point in sweep or []:
        for name in point:
            if name not in names:
                names.append(name)
    return names
