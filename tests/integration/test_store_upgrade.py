"""A job store made by an older NIAS gains the columns added since, on SQLite and on PostgreSQL."""
from __future__ import annotations

import time
import uuid

from sqlalchemy import inspect, text


def new_job(store, **values) -> dict:
    job_id = uuid.uuid4().hex[:16]
    return store.insert_job(id=job_id, name="old run", state="queued", upload=f"jobs/{job_id}/upload.zip",
                            upload_sha256="0" * 64, upload_size=1234, queued_at=time.time(), **values)


def drop_columns(store, *names: str) -> None:
    with store.engine.begin() as conn:
        for name in names:
            conn.execute(text(f"ALTER TABLE jobs DROP COLUMN {name}"))


def test_opening_a_store_without_the_newer_columns_adds_them_and_keeps_the_old_rows(store):
    old = new_job(store)
    drop_columns(store, "limits", "paused_seconds")  # one nullable column, one NOT NULL with a default
    store.create_schema()
    assert {"limits", "paused_seconds"} <= {column["name"] for column in inspect(store.engine).get_columns("jobs")}
    kept = store.get_job(old["id"])
    assert kept["limits"] is None and kept["paused_seconds"] == 0.0 and kept["name"] == "old run"
    asked = new_job(store, limits={"memory_mb": 64})
    assert store.get_job(asked["id"])["limits"] == {"memory_mb": 64}


def test_opening_an_up_to_date_store_again_changes_nothing(store):
    job = new_job(store, limits={"cpu_s": 5})
    store.create_schema()
    assert store.get_job(job["id"]) == job
