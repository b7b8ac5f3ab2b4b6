"""Per-user quotas on waiting jobs and stored data, and retention of old results."""
from __future__ import annotations

import os

import pytest

from nias.client import ApiError, NiasClient
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until


@pytest.fixture(scope="module")
def quota_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("quota"), units=1, NIAS_MAX_QUEUED_PER_USER="2",
                    NIAS_MAX_STORAGE_MB_PER_USER="2") as stack:
        yield stack


@pytest.fixture(scope="module")
def retention_stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("retention"), units=1, NIAS_RETENTION_DAYS=str(2 / 86400),
                    NIAS_LEASE_S="4") as stack:
        yield stack


def stored_jobs(stack: LocalStack) -> int:
    """How many jobs the store holds, asked as the admin."""
    return NiasClient(stack.url, token=stack.admin_token).jobs()["total"]


def test_a_user_cannot_keep_more_jobs_waiting_than_the_limit(quota_stack, tmp_path):
    client = quota_stack.client
    blocker = client.submit(zip_entries(tmp_path / "b.zip", {"code.py": "import time; time.sleep(3)"}))
    wait_until(lambda: client.job(blocker["id"])["state"] == "running", timeout_s=60, message="blocker runs")
    waiting = [client.submit(zip_entries(tmp_path / f"w{i}.zip", {"code.py": "pass"})) for i in range(2)]
    stored = stored_jobs(quota_stack)
    with pytest.raises(ApiError) as refused:
        client.submit(zip_entries(tmp_path / "x.zip", {"code.py": "pass"}))
    assert refused.value.status == 429 and refused.value.code == "quota_queued"
    assert stored_jobs(quota_stack) == stored, "the refused upload was stored as a job"
    assert [client.wait(job["id"], timeout_s=60)["state"] for job in [blocker, *waiting]] == ["succeeded"] * 3
    assert client.wait(client.submit(zip_entries(tmp_path / "y.zip", {"code.py": "pass"}))["id"],
                       timeout_s=60)["state"] == "succeeded"


def test_a_user_cannot_store_more_than_the_limit(quota_stack, tmp_path):
    client = quota_stack.client
    heavy = {"code.py": "pass", "noise.bin": os.urandom(1024 * 1024)}
    for index in range(2):
        client.wait(client.submit(zip_entries(tmp_path / f"h{index}.zip", heavy))["id"], timeout_s=60)
    stored = stored_jobs(quota_stack)
    with pytest.raises(ApiError) as refused:
        client.submit(zip_entries(tmp_path / "more.zip", heavy))
    assert refused.value.status == 429 and refused.value.code == "quota_storage"
    assert stored_jobs(quota_stack) == stored, "the refused upload was stored as a job"
    assert "2 MB" in refused.value.message
    # The refusal came before the body was used; the connection it came on still serves the next request.
    assert client.jobs()["total"] == stored


def test_results_older_than_the_retention_period_are_removed_and_the_job_says_so(retention_stack, tmp_path):
    client = retention_stack.client
    job = client.wait(client.submit(zip_entries(tmp_path / "r.zip", {"code.py": "open('output/x','w').write('x')"}))
                      ["id"], timeout_s=60)
    assert job["state"] == "succeeded"
    folder = retention_stack.data_dir / "jobs" / job["id"]
    # Where the job's files are, unless the short retention period already ran out.
    assert folder.is_dir() or client.job(job["id"])["expired_at"], f"{folder} never held the job's files"
    wait_until(lambda: client.job(job["id"])["expired_at"], timeout_s=30, message="result expired")
    assert not folder.exists()
    with pytest.raises(ApiError) as gone:
        client.result(job["id"], tmp_path / "r.zip")
    assert gone.value.status == 410 and gone.value.code == "result_expired"
    assert client.job(job["id"])["state"] == "succeeded"  # the record stays
