"""`GET /healthz` of the backend and of a processing unit: 200 only when the service can do its work,
and always saying which service, of which name, answers (nias/health.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from nias.errors import BadMessage
from nias.health import Health, SandboxMode, ServiceKind
from nias.settings import Settings


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder nobody can write to: the mode stops other users, the immutable attribute stops root."""
    folder.chmod(0o500)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's private tmp (0700): a unit started as root checks its job user can pass through."""
    folder = Path(tempfile.mkdtemp(prefix="nias-health-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- the backend ---------------------------------------------------------------------------


@pytest.fixture
def backend(data_dir):
    from backend.app import create_app

    store_dir = data_dir / "store"
    store_dir.mkdir()
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{store_dir / 'nias.db'}",
                        internal_token="health-test-token", secret_key="health-test-secret")
    app = create_app(settings)
    yield app, settings, store_dir
    app.extensions["nias"].store.engine.dispose()


def _close_store_connections(app) -> None:
    """Drop the pooled connections, as a restarted database or a remounted volume does."""
    app.extensions["nias"].store.engine.dispose()


def test_the_backend_is_healthy_when_its_store_answers_and_its_data_dir_is_writable(backend):
    app, _, _ = backend
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"service": "backend", "name": "backend", "ok": True, "store": True, "data_dir": True}


def test_the_backend_answers_503_when_its_job_store_cannot_be_reached(backend):
    app, _, store_dir = backend
    shutil.rmtree(store_dir)
    _close_store_connections(app)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["store"] is False and response.json["ok"] is False


def test_the_backend_answers_503_when_its_job_store_has_lost_its_tables(backend):
    app, _, store_dir = backend
    (store_dir / "nias.db").unlink()  # SQLite makes a new, empty file on the next connection
    _close_store_connections(app)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["store"] is False


@pytest.mark.parametrize("folder", ["uploads_dir", "jobs_dir"])
def test_the_backend_answers_503_when_a_folder_of_its_data_dir_is_not_writable(backend, folder):
    app, settings, _ = backend
    with read_only(getattr(settings, folder)):
        response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["data_dir"] is False and response.json["store"] is True


# --- a processing unit ---------------------------------------------------------------------


@pytest.fixture
def unit(data_dir):
    from process_unit.app import create_app

    settings = Settings(data_dir=data_dir, internal_token="health-test-token", unit_name="unit-health",
                        sandbox="off")
    return create_app(settings), settings


def test_a_unit_is_healthy_when_it_can_write_its_work_dir_results_and_environments(unit):
    app, _ = unit
    response = app.test_client().get("/healthz")
    assert response.status_code == 200, response.json
    assert response.json["ok"] is True and response.json["busy"] is None


def test_a_unit_names_itself_and_its_sandbox_in_its_health_answer(unit):
    app, _ = unit
    health = Health.from_dict(app.test_client().get("/healthz").json)
    assert health.is_of(ServiceKind.UNIT, "unit-health")
    assert not health.is_of(ServiceKind.UNIT, "unit-2") and not health.is_of(ServiceKind.BACKEND, "unit-health")
    assert health.sandbox is SandboxMode.NONE  # NIAS_SANDBOX=off


def test_a_unit_with_bubblewrap_reports_its_sandbox_as_bwrap(data_dir):
    from process_unit.app import create_app

    settings = Settings(data_dir=data_dir, internal_token="health-test-token", unit_name="unit-bwrap",
                        sandbox="bwrap")
    answer = create_app(settings).test_client().get("/healthz").json
    assert answer["sandbox"] == "bwrap" and answer["unit"] == "unit-bwrap"


def test_a_unit_without_bubblewrap_under_the_auto_setting_reports_no_sandbox(data_dir, monkeypatch):
    from process_unit import sandbox
    from process_unit.app import create_app

    which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else which(name))
    settings = Settings(data_dir=data_dir, internal_token="health-test-token", unit_name="unit-auto",
                        sandbox="auto")
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 200 and response.json["sandbox"] == "none"


def test_the_backend_answers_as_the_backend(backend):
    app, _, _ = backend
    assert Health.from_dict(app.test_client().get("/healthz").json).is_of(ServiceKind.BACKEND, "backend")


@pytest.mark.parametrize("body", [
    {"ok": True},  # an answer from before services named themselves, or another program's
    {"service": "database", "name": "x", "ok": True},
    {"service": "unit", "ok": True},
    {"service": "unit", "name": "unit-1", "ok": "yes"},
    {"service": "unit", "name": "unit-1", "ok": True, "sandbox": "chroot"},
    ["service", "unit"],
], ids=["unnamed", "unknown-service", "no-name", "ok-not-bool", "unknown-sandbox", "not-an-object"])
def test_an_answer_that_does_not_name_a_nias_service_is_refused(body):
    with pytest.raises(BadMessage):
        Health.from_dict(body)


@pytest.mark.parametrize("folder, check", [("unit_work_dir", "work_dir"), ("environments_dir", "environments")])
def test_a_unit_answers_503_when_a_folder_it_writes_is_not_writable(unit, folder, check):
    app, settings = unit
    with read_only(getattr(settings, folder)):
        response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json[check] is False and response.json["ok"] is False


# --- the sandbox in a unit's presence message (nias/messages.py UnitStatus) --------------------


def test_a_units_presence_message_carries_its_sandbox_mode_and_decodes_strictly():
    from nias.messages import UnitStatus

    sent = UnitStatus(unit="unit-1", state="idle", sandbox=SandboxMode.NONE)
    assert UnitStatus.decode(sent.encode()).sandbox is SandboxMode.NONE
    assert UnitStatus.decode(UnitStatus(unit="unit-1", state="idle").encode()).sandbox is None
    with pytest.raises(BadMessage, match="sandbox"):
        UnitStatus.decode(sent.encode().replace(b'"none"', b'"chroot"'))
