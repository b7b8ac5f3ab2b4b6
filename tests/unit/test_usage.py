"""A finished job's CPU time and peak memory, from wait4 when its process is reaped."""
from __future__ import annotations

import sys
import time

from process_unit.metrics import UnitMetrics
from process_unit.usage import MeasuredPopen

# About 80 MiB held, and some CPU burnt, by a child of the measured process (as bwrap's child is).
HUNGRY = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
          "'b = bytearray(80 * 1024 * 1024); n = sum(range(3_000_000))'], check=True)")


def test_wait_keeps_the_cpu_time_and_peak_memory_of_the_child_and_what_it_waited_for():
    process = MeasuredPopen([sys.executable, "-c", HUNGRY])
    assert process.wait(timeout=60) == 0
    assert process.usage is not None
    assert process.usage.peak_memory_bytes >= 80 * 1024 * 1024
    assert process.usage.cpu_seconds > 0


def test_a_child_reaped_by_poll_is_measured_too():
    process = MeasuredPopen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.returncode == 0 and process.usage is not None


def test_unit_metrics_count_busy_seconds_outcomes_and_job_usage():
    metrics = UnitMetrics()
    process = MeasuredPopen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    metrics.job_used(process.usage)
    metrics.job_used(None)  # a child reaped elsewhere is simply not observed
    metrics.attempt_ended("succeeded", 2.5)
    value = metrics.registry.get_sample_value
    assert value("nias_unit_busy_seconds_total") == 2.5
    assert value("nias_unit_attempts_total", {"state": "succeeded"}) == 1
    assert value("nias_unit_job_cpu_seconds_count") == 1
    assert value("nias_unit_job_peak_memory_bytes_count") == 1
