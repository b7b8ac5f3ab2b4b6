"""A sweep as the API and its page show it: counts by state, its jobs with their parameters and
the numbers each wrote to output/metrics.json."""
from __future__ import annotations

import json
import math
import threading
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from nias.job_files import JobFiles
from nias.settings import Settings
from nias.states import JobState

METRICS_FILE = "metrics.json"  # output/metrics.json, at the top of the result zip
MAX_METRICS_BYTES = 64 * 1024
MAX_METRICS = 50


def current_jobs(jobs: list[dict]) -> list[dict]:
    """The sweep's jobs as they stand: a job re-run within the sweep is shown by its re-run."""
    replaced = {job["rerun_of"] for job in jobs if job["rerun_of"]}
    return [job for job in jobs if job["id"] not in replaced]


def read_metrics(result: Path) -> dict[str, float]:
    """The flat numbers of a result's metrics.json; anything else in it is left out."""
    try:
        with zipfile.ZipFile(result) as archive:
            info = archive.getinfo(METRICS_FILE)
            if info.file_size > MAX_METRICS_BYTES:
                return {}
            body = json.loads(archive.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RecursionError):
        return {}
    if not isinstance(body, dict):
        return {}
    numbers = {str(name)[:64]: value for name, value in body.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
    return dict(list(numbers.items())[:MAX_METRICS])


class MetricsCache:
    """Metrics by result file and its mtime: a result is read once, however often the page asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, dict]] = {}

    def get(self, result: Path) -> dict[str, float]:
        try:
            stamp = result.stat().st_mtime_ns
        except OSError:
            return {}
        key = str(result)
        with self._lock:
            cached = self._seen.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
        metrics = read_metrics(result)
        with self._lock:
            if len(self._seen) > 20_000:
                self._seen.clear()
            self._seen[key] = (stamp, metrics)
        return metrics


metrics_cache = MetricsCache()


def job_metrics(settings: Settings, job: dict) -> dict[str, float]:
    if job["state"] != JobState.SUCCEEDED.value or job["expired_at"] or not job["attempt"]:
        return {}
    return metrics_cache.get(JobFiles(settings.jobs_dir, job["id"]).run(job["attempt"]).result)


def sweep_to_json(sweep: dict, jobs: list[dict], job_json: Callable[[dict], dict],
                  settings: Settings | None = None) -> dict:
    shown = current_jobs(jobs)
    counts = {state.value: 0 for state in JobState}
    rows = []
    metric_names: list[str] = []
    for job in shown:
        counts[job["state"]] += 1
        row = job_json(job)
        row["metrics"] = job_metrics(settings, job) if settings else {}
        metric_names += [name for name in row["metrics"] if name not in metric_names]
        rows.append(row)
    spec = sweep["sweep"] or {}
    return {
        "id": sweep["id"],
        "name": sweep["name"],
        "owner": sweep["owner_id"],
        "command": sweep["command"],
        "created_at": datetime.fromtimestamp(sweep["created_at"], timezone.utc).isoformat(timespec="milliseconds"),
        "params": sweep["params"] or {},
        "sweep": spec.get("spec"),
        "varied": spec.get("varied") or [],
        "metric_names": metric_names,
        "total": len(shown),
        "counts": counts,
        "jobs": rows,
        "links": {"self": f"/api/sweeps/{sweep['id']}", "results": f"/api/sweeps/{sweep['id']}/results",
                  "page": f"/sweep.html?id={sweep['id']}"},
    }
