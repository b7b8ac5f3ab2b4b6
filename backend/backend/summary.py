"""The queue at a glance: jobs per state and what each processing unit is doing."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, jsonify

from nias.errors import JobNotFound
from nias.settings import DEFAULT_POOL
from nias.states import JobState

from backend import api_models as api
from backend.openapi import describe
from backend.auth import is_admin, owner_filter
from backend.jobs_api import iso_time
from backend.pools import OFFLINE_AFTER_S, describe_pools

bp = Blueprint("summary", __name__, url_prefix="/api")



def describe_units(rows: list[dict], now: float) -> list[dict]:
    return [
        {
            "name": row["name"],
            "state": "offline" if now - row["last_seen"] > OFFLINE_AFTER_S else row["state"],
            "job_id": row["job_id"],
            "last_seen": iso_time(row["last_seen"]),
            "sandbox": row.get("sandbox"),
            "pools": row.get("pools") or [DEFAULT_POOL],
            "host": row.get("host"),
            "cpus": row.get("cpus"),
            "memory_mb": row.get("memory_mb"),
            "gpus": row.get("gpus") or [],
            "python": row.get("python"),
            "executor": row.get("executor") or "local",
            "pause_refusal": row.get("pause_refusal"),  # why it cannot pause its jobs (a Slurm unit's account)
            # An admin's drain: "draining" while it finishes its job, "drained" once idle.
            "drain": (("draining" if row["state"] == "busy" else "drained") if row.get("draining") else None),
        }
        for row in rows
    ]


def sandbox_warning(units: list[dict]) -> str | None:
    """One sentence naming the online units that run jobs without a sandbox, or None."""
    bare = [unit["name"] for unit in units if unit["sandbox"] == "none" and unit["state"] != "offline"]
    if not bare:
        return None
    return (f"{', '.join(bare)} {'runs' if len(bare) == 1 else 'run'} jobs without a sandbox, so a job there "
            "can read every file on that host its user may read, see its processes and use its network.")


def _job_or_none(store, job_id: str) -> dict | None:
    try:
        return store.get_job(job_id)
    except JobNotFound:
        return None


def visible_units(store) -> list[dict]:
    """Every unit's state and its job's (a paused job keeps its unit); which job a unit holds only
    for the job's owner and for admins."""
    units = describe_units(store.list_units(), time.time())
    for unit in units:
        job = _job_or_none(store, unit["job_id"]) if unit["job_id"] else None
        unit["job_state"] = job["state"] if job else None
        if job is None or (not is_admin() and job["owner_id"] != g.user["id"]):
            unit["job_id"] = None
    return units


@bp.get("/summary")
@describe("The queue at a glance", {200: api.Summary, **api.REFUSED}, tag="server")
def get_summary():
    store = current_app.extensions["nias"].store
    counts = {state.value: 0 for state in JobState}
    counts.update(store.count_by_state(owner_filter()))
    units = visible_units(store)
    pools = describe_pools(current_app.extensions["nias"].settings, units, store.queued_by_pool(owner_filter()))
    return jsonify({"counts": counts, "units": units, "pools": pools, "sandbox_warning": sandbox_warning(units)})


@bp.get("/units")
@describe("The processing units", {200: api.UnitList, **api.REFUSED}, tag="server")
def get_units():
    return jsonify({"units": visible_units(current_app.extensions["nias"].store)})
