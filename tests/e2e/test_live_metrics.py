"""Prometheus metrics on the live stack: the backend's (jobs, events applied) and a unit's own."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.projects import zip_project


def samples(url: str, token: str) -> dict[tuple[str, tuple], float]:
    answer = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def test_a_finished_job_shows_in_the_backends_and_its_units_metrics(stack, tmp_path):
    internal = stack.env["NIAS_INTERNAL_TOKEN"]
    before = samples(stack.url, stack.admin_token)
    job = stack.client.wait(stack.client.submit(zip_project("hello", tmp_path / "hello.zip"))["id"])
    assert job["state"] == "succeeded"
    after = samples(stack.url, internal)
    succeeded = ("nias_jobs", (("pool", "default"), ("state", "succeeded")))
    assert after[succeeded] == before.get(succeeded, 0) + 1
    assert after[("nias_job_run_seconds_count", ())] >= before[("nias_job_run_seconds_count", ())] + 1
    assert after[("nias_events_applied_total", ())] > before[("nias_events_applied_total", ())]
    assert after[("nias_upload_bytes_total", ())] > before[("nias_upload_bytes_total", ())]
    assert sum(value for (name, labels), value in after.items() if name == "nias_units") == 2

    unit = next(index for index in (1, 2) if f"unit-{index}" == job["unit"])
    ran = samples(stack.unit_url(unit), internal)
    assert ran[("nias_unit_attempts_total", (("state", "succeeded"),))] >= 1
    assert ran[("nias_unit_job_peak_memory_bytes_count", ())] >= 1
    assert ran[("nias_unit_busy_seconds_total", ())] > 0


def test_metrics_refuse_anyone_without_the_internal_or_an_admins_token(stack):
    assert requests.get(f"{stack.url}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{stack.unit_url(1)}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{stack.unit_url(1)}/metrics", headers={"Authorization": f"Bearer {stack.admin_token}"},
                        timeout=10).status_code == 403
