"""The backend's /metrics on the real job store (SQLite and PostgreSQL): who may read it and what it counts."""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend import accounts
from backend.app import create_app
from process_unit.metrics import UnitMetrics

INTERNAL = "metrics-internal-token"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(store, make_settings):
    settings = make_settings(database_url=store.url, internal_token=INTERNAL, admin_email="boss@lab.example",
                             admin_password="the admin's password", pools="default,gpu")
    return create_app(settings)


def add_job(store, state: str, pool: str = "default", **values) -> None:
    store.insert_job(id=uuid.uuid4().hex[:16], name="m", state=state, upload="u.zip", upload_sha256="0" * 64,
                     pool=pool, **values)


def scrape(app, token: str = INTERNAL) -> dict[tuple[str, tuple], float]:
    answer = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.data
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.data.decode()) for sample in family.samples}


def test_metrics_need_the_internal_token_or_an_admins_api_token(app, store):
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    user = accounts.create_user(store, "someone@lab.example", "a long enough password", "user")
    user_token = accounts.create_token(store, user, "scraper")["token"]
    assert client.get("/metrics", headers={"Authorization": f"Bearer {user_token}"}).status_code == 403
    admin = store.find_user("boss@lab.example")
    admin_token = accounts.create_token(store, admin, "prometheus")["token"]
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
    assert client.get("/metrics", headers={"X-Nias-Internal-Token": INTERNAL}).status_code == 200


def test_jobs_are_counted_by_state_and_pool_with_the_queue_depth_and_bytes(app, store):
    add_job(store, "queued", upload_size=100)
    add_job(store, "queued", "gpu", upload_size=50)
    add_job(store, "succeeded", upload_size=10, result_size=7000, run_seconds=2.0, env_seconds=0.3, env_cached=False)
    add_job(store, "failed", "gpu", upload_size=1, run_seconds=400.0, env_seconds=9.0, env_cached=True)
    found = scrape(app)
    assert found[("nias_jobs", (("pool", "default"), ("state", "queued")))] == 1
    assert found[("nias_jobs", (("pool", "gpu"), ("state", "failed")))] == 1
    assert found[("nias_jobs", (("pool", "gpu"), ("state", "running")))] == 0
    assert found[("nias_queue_depth", (("pool", "gpu"),))] == 1
    assert found[("nias_upload_bytes_total", ())] == 161
    assert found[("nias_result_bytes_total", ())] == 7000


def test_run_times_and_environment_builds_are_histograms(app, store):
    add_job(store, "succeeded", upload_size=1, run_seconds=2.0, env_seconds=0.3, env_cached=False)
    add_job(store, "failed", upload_size=1, run_seconds=400.0, env_seconds=9.0, env_cached=True)
    found = scrape(app)
    assert found[("nias_job_run_seconds_bucket", (("le", "5.0"),))] == 1
    assert found[("nias_job_run_seconds_bucket", (("le", "900.0"),))] == 2
    assert found[("nias_job_run_seconds_count", ())] == 2
    assert found[("nias_job_run_seconds_sum", ())] == pytest.approx(402.0)
    # a cached environment was not built, so only the first counts
    assert found[("nias_environment_build_seconds_count", ())] == 1
    assert found[("nias_environment_build_seconds_bucket", (("le", "0.5"),))] == 1


def test_units_are_counted_by_state_and_pool_and_a_silent_one_is_offline(app, store):
    now = time.time()
    store.record_unit("unit-a", "busy", None, now, pools=["default"])
    store.record_unit("unit-b", "idle", None, now, pools=["default", "gpu"])
    store.record_unit("unit-c", "idle", None, now - 3600, pools=["gpu"])
    found = scrape(app)
    assert found[("nias_units", (("pool", "default"), ("state", "busy")))] == 1
    assert found[("nias_units", (("pool", "gpu"), ("state", "idle")))] == 1
    assert found[("nias_units", (("pool", "gpu"), ("state", "offline")))] == 1
    assert ("nias_events_applied_total", ()) in found and ("nias_events_dead_lettered_total", ()) in found


def test_every_metric_the_grafana_dashboard_plots_is_one_nias_exposes(app):
    exposed = set()
    answer = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {INTERNAL}"}).data.decode()
    for family in text_string_to_metric_families(answer):
        exposed.update(sample.name for sample in family.samples)
    for family in UnitMetrics().registry.collect():
        exposed.update(sample.name for sample in family.samples)
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "nias-dashboard.json").read_text())
    plotted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bnias_[a-z_]+", target["expr"])}
    assert plotted and plotted <= exposed, plotted - exposed
