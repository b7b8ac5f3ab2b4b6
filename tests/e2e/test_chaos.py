"""A small chaos run in every test run: 30 jobs on three local units and one on a host that
shares nothing with the stack, while a local unit, a consumer, RabbitMQ, the backend and the
remote unit (with its consumer) are each killed once. No job may be lost or run to completion twice (counted from each
job's own evidence as well as the units' logs), and every result must be its own job's."""
from __future__ import annotations

from tests.support.chaos import run_chaos


def test_thirty_jobs_survive_one_kill_of_each_kind_with_none_lost_or_run_twice(tmp_path):
    report = run_chaos(tmp_path, jobs=30, units=3, plan=["unit", "remote", "consumer", "rabbitmq", "backend"],
                       spread_s=16, timeout_s=300, remote_units=1)
    assert len(report.actions) == 5 and "remote:remote-1" in report.actions
    assert report.lost == 0, report.summary()
    assert report.duplicated == 0, report.summary()
    assert report.mismatched == 0, report.summary()
    assert report.succeeded == 30, report.summary()
