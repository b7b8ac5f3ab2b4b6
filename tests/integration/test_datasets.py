"""Data sets through the backend's app on the real job store (SQLite and PostgreSQL): stored once per
digest, named by their owner, listed with their shares, deleted, and counted in the storage quota."""
from __future__ import annotations

import hashlib
import io
import time
import zipfile

import pytest

ADMIN = ("boss@lab.example", "the admin's password")
PASSWORD = "a long enough password"


@pytest.fixture
def app(store, make_settings):
    from backend.app import create_app

    settings = make_settings(database_url=store.url, internal_token="t", admin_email=ADMIN[0],
                             admin_password=ADMIN[1], max_storage_mb_per_user=1)
    return create_app(settings)


class Client:
    def __init__(self, app, email: str, password: str):
        self.client = app.test_client()
        answer = self.client.post("/api/auth/login", json={"email": email, "password": password})
        assert answer.status_code == 200, answer.get_json()
        self.csrf = answer.get_json()["csrf_token"]
        self.email = email

    def upload(self, name: str | None, data: bytes | None, filename: str = "values.bin"):
        form = {} if name is None else {"name": name}
        if data is not None:
            form["file"] = (io.BytesIO(data), filename)
        return self.client.post("/api/datasets", data=form, content_type="multipart/form-data",
                                headers={"X-CSRF-Token": self.csrf})

    def send(self, method: str, path: str, json: dict | None = None):
        return self.client.open(path, method=method, json=json, headers={"X-CSRF-Token": self.csrf})


def new_user(app, admin: Client) -> Client:
    email = f"user{time.monotonic_ns()}@lab.example"
    created = admin.send("POST", "/api/users", {"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.get_json()
    return Client(app, email, PASSWORD)


def stored_files(app) -> list:
    folder = app.extensions["nias"].settings.data_dir / "datasets"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_data_set_is_stored_once_per_digest_and_listed_with_its_size_and_digest(app):
    admin = Client(app, *ADMIN)
    data = b"0123456789" * 1000
    first = admin.upload("eeg-session-3", data)
    assert first.status_code == 201, first.get_json()
    second = admin.upload("eeg.copy_2", data)
    assert second.status_code == 201, second.get_json()
    assert first.get_json()["sha256"] == hashlib.sha256(data).hexdigest() == second.get_json()["sha256"]
    assert len(stored_files(app)) == 1 and stored_files(app)[0].read_bytes() == data
    listed = admin.send("GET", "/api/datasets").get_json()["datasets"]
    assert [(row["name"], row["size"], row["owner"], row["jobs_using"]) for row in listed] == [
        ("eeg-session-3", len(data), ADMIN[0], 0), ("eeg.copy_2", len(data), ADMIN[0], 0)]


def test_a_name_already_taken_by_the_owner_is_refused_with_409(app):
    admin = Client(app, *ADMIN)
    assert admin.upload("eeg", b"one").status_code == 201
    again = admin.upload("eeg", b"two")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "dataset_exists"


@pytest.mark.parametrize("name", ["", "EEG", "a/b", "../up", "-dash-first", "x" * 101, "sp ace"])
def test_a_bad_name_is_refused_with_400_json(app, name):
    refused = Client(app, *ADMIN).upload(name, b"data")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_dataset_name"
    assert stored_files(app) == []


def test_a_missing_file_field_is_refused_with_400_json(app):
    refused = Client(app, *ADMIN).upload("eeg", None)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "missing_file"


def test_a_zip_data_set_follows_the_zip_rules_but_needs_no_code_py(app):
    admin = Client(app, *ADMIN)
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("trial/1.csv", "a,b\n1,2\n")
    accepted = admin.upload("trials", good.getvalue(), "trials.zip")
    assert accepted.status_code == 201 and accepted.get_json()["is_zip"] is True
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("../escape.txt", "x")
    refused = admin.upload("escape", bad.getvalue(), "escape.zip")
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "unsafe_path"


def test_data_sets_count_in_the_storage_quota(app):
    admin = Client(app, *ADMIN)
    assert admin.upload("big", b"\0" * (1024 * 1024 + 1)).status_code == 201
    refused = admin.upload("more", b"x")
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "quota_storage"


def test_a_data_set_is_shared_by_email_and_an_unknown_email_is_404(app):
    admin = Client(app, *ADMIN)
    other = new_user(app, admin)
    assert admin.upload("eeg", b"signal").status_code == 201
    assert other.send("GET", "/api/datasets").get_json()["datasets"] == []
    unknown = admin.send("POST", "/api/datasets/eeg/share", {"email": "nobody@lab.example"})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "user_not_found"
    shared = admin.send("POST", "/api/datasets/eeg/share", {"email": other.email})
    assert shared.status_code == 200 and shared.get_json()["shared_with"] == [other.email]
    seen = other.send("GET", "/api/datasets").get_json()["datasets"]
    assert [(row["name"], row["owner"], row["shared_with"]) for row in seen] == [("eeg", ADMIN[0], [])]
    assert other.send("DELETE", "/api/datasets/eeg").status_code == 404  # only its owner deletes it


def test_a_deleted_data_set_leaves_its_file_while_another_names_the_digest(app):
    admin = Client(app, *ADMIN)
    assert admin.upload("one", b"same").status_code == 201
    assert admin.upload("two", b"same").status_code == 201
    assert admin.send("DELETE", "/api/datasets/one").status_code == 204
    assert len(stored_files(app)) == 1
    assert admin.send("DELETE", "/api/datasets/two").status_code == 204
    assert stored_files(app) == []
    missing = admin.send("DELETE", "/api/datasets/two")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "dataset_not_found"


@pytest.fixture
def quiet_dispatch(app, monkeypatch):
    """Queued jobs stay queued: the messages the backend would send are kept for the test to read."""
    sent = []
    monkeypatch.setattr(app.extensions["nias"].dispatcher, "publish_job", sent.append)
    return sent


def project_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("code.py", "print('hi')\n")
    return buffer.getvalue()


def submit(client: Client, datasets: str | None):
    form = {"file": (io.BytesIO(project_zip()), "p.zip")}
    if datasets is not None:
        form["datasets"] = datasets
    return client.client.post("/api/jobs", data=form, content_type="multipart/form-data",
                              headers={"X-CSRF-Token": client.csrf})


def test_a_job_records_the_data_sets_it_names_and_its_message_carries_them(app, quiet_dispatch):
    from backend.dispatcher import message_for

    admin = Client(app, *ADMIN)
    stored = admin.upload("eeg", b"signal").get_json()
    job = submit(admin, '["eeg"]')
    assert job.status_code == 201, job.get_json()
    assert job.get_json()["datasets"] == [{"name": "eeg", "owner": ADMIN[0], "sha256": stored["sha256"], "size": 6,
                                           "filename": "values.bin"}]
    assert message_for(quiet_dispatch[0]).datasets == [{"name": "eeg", "sha256": stored["sha256"], "size": 6,
                                                        "filename": "values.bin"}]
    assert admin.send("GET", "/api/datasets").get_json()["datasets"][0]["jobs_using"] == 1
    assert submit(admin, None).get_json()["datasets"] == []


def test_another_users_data_set_is_refused_with_400_and_nothing_queued_until_shared(app, quiet_dispatch):
    admin = Client(app, *ADMIN)
    other = new_user(app, admin)
    assert admin.upload("eeg", b"signal").status_code == 201
    refused = submit(other, '["eeg"]')
    assert refused.status_code == 400 and refused.get_json()["error"]["dataset"] == "eeg"
    assert other.send("GET", "/api/jobs").get_json()["total"] == 0 and quiet_dispatch == []
    assert admin.send("POST", "/api/datasets/eeg/share", {"email": other.email}).status_code == 200
    assert submit(other, '["eeg"]').status_code == 201
    assert submit(other, f'["{ADMIN[0]}/eeg"]').status_code == 201


def test_a_data_set_named_by_a_waiting_job_is_not_deleted_until_the_job_ends(app, quiet_dispatch):
    admin = Client(app, *ADMIN)
    assert admin.upload("eeg", b"signal").status_code == 201
    job_id = submit(admin, '["eeg"]').get_json()["id"]
    refused = admin.send("DELETE", "/api/datasets/eeg")
    assert refused.status_code == 409 and refused.get_json()["error"]["jobs"] == [job_id]
    assert admin.send("PUT", f"/api/jobs/{job_id}/state", {"state": "cancelled"}).status_code == 200
    assert admin.send("DELETE", "/api/datasets/eeg").status_code == 204


def test_the_internal_endpoint_serves_a_unit_only_the_data_sets_its_claimed_job_names(app, quiet_dispatch):
    from nias.internal import ClaimRequest, dataset_path

    admin = Client(app, *ADMIN)
    named = admin.upload("eeg", b"signal").get_json()["sha256"]
    other = admin.upload("private", b"someone's notes").get_json()["sha256"]
    job = submit(admin, '["eeg"]').get_json()
    unit = app.test_client()
    headers = {"X-Nias-Internal-Token": "t", "X-Nias-Unit": "unit-1"}
    claimed = unit.post(f"/internal/jobs/{job['id']}/claim", headers=headers,
                        data=ClaimRequest(dispatch=1, unit="unit-1").encode())
    assert claimed.status_code == 200, claimed.get_data()
    attempt = claimed.get_json()["attempt"]
    served = unit.get(dataset_path(job["id"], named), query_string={"attempt": attempt}, headers=headers)
    assert served.status_code == 200 and served.get_data() == b"signal"
    resumed = unit.get(dataset_path(job["id"], named), query_string={"attempt": attempt},
                       headers={**headers, "Range": "bytes=3-"})
    assert resumed.status_code == 206 and resumed.get_data() == b"nal"
    refused = unit.get(dataset_path(job["id"], other), query_string={"attempt": attempt}, headers=headers)
    assert refused.status_code == 404
    no_token = unit.get(dataset_path(job["id"], named), query_string={"attempt": attempt},
                        headers={"X-Nias-Unit": "unit-1"})
    assert no_token.status_code in (401, 403)
