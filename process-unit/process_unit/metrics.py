"""A unit's own Prometheus metrics: how long it was busy and what its jobs used.

The unit runs in one gunicorn worker with one runner, so plain in-process metrics are the unit's.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from process_unit.usage import Usage

CPU_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
MEMORY_BUCKETS = tuple(2 ** power * 1024 * 1024 for power in range(3, 16))  # 8 MiB .. 32 GiB


class UnitMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.busy_seconds = Counter("nias_unit_busy_seconds", "Seconds this unit held a job (fetch, environment, "
                                    "run and delivery)", registry=self.registry)
        self.attempts = Counter("nias_unit_attempts", "Attempts this unit ended, by outcome", ["state"],
                                registry=self.registry)
        self.job_cpu = Histogram("nias_unit_job_cpu_seconds", "CPU seconds (user + system) of each job's "
                                 "processes", buckets=CPU_BUCKETS, registry=self.registry)
        self.job_memory = Histogram("nias_unit_job_peak_memory_bytes", "The peak resident memory of each job's "
                                    "largest process", buckets=MEMORY_BUCKETS, registry=self.registry)

    def attempt_ended(self, state: str, busy_seconds: float) -> None:
        self.busy_seconds.inc(max(busy_seconds, 0.0))
        self.attempts.labels(state=state).inc()

    def job_used(self, usage: Usage | None) -> None:
        if usage is not None:
            self.job_cpu.observe(usage.cpu_seconds)
            self.job_memory.observe(usage.peak_memory_bytes)
