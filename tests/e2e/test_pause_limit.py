"""A paused job holds its unit, so a pause has a limit (NIAS_MAX_PAUSE_S): the job page says when
the job will be cancelled, and past the limit it is, keeping what it wrote like any cancel."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import ConsoleErrors, admin_page, browser, console_errors  # noqa: F401 (fixtures)
from tests.support.projects import WRITER_CODE, zip_entries
from tests.support.stack import LocalStack, wait_until

MAX_PAUSE_S = 6


@pytest.fixture(scope="module")
def short_pauses(tmp_path_factory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("pause-limit"), units=1, NIAS_MAX_PAUSE_S=str(MAX_PAUSE_S),
                    NIAS_LEASE_S="8", NIAS_KILL_GRACE_S="2") as stack:
        yield stack


@pytest.fixture
def job_page(browser: Browser, short_pauses: LocalStack, console_errors: ConsoleErrors) -> Iterator[Page]:
    with admin_page(browser, short_pauses, console_errors) as page:
        yield page


def test_a_job_paused_past_the_limit_is_cancelled_with_the_reason_and_keeps_its_output(short_pauses, job_page,
                                                                                       tmp_path):
    client = short_pauses.client
    job = client.submit(zip_entries(tmp_path / "writer.zip", {"code.py": WRITER_CODE}), name="paused too long")
    wait_until(lambda: "step 3" in client.log(job["id"]), timeout_s=60, message="the job runs")
    paused = client.set_state(job["id"], "paused")
    assert paused["state"] == "paused" and paused["pause_deadline"], paused

    job_page.goto(f"/job.html?id={job['id']}")
    expect(job_page.locator("#job-headline")).to_have_text(
        re.compile(r"^Paused: it keeps its unit unit-\d and its time limit is not counting; "
                   r"it will be cancelled at \d\d:\d\d unless resumed$"))

    expect(job_page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    reason = f"paused for longer than the limit of {MAX_PAUSE_S} s"
    expect(job_page.locator("#job-error-text")).to_contain_text(reason)
    expect(job_page.locator("#job-error-title")).to_have_text("Cancelled by NIAS")  # not the user's own cancel
    expect(job_page.locator("#job-error")).to_have_class(re.compile(r"\bwarn\b"))
    expect(job_page.locator('#files-table tr[data-file="partial.txt"]')).to_be_visible(timeout=30_000)
    expect(job_page.locator("#result-body")).not_to_contain_text("without a result")

    done = client.wait(job["id"], timeout_s=60)
    assert done["state"] == "cancelled" and reason in done["error"]
    assert done["pause_deadline"] is None
    wait_until(lambda: not client.job(job["id"])["result_pending"], timeout_s=30, message="the result is recorded")
    assert client.job(job["id"])["result_size"] > 0
    history = client.history(job["id"])
    assert history[-1]["to"] == "cancelled" and history[-1]["reason"] == reason


def test_a_paused_job_resumed_in_time_runs_on(short_pauses, tmp_path):
    client = short_pauses.client
    job = client.submit(zip_entries(tmp_path / "short.zip", {"code.py": "import time\ntime.sleep(4)\n"}))
    wait_until(lambda: client.job(job["id"])["state"] == "running", timeout_s=60, message="the job runs")
    assert client.set_state(job["id"], "paused")["state"] == "paused"
    assert client.set_state(job["id"], "running")["pause_deadline"] is None
    assert client.wait(job["id"], timeout_s=60)["state"] == "succeeded"
