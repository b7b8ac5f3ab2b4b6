"""Prometheus metrics of the backend.

Figures about jobs, units and bytes are read from the job store at scrape time (a collector), so
every backend process answers the same and nothing is lost at a restart or counted twice. Only
the events this process applied or dead-lettered are counted in memory: the recorder runs in the
backend's one gunicorn worker, so each backend process exposes its own (add them up by instance).
"""
from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from nias.settings import DEFAULT_POOL, Settings
from nias.states import JobState

from backend.pools import OFFLINE_AFTER_S
from backend.store import Store, jobs

# Seconds: code.py's run time and environment builds, from a blink to the longest allowed job.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
UNIT_STATES = ("idle", "busy", "offline")

EVENTS_APPLIED = Counter("nias_events_applied", "Job and unit events this backend process applied to the store",
                         registry=None)
EVENTS_DEAD_LETTERED = Counter("nias_events_dead_lettered",
                               "Events this backend process dead-lettered, with no hope of applying them",
                               registry=None)


class StoreCollector(Collector):
    """Jobs by state and pool, queue depth, durations, units and bytes, from the store at each scrape."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings

    def collect(self) -> Iterator:
        yield self._jobs_by_state()
        yield self._queue_depth()
        yield self._histogram("nias_job_run_seconds", "How long code.py ran, per finished job", jobs.c.run_seconds)
        yield self._histogram("nias_environment_build_seconds", "How long a job's environment took to build "
                              "(jobs whose environment was not cached)", jobs.c.env_seconds,
                              jobs.c.env_cached.is_(False))
        yield from self._bytes()
        yield self._units()

    def _jobs_by_state(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("nias_jobs", "Jobs in the store by state and pool", labels=["state", "pool"])
        found = {}
        with self.store.engine.connect() as conn:
            for state, pool, count in conn.execute(select(jobs.c.state, jobs.c.pool, func.count())
                                                   .group_by(jobs.c.state, jobs.c.pool)):
                found[(state, pool)] = count
        for pool in self._pools(pool for _state, pool in found):
            for state in JobState:
                family.add_metric([state.value, pool], found.get((state.value, pool), 0))
        return family

    def _queue_depth(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("nias_queue_depth", "Jobs queued and not yet running, per pool", labels=["pool"])
        queued = self.store.queued_by_pool()
        for pool in self._pools(queued):
            family.add_metric([pool], queued.get(pool, 0))
        return family

    def _pools(self, seen) -> list[str]:
        declared = list(self.settings.pool_names)
        return declared + sorted(set(seen) - set(declared))

    def _histogram(self, name: str, documentation: str, column, *where) -> HistogramMetricFamily:
        measured = [column.isnot(None), *where]
        counts = [func.coalesce(func.sum(case((column <= bound, 1), else_=0)), 0) for bound in DURATION_BUCKETS]
        with self.store.engine.connect() as conn:
            row = conn.execute(select(func.count(), func.coalesce(func.sum(column), 0.0), *counts)
                               .where(*measured)).one()
        total, seconds, below = int(row[0]), float(row[1]), [int(value) for value in row[2:]]
        buckets = [(str(float(bound)), count) for bound, count in zip(DURATION_BUCKETS, below)] + [("+Inf", total)]
        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], buckets, seconds)
        return family

    def _bytes(self) -> Iterator[CounterMetricFamily]:
        with self.store.engine.connect() as conn:
            uploads, results = conn.execute(select(func.coalesce(func.sum(jobs.c.upload_size), 0),
                                                   func.coalesce(func.sum(jobs.c.result_size), 0))).one()
        yield CounterMetricFamily("nias_upload_bytes", "Bytes of the uploads of the jobs in the store",
                                  value=int(uploads))
        yield CounterMetricFamily("nias_result_bytes", "Bytes of the results of the jobs in the store",
                                  value=int(results))

    def _units(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("nias_units", "Processing units by state and pool", labels=["state", "pool"])
        counts: dict[tuple[str, str], int] = {}
        now = time.time()
        for unit in self.store.list_units():
            state = "offline" if now - unit["last_seen"] > OFFLINE_AFTER_S else unit["state"]
            for pool in unit.get("pools") or [DEFAULT_POOL]:
                counts[(state, pool)] = counts.get((state, pool), 0) + 1
        for pool in self._pools(pool for _state, pool in counts):
            for state in UNIT_STATES:
                family.add_metric([state, pool], counts.get((state, pool), 0))
        return family


def backend_registry(store: Store, settings: Settings) -> CollectorRegistry:
    """What `/metrics` answers: the store's figures and this process's event counters."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, settings))
    registry.register(EVENTS_APPLIED)
    registry.register(EVENTS_DEAD_LETTERED)
    return registry
