"""Pools: the groups of units a job may ask for (the GPU box, the cluster). Each has its own queue.

The admin declares the pools that exist (NIAS_POOLS); each unit says which it serves
(NIAS_UNIT_POOLS) in its announcements. A job for a declared pool that no live unit serves
stays queued and says what it waits for.
"""
from __future__ import annotations

import time

from nias.errors import UnknownPool
from nias.messages import PRESENCE_S
from nias.settings import DEFAULT_POOL, Settings
from nias.states import JobState


OFFLINE_AFTER_S = 3 * PRESENCE_S  # three missed announcements mean a unit is offline


def live_pools(store) -> set[str]:
    """The pools that at least one online unit serves."""
    now = time.time()
    return {pool for unit in store.list_units() if now - unit["last_seen"] <= OFFLINE_AFTER_S
            for pool in (unit.get("pools") or [DEFAULT_POOL])}


def choose_pool(raw: str | None, settings: Settings) -> str:
    """The pool a submit names (the default pool when it names none); UnknownPool if undeclared."""
    pool = (raw or "").strip() or DEFAULT_POOL
    if pool not in settings.pool_names:
        raise UnknownPool(f"There is no pool {pool[:40]!r}; this server's pools are "
                          f"{', '.join(settings.pool_names)}.", pools=list(settings.pool_names))
    return pool


def serving_units(units: list[dict], pool: str) -> list[dict]:
    """The online units that take jobs of `pool` (units as summary.describe_units gives them)."""
    return [unit for unit in units if unit["state"] != "offline" and pool in (unit.get("pools") or [DEFAULT_POOL])]


def waiting_for(job: dict, served: set[str]) -> str | None:
    """What a queued job waits for, when it is not merely its turn: a unit in its pool."""
    if job["state"] != JobState.QUEUED.value or job["pool"] in served:
        return None
    return f"waiting for a unit in pool {job['pool']}"


def describe_pools(settings: Settings, units: list[dict], queued: dict[str, int]) -> list[dict]:
    """Each declared pool with its units and queued jobs; a pool only units name is listed too."""
    named = list(settings.pool_names)
    for unit in units:
        named += [pool for pool in unit.get("pools") or [] if pool not in named]
    return [{"name": pool, "declared": pool in settings.pool_names, "queued": queued.get(pool, 0),
             "units": [unit["name"] for unit in units if pool in (unit.get("pools") or [DEFAULT_POOL])],
             "online": len(serving_units(units, pool))}
            for pool in named]
