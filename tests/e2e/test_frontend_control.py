"""Controlling jobs from the pages, in Chromium against the whole stack: progress, pause and
resume, the queue, the event stream, "Check only" on upload, and the admin page."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from nias.client import ApiError

from tests.support.browser import (  # noqa: F401 (fixtures)
    NARROW, ConsoleErrors, admin_credentials, admin_page, browser, console_errors, new_page, page,
    save_screenshot, sign_in,
)
from tests.support.projects import WRITER_CODE, zip_entries
from tests.support.stack import LocalStack, wait_until

SLOW = 30_000  # ms: generous waits for jobs to change state
PROMPT = 4_000  # ms: well under every poll interval the pages fall back on
PROGRESS_CODE = (
    "import time\n"
    "for step in range(1, 9):\n"
    "    time.sleep(1.0)\n"
    "    print(f'##nias progress {step / 10:.2f} filtering channel {step}', flush=True)\n"
    "    print(f'worked on channel {step}', flush=True)\n"
    "time.sleep(1.0)\n"
    "print('done')\n"
)
COUNTER_CODE = (
    "import time\n"
    "for i in range(600):\n"
    "    print('count', i, flush=True)\n"
    "    time.sleep(0.2)\n"
)
BLOCKER_CODE = "import time\ntime.sleep(120)\n"


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def job_row(page: Page, job_id: str):
    return page.locator(f'tr[data-job-id="{job_id}"]')


def put_state(stack, job_id: str, state: str) -> dict:
    """Ask for `state`, which the job must take: 200 with the job in that state."""
    answer = stack.http.put(f"{stack.url}/api/jobs/{job_id}/state", json={"state": state}, timeout=10)
    assert answer.status_code == 200 and answer.json()["state"] == state, answer.text
    return answer.json()


def cancel_unfinished(stack, jobs: list[dict]) -> None:
    """Cancel whatever of `jobs` is still queued, running or paused; a job that already ended
    refuses (409 naming its final state) and is left as it is."""
    for job in jobs:
        answer = stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"}, timeout=10)
        if answer.status_code != 200:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["state"] in ("succeeded", "failed"), answer.text


def log_reads(page: Page) -> int:
    return page.evaluate("() => Number(document.getElementById('log').dataset.reads || 0)")


def wait_for_log_reads(page: Page, count: int) -> None:
    page.wait_for_function("n => Number(document.getElementById('log').dataset.reads || 0) >= n",
                           arg=count, timeout=SLOW)


def record_requests(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    return seen


@pytest.fixture(scope="module")
def single_unit(tmp_path_factory) -> Iterator[LocalStack]:
    """One processing unit, so jobs wait in the queue behind a blocker."""
    with LocalStack(tmp_path_factory.mktemp("control-pages"), units=1, NIAS_KILL_GRACE_S="2") as stack:
        yield stack


@pytest.fixture
def single_unit_page(browser: Browser, single_unit: LocalStack, console_errors: ConsoleErrors) -> Iterator[Page]:
    """A page signed in as the admin of the single-unit stack."""
    with admin_page(browser, single_unit, console_errors) as page:
        yield page


# Progress


def test_job_page_shows_a_growing_progress_bar_its_message_and_an_eta_but_no_progress_lines(page, client, tmp_path):
    job = client.submit(zip_entries(tmp_path / "progress.zip", {"code.py": PROGRESS_CODE}), name=unique("progress"))
    page.goto(f"/job.html?id={job['id']}")
    bar = page.locator("#job-progress")
    page.wait_for_function("() => document.getElementById('job-progress').value >= 0.2", timeout=SLOW)
    first = bar.evaluate("bar => bar.value")
    page.wait_for_function("v => document.getElementById('job-progress').value > v", arg=first, timeout=SLOW)
    summary = page.locator("#progress-text")
    expect(summary).to_contain_text(re.compile(r"\d+ % · filtering channel \d · running for .+ · about .+ left"))
    expect(page.locator("#job-live")).to_have_text("Live")
    save_screenshot(page, "job-progress")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#progress-text")).to_contain_text("succeeded")  # the card stays, so the page stays put
    expect(page.locator("#log")).to_contain_text("done")
    log = page.locator("#log").inner_text()
    assert "worked on channel 8" in log and "##nias" not in log


# Pause, resume, cancel


def test_pausing_from_the_job_page_freezes_the_log_resuming_continues_and_the_results_row_cancels(
        page, client, tmp_path):
    name = unique("counter")
    job = client.submit(zip_entries(tmp_path / "count.zip", {"code.py": COUNTER_CODE}), name=name)
    page.goto(f"/job.html?id={job['id']}")
    state, log = page.locator("#job-state"), page.locator("#log")
    expect(log).to_contain_text("count 3", timeout=SLOW)

    page.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    expect(page.get_by_role("button", name="Pause")).to_be_hidden()
    wait_for_log_reads(page, log_reads(page) + 2)  # lines written just before the stop have arrived
    frozen = log.inner_text()
    wait_for_log_reads(page, log_reads(page) + 3)
    assert log.inner_text() == frozen, "the log grew while the job was paused"
    expect(page.locator("#progress-text")).to_contain_text("paused after")

    page.get_by_role("button", name="Resume").click()
    expect(state).to_have_text("running")
    page.wait_for_function("n => document.getElementById('log').textContent.length > n",
                           arg=len(log.text_content()), timeout=SLOW)

    page.goto(f"/results.html?q={name}")
    page.evaluate("() => { window.sameDocument = true; }")
    row = job_row(page, job["id"])
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.get_by_role("button", name=f"Pause {name}")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Cancel {name}").click()
    expect(row.locator(".badge")).to_have_text("cancelled", timeout=SLOW)
    expect(row.get_by_role("link", name=f"Run again {name}")).to_be_visible()
    expect(row.get_by_role("button", name=f"Cancel {name}")).to_have_count(0)
    assert page.evaluate("() => window.sameDocument") is True


# The queue


def test_a_waiting_jobs_page_shows_its_place_in_the_queue_and_run_next_and_priority_move_it(
        single_unit, single_unit_page, tmp_path):
    client, page = single_unit.client, single_unit_page
    blocker = client.submit(zip_entries(tmp_path / "block.zip", {"code.py": BLOCKER_CODE}), name="blocker")
    wait_until(lambda: client.job(blocker["id"])["state"] == "running", timeout_s=60, message="blocker running")
    quick = zip_entries(tmp_path / "quick.zip", {"code.py": "print('quick')"})
    first, second, target = (client.submit(quick, name=f"waiting {n}") for n in ("one", "two", "three"))
    try:
        page.goto(f"/job.html?id={target['id']}")
        expect(page.locator("#job-state")).to_have_text("queued")
        expect(page.locator("#queue-position")).to_have_text("Number 3 in the queue")
        expect(page.get_by_role("button", name="Pause")).to_be_hidden()
        expect(page.get_by_role("button", name="Run again")).to_be_hidden()
        save_screenshot(page, "job-queued")

        page.get_by_role("button", name="Run next").click()
        expect(page.locator("#queue-position")).to_have_text("Next to run")
        expect(page.locator("#queue-detail")).to_contain_text("moved to the front")
        expect(page.get_by_role("button", name="Run next")).to_be_hidden()
        assert client.job(target["id"])["run_next"] is True

        page.goto(f"/job.html?id={second['id']}")
        expect(page.locator("#queue-position")).to_have_text("Number 3 in the queue")
        page.select_option("#priority-input", "9")
        page.get_by_role("button", name="Set priority").click()
        expect(page.locator('[data-fact="Priority"] dd')).to_have_text("9")
        expect(page.locator("#queue-position")).to_have_text("Number 2 in the queue")
        assert client.job(second["id"])["priority"] == 9
        assert client.job(first["id"])["queue_position"] == 3
    finally:
        cancel_unfinished(single_unit, [blocker, first, second, target])


def test_results_rows_change_a_priority_and_run_a_job_next_which_reorder_the_queue_and_resume_a_paused_job(
        single_unit, single_unit_page, tmp_path):
    client, page = single_unit.client, single_unit_page
    prefix = unique("rows")
    blocker = client.submit(zip_entries(tmp_path / "count.zip", {"code.py": COUNTER_CODE}), name=f"{prefix} blocker")
    wait_until(lambda: client.job(blocker["id"])["state"] == "running", timeout_s=60, message="blocker running")
    quick = zip_entries(tmp_path / "quick.zip", {"code.py": "print('quick')"})
    first, second, third = (client.submit(quick, name=f"{prefix} {n}") for n in ("first", "second", "third"))
    try:
        page.goto(f"/results.html?q={prefix}")
        rows = {job["id"]: job_row(page, job["id"]) for job in (blocker, first, second, third)}
        expect(rows[third["id"]].locator(".badge")).to_have_text("queued")
        for label in ("Pause", "Resume", "Run again"):
            expect(rows[third["id"]].get_by_role("button", name=f"{label} {prefix} third", exact=True)).to_have_count(0)
        expect(rows[blocker["id"]].get_by_role("combobox")).to_have_count(0)
        expect(rows[blocker["id"]].get_by_role("button", name=f"Run next {prefix} blocker")).to_have_count(0)

        priority = rows[third["id"]].get_by_role("combobox", name=f"Priority of {prefix} third")
        set_priority = rows[third["id"]].get_by_role("button", name=f"Set priority of {prefix} third")
        expect(priority).to_have_value("0")
        expect(set_priority).to_be_disabled()
        priority.select_option("9")
        set_priority.click()
        wait_until(lambda: client.job(third["id"])["priority"] == 9, timeout_s=10, message="priority 9")
        expect(priority).to_have_value("9")
        expect(set_priority).to_be_disabled()
        assert client.job(third["id"])["queue_position"] == 1

        run_next = rows[second["id"]].get_by_role("button", name=f"Run next {prefix} second")
        run_next.click()
        expect(run_next).to_have_count(0)
        moved = client.job(second["id"])
        assert moved["run_next"] is True and moved["queue_position"] == 1
        assert [client.job(job["id"])["queue_position"] for job in (third, first)] == [2, 3]
        save_screenshot(page, "results-queue-controls")

        blocker_row = rows[blocker["id"]]
        blocker_row.get_by_role("button", name=f"Pause {prefix} blocker").click()
        expect(blocker_row.locator(".badge")).to_have_text("paused")
        wait_until(lambda: client.job(blocker["id"])["state"] == "paused", timeout_s=10, message="paused")
        blocker_row.get_by_role("button", name=f"Resume {prefix} blocker").click()
        expect(blocker_row.locator(".badge")).to_have_text("running")
        expect(blocker_row.get_by_role("button", name=f"Pause {prefix} blocker")).to_be_visible()
        resumed_at = len(client.log(blocker["id"]))
        wait_until(lambda: len(client.log(blocker["id"])) > resumed_at, timeout_s=10, message="the counter went on")
        assert client.job(blocker["id"])["state"] == "running"

        page.once("dialog", lambda dialog: dialog.accept())
        blocker_row.get_by_role("button", name=f"Cancel {prefix} blocker").click()
        expect(blocker_row.locator(".badge")).to_have_text("cancelled", timeout=SLOW)
        done = [client.wait(job["id"], timeout_s=60) for job in (first, second, third)]
        assert [job["state"] for job in done] == ["succeeded"] * 3
        order = [job["name"] for job in sorted(done, key=lambda job: job["started_at"])]
        assert order == [f"{prefix} second", f"{prefix} third", f"{prefix} first"]
        expect(rows[first["id"]].locator(".badge")).to_have_text("succeeded", timeout=SLOW)
    finally:
        cancel_unfinished(single_unit, [blocker, first, second, third])


# The event stream


def test_the_job_page_and_results_follow_the_event_stream_and_show_a_pause_at_once(new_page, stack, client, tmp_path):
    name = unique("streamed")
    job = client.submit(zip_entries(tmp_path / "count.zip", {"code.py": COUNTER_CODE}), name=name)
    wait_until(lambda: client.job(job["id"])["state"] == "running", timeout_s=60, message="running")
    job_page, results = new_page(), new_page()
    job_requests, results_requests = record_requests(job_page), record_requests(results)
    job_page.goto(f"/job.html?id={job['id']}")
    results.goto(f"/results.html?q={name}")
    expect(job_page.locator("#job-live")).to_have_text("Live")
    expect(results.locator("#list-live")).to_have_text("Live")
    expect(job_row(results, job["id"]).locator(".badge")).to_have_text("running")
    polls_before = sum(url.endswith(f"/api/jobs/{job['id']}") for url in job_requests)
    try:
        put_state(stack, job["id"], "paused")
        expect(job_page.locator("#job-state")).to_have_text("paused", timeout=PROMPT)
        expect(job_row(results, job["id"]).locator(".badge")).to_have_text("paused", timeout=PROMPT)
        put_state(stack, job["id"], "running")
        expect(job_page.locator("#job-state")).to_have_text("running", timeout=PROMPT)
        expect(job_row(results, job["id"]).locator(".badge")).to_have_text("running", timeout=PROMPT)
    finally:
        put_state(stack, job["id"], "cancelled")
    expect(job_page.locator("#job-state")).to_have_text("cancelled", timeout=SLOW)
    assert any(f"/api/events?job={job['id']}" in url for url in job_requests)
    assert any(url.endswith("/api/events") for url in results_requests)
    polls_after = sum(url.endswith(f"/api/jobs/{job['id']}") for url in job_requests)
    assert polls_after - polls_before <= 1, "the job page polled the job while its event stream worked"


def test_results_show_admins_the_owner_and_only_mine_keeps_their_own_jobs(page, stack, client, tmp_path):
    name = unique("owned")
    job = client.wait(client.submit(zip_entries(tmp_path / "o.zip", {"code.py": "pass"}), name=name)["id"],
                      timeout_s=120)
    page.goto(f"/results.html?q={name}")
    row = job_row(page, job["id"])
    expect(row.locator(".col-owner")).to_contain_text(f"{admin_credentials(stack)[0]} (you)")
    expect(page.get_by_role("columnheader", name="Owner")).to_be_visible()
    page.get_by_label("Only mine").check()
    expect(page).to_have_url(re.compile(r"mine=1"))
    expect(row).to_be_visible()
    expect(page.locator("#page-info")).to_contain_text("1–1 of 1")


# Check only


def test_check_only_reports_syntax_errors_missing_packages_and_a_good_project_without_queueing(
        page, client, tmp_path):
    broken = zip_entries(tmp_path / "broken.zip", {"proj/code.py": "import helpers\n",
                                                   "proj/helpers.py": "def f(:\n    pass\n"})
    missing = zip_entries(tmp_path / "missing.zip", {"code.py": "pass\n",
                                                     "requirements.txt": "nias-no-such-package-xyz==1.0\n"})
    good = zip_entries(tmp_path / "good.zip", {"code.py": "print('fine')\n"})
    total_before = client.jobs()["total"]
    page.goto("/upload.html")
    report = page.locator("#check-report")

    page.set_input_files("#zip-input", str(broken))
    page.get_by_role("button", name="Check only").click()
    expect(report).to_contain_text("The check found problems", timeout=SLOW)
    syntax = report.locator('[data-check="syntax"]')
    expect(syntax).to_contain_text("helpers.py, line 1:")
    expect(syntax).to_contain_text("syntax")
    expect(syntax.locator("pre")).to_contain_text("def f(:")
    save_screenshot(page, "upload-check")

    page.set_input_files("#zip-input", str(missing))
    expect(report).to_be_hidden()
    page.get_by_role("button", name="Check only").click()
    requirements = report.locator('[data-check="requirements"]')
    expect(requirements).to_contain_text("nias-no-such-package-xyz", timeout=SLOW)
    expect(requirements).to_contain_text("failed")

    page.set_input_files("#zip-input", str(good))
    page.get_by_role("button", name="Check only").click()
    expect(report).to_contain_text("Everything checks out", timeout=SLOW)
    expect(report.locator(".check-item.bad")).to_have_count(0)
    save_screenshot(page, "upload-check-ok")
    assert page.url.endswith("/upload.html")
    assert client.jobs()["total"] == total_before


def test_check_only_shows_a_zip_that_breaks_the_upload_rules_as_a_failed_zip_check(
        page, client, console_errors, tmp_path):
    no_code = zip_entries(tmp_path / "no-code.zip", {"analysis/notes.txt": "code.py is missing"})
    with pytest.raises(ApiError) as refusal:
        client.submit(no_code)
    console_errors.allow(r"status of 400")  # the server may refuse the dry run outright
    total_before = client.jobs()["total"]
    page.goto("/upload.html")
    report = page.locator("#check-report")
    zip_check = report.locator('[data-check="zip"]')

    page.set_input_files("#zip-input", str(no_code))
    page.get_by_role("button", name="Check only").click()
    expect(report).to_contain_text("The zip breaks the upload rules", timeout=SLOW)
    expect(zip_check).to_contain_text("Zip: failed")
    expect(zip_check).to_contain_text(refusal.value.message)
    expect(zip_check).to_contain_text(f"code: {refusal.value.code}")
    expect(page.locator("#upload-error")).to_be_hidden()
    save_screenshot(page, "upload-check-zip")

    # The same refusal as a report (200) rather than an error (400): the page reads both alike.
    answer = {"dry_run": True, "ok": False, "checks": [
        {"check": "zip", "ok": False, "code": "no_code_py", "message": "There is no code.py in the zip."},
        {"check": "syntax", "ok": False, "message": "Not checked: the zip was refused."}]}
    page.route("**/api/jobs?dry_run=true", lambda route: route.fulfill(status=200, json=answer))
    page.get_by_role("button", name="Check only").click()
    expect(zip_check).to_contain_text("There is no code.py in the zip.")
    expect(zip_check).to_contain_text("code: no_code_py")
    expect(report.locator('[data-check="syntax"]')).to_contain_text("Not checked: the zip was refused.")
    expect(report.locator("#check-title")).to_have_text("The zip breaks the upload rules")
    assert client.jobs()["total"] == total_before


def test_pages_show_a_running_job_whose_json_has_no_eta(new_page, client, console_errors, tmp_path):
    name = unique("no eta")
    job = client.submit(zip_entries(tmp_path / "progress.zip", {"code.py": PROGRESS_CODE}), name=name)
    wait_until(lambda: (client.job(job["id"])["progress"] or 0) >= 0.2, timeout_s=60, message="progress")
    console_errors.allow(r"api/events|ERR_FAILED")

    def without_eta(route):
        answer = route.fetch()
        body = answer.json()
        for shown in body.get("jobs", [body]):
            shown.pop("eta_s", None)
        route.fulfill(response=answer, json=body)

    pages = {"job": new_page(), "results": new_page()}
    for shown in pages.values():
        shown.route("**/api/events**", lambda route: route.abort())  # so the pages poll the JSON below
        shown.route(re.compile(r"/api/jobs(\?|/\w+$|/\w+\?)"), without_eta)
    try:
        _check_pages_without_eta(pages, job, name)
    finally:  # a poll caught in flight as the pages close must not fail the teardown
        for shown in pages.values():
            shown.unroute_all(behavior="ignoreErrors")


def _check_pages_without_eta(pages: dict, job: dict, name: str) -> None:
    pages["job"].goto(f"/job.html?id={job['id']}")
    pages["results"].goto(f"/results.html?q={name}")
    summary = pages["job"].locator("#progress-text")
    expect(summary).to_contain_text(re.compile(r"\d+ % · filtering channel \d · running for "))
    expect(summary).not_to_contain_text("left")
    row = job_row(pages["results"], job["id"])
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator(".row-progress")).to_contain_text("%")
    for shown in pages.values():
        assert not re.search(r"undefined|NaN", shown.locator("main").inner_text())
    expect(pages["job"].locator("#job-state")).to_have_text("succeeded", timeout=SLOW)


NO_RESULT = "This job ended without a result"


def watch_for_text(page: Page, selector: str, text: str) -> None:
    """Note in `window.sawText` whether `text` ever appears in `selector`, however briefly."""
    page.evaluate("""([selector, text]) => {
        window.sawText = false;
        const target = document.querySelector(selector);
        const check = () => { if (target.textContent.includes(text)) window.sawText = true; };
        new MutationObserver(check).observe(target, {childList: true, subtree: true, characterData: true});
        check();
    }""", [selector, text])


@pytest.mark.parametrize("paused_first", [False, True], ids=["running", "paused"])
def test_cancelling_a_job_that_wrote_output_shows_the_kept_result_without_a_reload(page, client, tmp_path,
                                                                                 paused_first):
    job = client.submit(zip_entries(tmp_path / "writer.zip", {"code.py": WRITER_CODE}), name=unique("kept"))
    wait_until(lambda: "step 3" in client.log(job["id"]), timeout_s=60, message="the job wrote its output")
    page.goto(f"/job.html?id={job['id']}")
    state = page.locator("#job-state")
    expect(state).to_have_text("running", timeout=SLOW)
    watch_for_text(page, "#result-body", NO_RESULT)
    if paused_first:
        page.get_by_role("button", name="Pause").click()
        expect(state).to_have_text("paused", timeout=SLOW)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(state).to_have_text("cancelled", timeout=SLOW)
    expect(page.locator('#files-table tr[data-file="partial.txt"]')).to_be_visible(timeout=SLOW)
    expect(page.locator('.preview[data-file="partial.txt"] pre')).to_have_text("half of the work")
    expect(page.locator("#download-result")).to_be_visible()
    assert not page.evaluate("() => window.sawText"), "the page said the job had no result"
    expect(page.locator("#log")).to_contain_text("kept as the result")
    done = client.job(job["id"])
    assert done["result_pending"] is False and done["result_size"] > 0


def test_a_cancelled_jobs_result_is_pending_until_the_unit_reports_it(client, tmp_path):
    job = client.submit(zip_entries(tmp_path / "writer.zip", {"code.py": WRITER_CODE}), name=unique("pending"))
    wait_until(lambda: "step 3" in client.log(job["id"]), timeout_s=60, message="the job wrote its output")
    cancelled = client.set_state(job["id"], "cancelled")
    assert cancelled["state"] == "cancelled" and cancelled["result_pending"] is True
    early = client.session.get(f"{client.base_url}/api/jobs/{job['id']}/result", timeout=10)
    if early.status_code != 200:  # unless the unit was quicker than this request
        assert early.status_code == 409 and early.json()["error"]["code"] == "result_pending"
    settled = client.job(job["id"], wait_s=30, state="cancelled")
    assert settled["result_pending"] is False and settled["result_size"] > 0
    assert client.session.get(f"{client.base_url}/api/jobs/{job['id']}/result", timeout=10).status_code == 200


# Admin


def test_the_admin_page_lists_users_creates_one_who_can_sign_in_and_makes_an_invitation(new_page, stack):
    page = new_page()
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page).to_have_url(re.compile(r"/admin\.html$"))
    users = page.locator("#users-table")
    expect(users).to_contain_text(admin_credentials(stack)[0])
    expect(page.locator("#dead-count")).to_have_text(re.compile(r"^\d+ messages?$"), timeout=SLOW)
    expect(page.get_by_role("link", name="All jobs")).to_have_attribute("href", "/results.html")

    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    page.fill("#new-user-email", email)
    page.fill("#new-user-password", password)
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#new-user-done")).to_contain_text(f"{email} can now sign in")
    expect(users).to_contain_text(email)

    page.get_by_role("button", name="Create an invitation").click()
    expect(page.locator("#invitation-link")).to_contain_text("/signin.html?invitation=")
    save_screenshot(page, "admin")

    narrow = new_page(viewport=NARROW)
    narrow.goto("/admin.html")
    expect(narrow.locator("#users-table")).to_contain_text(email)
    assert narrow.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    save_screenshot(narrow, "admin-narrow")

    colleague = new_page(signed_in=False)
    colleague.goto("/signin.html")
    colleague.fill("#signin-email", email)
    colleague.fill("#signin-password", password)
    colleague.get_by_role("button", name="Sign in").click()
    expect(colleague).to_have_url(re.compile(r"/$"))
    expect(colleague.locator("#account")).to_contain_text(email)
    expect(colleague.get_by_role("navigation", name="Main").get_by_role("link", name="Admin")).to_have_count(0)
    colleague.goto("/admin.html")
    expect(colleague.get_by_role("alert")).to_contain_text("Admins only")
    expect(colleague.locator("#admin-view")).to_be_hidden()
    assert stack.http.get(f"{stack.url}/api/users", timeout=10).ok
    denied = colleague.context.request.get("/api/users")
    assert denied.status == 403


def test_the_admin_page_ends_a_colleagues_sessions_and_their_old_cookie_answers_401(new_page, stack,
                                                                                   console_errors):
    console_errors.allow(r"status of 401")
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    assert stack.http.post(f"{stack.url}/api/users", json={"email": email, "password": password},
                           timeout=10).status_code == 201
    colleague = new_page(signed_in=False)
    sign_in(colleague.context, email, password)
    colleague.goto("/results.html")
    expect(colleague.locator("#account")).to_contain_text(email)
    cookie = next(c["value"] for c in colleague.context.cookies() if c["name"] == "nias_session")

    page = new_page()
    page.goto("/admin.html")
    row = page.locator("#users-table tr", has_text=email)
    expect(row.locator(".session-count")).to_have_text("1 session")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"End the sessions of {email}").click()
    expect(page.locator("#new-user-done")).to_contain_text(f"{email} is signed out")
    expect(row.locator(".session-count")).to_have_text("not signed in")
    expect(row.get_by_role("button", name=f"End the sessions of {email}")).to_be_disabled()

    stolen = requests.Session()
    stolen.cookies.set("nias_session", cookie)
    assert stolen.get(f"{stack.url}/api/me", timeout=10).status_code == 401
    colleague.goto("/upload.html")
    expect(colleague).to_have_url(re.compile(r"/signin\.html\?next=%2Fupload\.html$"))


def test_the_new_controls_are_reachable_by_keyboard(page, client, tmp_path):
    page.goto("/upload.html")
    page.locator("#job-timeout").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "check-button"
    page.goto("/admin.html")
    expect(page.locator("#admin-view")).to_be_visible()
    page.locator("#new-user-email").focus()
    reached = []
    for _ in range(4):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.id"))
    assert reached == ["new-user-password", "new-user-role", "create-user", "create-invitation"], reached
