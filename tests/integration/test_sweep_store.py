"""A sweep in the job store: its jobs go in together, read back in order, and share one upload's storage."""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy.exc import IntegrityError


def job_row(sweep_id: str, index: int, *, job_id: str | None = None) -> dict:
    now = time.time()
    return dict(id=job_id or uuid.uuid4().hex[:16], name="grid", state="queued", priority=0,
                upload=f"jobs/{index}/upload.zip", upload_sha256="0" * 64, upload_size=1000, attempt=0, dispatch=1,
                published=0, queue_priority=0, queued_at=now, created_at=now + index * 1e-6, owner_id="owner-1",
                params={"alpha": index}, sweep_id=sweep_id, upload_shared=1 if index else None)


def sweep_row(sweep_id: str, count: int) -> dict:
    return dict(id=sweep_id, name="grid", owner_id="owner-1", created_at=time.time(), params={},
                sweep={"varied": ["alpha"], "spec": {"alpha": list(range(count))}}, job_count=count)


def test_a_sweeps_jobs_read_back_in_order_with_their_parameters(store):
    sweep_id = uuid.uuid4().hex[:16]
    store.insert_sweep(sweep_row(sweep_id, 3), [job_row(sweep_id, i) for i in range(3)])
    assert store.get_sweep(sweep_id)["job_count"] == 3
    assert [job["params"] for job in store.sweep_jobs(sweep_id)] == [{"alpha": 0}, {"alpha": 1}, {"alpha": 2}]
    assert store.list_sweeps("owner-1")[1] == 1 and store.list_sweeps("someone-else")[1] == 0


def test_the_upload_a_sweeps_jobs_share_counts_once_in_the_owners_storage(store):
    sweep_id = uuid.uuid4().hex[:16]
    store.insert_sweep(sweep_row(sweep_id, 4), [job_row(sweep_id, i) for i in range(4)])
    assert store.storage_used("owner-1") == 1000


def test_a_sweep_whose_jobs_cannot_all_be_stored_stores_none(store):
    sweep_id = uuid.uuid4().hex[:16]
    rows = [job_row(sweep_id, 0, job_id="same-id"), job_row(sweep_id, 1, job_id="same-id")]
    with pytest.raises(IntegrityError):
        store.insert_sweep(sweep_row(sweep_id, 2), rows)
    assert store.get_sweep(sweep_id) is None and store.sweep_jobs(sweep_id) == []
