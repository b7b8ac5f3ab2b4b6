"""The pages as a researcher uses them, in Chromium on a laptop and a phone: the log viewer, dates,
the queue, what ran, failed and cancelled jobs, the results table, layout, notifications and the
small things. One stack (the session's) and one browser serve the whole module."""
from __future__ import annotations

import re
import uuid
import zipfile

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (  # noqa: F401 (fixtures)
    NARROW, browser, console_errors, new_page, page, save_screenshot,
)
from tests.support.projects import zip_entries, zip_project

SLOW = 60_000  # ms: an environment with numpy, scipy and matplotlib may have to be built first
BAR_CODE = (
    "import time\n"
    "from tqdm import tqdm\n"
    "print('\\x1b[1;34mloading\\x1b[0m the recordings', flush=True)\n"
    "for step in tqdm(range(400), desc='epochs', mininterval=0.2):\n"
    "    time.sleep(0.1)\n"
    "print('trained', flush=True)\n"
)


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def spectrum(stack, tmp_path_factory) -> dict:
    """A finished numpy/scipy/matplotlib job: its environment's set-up lines, a bar, a plot and a CSV."""
    folder = tmp_path_factory.mktemp("spectrum")
    job = stack.client.submit(zip_project("spectrum", folder / "spectrum.zip", top_folder="spectrum"),
                              name=unique("spectrum"))
    done = stack.client.wait(job["id"], timeout_s=600)
    assert done["state"] == "succeeded", stack.client.log(job["id"])
    return done


@pytest.fixture(scope="module")
def crashed(stack, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("crashed")
    code = "import sys\nprint('starting')\nprint('warning: 3 channels flat', file=sys.stderr)\n" \
           "def filter_channel(i):\n    raise ValueError(f'channel {i} has no samples')\nfilter_channel(3)\n"
    job = stack.client.submit(zip_entries(folder / "crash.zip", {"eeg/code.py": code, "eeg/data.csv": "a\n1\n"}),
                              name=unique("crash"))
    return stack.client.wait(job["id"], timeout_s=120)


def open_job(page: Page, job: dict) -> None:
    page.goto(f"/job.html?id={job['id']}")
    expect(page.locator("#job-state")).to_have_text(job["state"], timeout=SLOW)


def log_line(page: Page, text: str):
    return page.locator("#log .log-text", has_text=re.compile(f"^{re.escape(text)}$"))


# 1. The log viewer


def test_a_running_tqdm_bar_shows_as_one_updating_line_and_feeds_the_progress(page, stack, tmp_path):
    job = stack.client.submit(zip_entries(tmp_path / "bar.zip", {"code.py": BAR_CODE, "requirements.txt": "tqdm\n"}),
                              name=unique("tqdm"))
    try:
        page.goto(f"/job.html?id={job['id']}")
        live = page.locator("#log .log-line.err.live")
        expect(live).to_have_count(1, timeout=SLOW)
        expect(live).to_contain_text(re.compile(r"epochs:\s+\d+%\|"))
        page.wait_for_function("() => document.getElementById('job-progress').value >= 0.05", timeout=SLOW)
        expect(page.locator("#progress-text")).to_contain_text(re.compile(r"\d+ % · epochs"))
        first = live.inner_text()
        expect(live).not_to_have_text(first, timeout=SLOW)
        expect(page.locator("#log .log-line.err")).to_have_count(1)  # updated in place, never a wall of bars
        bold = page.locator("#log .log-line.out .ansi-bold.ansi-blue")
        expect(bold).to_have_text("loading")
        assert "\x1b" not in page.locator("#log").inner_text() and "[1;34m" not in page.locator("#log").inner_text()
        save_screenshot(page, "pages-job-running-tqdm")
    finally:
        stack.client.set_state(job["id"], "cancelled")


def test_a_finished_scientific_job_folds_its_set_up_and_lists_what_ran(page, spectrum):
    open_job(page, spectrum)
    setup = page.locator("#log-setup")
    expect(setup).to_be_visible()
    expect(setup).not_to_have_attribute("open", "")
    expect(page.locator("#log-setup-count")).to_have_text(re.compile(r"\d+ lines"))
    expect(page.locator("#log .log-line.out").last).to_contain_text("done: spectrum of 6 channels written")
    expect(page.locator("#log .log-line.err")).to_have_count(1)  # the bar's final line only
    expect(page.locator("#log .log-line.err")).to_contain_text("channels: 100%|")
    first_output = page.locator("#log .log-line").first.bounding_box()
    assert first_output["y"] < 860, "the job's own output starts above the fold"
    expect(page.locator("#ran-python")).to_have_text(re.compile(r"Python 3\.\d+\.\d+"))
    for package in ("numpy", "scipy", "matplotlib", "tqdm"):
        row = page.locator("#packages-table tr", has=page.locator("td", has_text=re.compile(f"^{package}$")))
        expect(row.locator("td").nth(1)).to_have_text(re.compile(r"^\d+\.\d+"))
    expect(page.locator("#ran-unit")).to_have_text(re.compile(r"unit-\d"))
    save_screenshot(page, "pages-job-finished-spectrum")
    setup.locator("summary").click()
    expect(setup.locator(".log-line").first).to_be_visible()
    expect(setup).to_contain_text(re.compile(r"numpy==\d"))


def test_the_log_searches_shows_times_and_marks_stderr_and_paths_relative_to_the_project(page, crashed):
    open_job(page, crashed)
    err = page.locator("#log .log-line.err")
    expect(err.first).to_contain_text("warning: 3 channels flat")
    expect(page.locator("#log")).to_contain_text('File "code.py", line 6')
    assert "/unit-" not in page.locator("#log").inner_text() and "/var/tmp" not in page.locator("#log").inner_text()
    times = page.locator("#log .log-time").first
    expect(times).to_be_hidden()
    page.get_by_label("Times").check()
    expect(times).to_be_visible()
    expect(times).to_have_attribute("title", re.compile(r"\d{4}.*\d\d:\d\d:\d\d.*(UTC|GMT|[A-Z]{3})"))
    page.get_by_label("Search the log").fill("no samples")
    expect(page.locator("#log-search-count")).to_have_text(re.compile(r"1 of \d+"))
    expect(page.locator("#log .log-line.current")).to_contain_text("no samples")
    with page.expect_download() as download:
        page.locator("#download-log").click()
    text = open(download.value.path(), encoding="utf-8").read()
    assert re.search(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[err\] ValueError: channel 3 has no samples$", text, re.M)


def test_follow_mode_lets_go_when_the_reader_scrolls_up_and_follows_again_at_the_end(page, stack, tmp_path):
    code = "import time\nfor i in range(400):\n    print('line', i, flush=True)\n    time.sleep(0.05)\n"
    job = stack.client.submit(zip_entries(tmp_path / "lines.zip", {"code.py": code}), name=unique("follow"))
    try:
        page.goto(f"/job.html?id={job['id']}")
        log, follow = page.locator("#log"), page.locator("#follow-log")
        expect(log_line(page, "line 120")).to_have_count(1, timeout=SLOW)
        expect(follow).to_be_checked()
        log.evaluate("node => { node.scrollTop = 0; }")
        expect(follow).not_to_be_checked()
        top = log.evaluate("node => node.scrollTop")
        expect(log_line(page, "line 200")).to_have_count(1, timeout=SLOW)
        assert log.evaluate("node => node.scrollTop") == top, "the log jumped while the reader was reading"
        follow.check()
        page.wait_for_function("() => { const n = document.getElementById('log');"
                               " return n.scrollTop + n.clientHeight >= n.scrollHeight - 30; }")
    finally:
        stack.client.set_state(job["id"], "cancelled")


# 3. The queue in view, and 6. the results table

BLOCKER_CODE = "import time\nfor i in range(1200):\n    print('block', i, flush=True)\n    time.sleep(0.1)\n"


def submit_code(stack, tmp_path, label: str, code: str = "print('quick')\n", **options) -> dict:
    path = zip_entries(tmp_path / f"{uuid.uuid4().hex[:6]}.zip", {"code.py": code})
    return stack.client.submit(path, name=unique(label), **options)


def wait_state(stack, job_id: str, state: str, timeout_s: float = 60) -> dict:
    from tests.support.stack import wait_until
    return wait_until(lambda: (job := stack.client.job(job_id))["state"] == state and job, timeout_s=timeout_s,
                      message=f"job {job_id} {state}")


def test_results_and_home_show_the_queue_next_up_and_the_unit_a_paused_job_holds(new_page, stack, tmp_path):
    blockers = [submit_code(stack, tmp_path, "blocker", BLOCKER_CODE) for _ in range(2)]
    waiting = []
    try:
        for blocker in blockers:
            wait_state(stack, blocker["id"], "running")
        prefix = unique("queue")
        waiting = [stack.client.submit(zip_entries(tmp_path / f"q{i}.zip", {"code.py": "print(1)\n"}),
                                       name=f"{prefix} {label}", priority=priority)
                   for i, (label, priority) in enumerate([("low", 1), ("high", 7)])]
        stack.client.set_state(blockers[0]["id"], "paused")
        wait_state(stack, blockers[0]["id"], "paused")

        page = new_page()
        page.goto(f"/results.html?q={prefix.replace(' ', '+')}")
        high = page.locator(f'tr[data-job-id="{waiting[1]["id"]}"]')
        low = page.locator(f'tr[data-job-id="{waiting[0]["id"]}"]')
        expect(high.locator(".standing")).to_contain_text("next up")
        expect(high.locator(".standing")).to_contain_text("priority 7")
        expect(low.locator(".standing")).to_contain_text(re.compile(r"#\d+ in queue · priority 1"))
        save_screenshot(page, "pages-results-queue")

        page.goto(f"/results.html?q={blockers[0]['name'].replace(' ', '+')}")
        expect(page.locator(".standing")).to_have_text(re.compile(r"holds unit-\d"))

        page.goto("/")
        unit = page.locator("#unit-list li", has_text=f"holds paused job {blockers[0]['id']}")
        expect(unit).to_have_count(1)
        expect(page.locator("#count-paused")).not_to_have_text("0")
        expect(page.locator("#recent-jobs .next-up")).to_have_count(1)

        page.goto(f"/job.html?id={blockers[0]['id']}")
        expect(page.locator("#job-headline")).to_contain_text("keeps its unit unit-")
        expect(page.locator("#job-headline")).to_contain_text("its time limit is not counting")

        phone = new_page(NARROW)
        phone.goto(f"/results.html?q={prefix.replace(' ', '+')}")
        expect(phone.locator(f'tr[data-job-id="{waiting[1]["id"]}"] .next-up')).to_be_visible()
        save_screenshot(phone, "pages-results-queue-phone")

        # Both waiting jobs, selected together, are cancelled at once.
        phone.locator("#select-all").check()
        phone.once("dialog", lambda dialog: dialog.accept())
        phone.locator("#bulk-cancel").click()
        expect(phone.locator("#list-notice")).to_contain_text("Cancelled: 2 of 2 jobs.")
        assert [stack.client.job(job["id"])["state"] for job in waiting] == ["cancelled", "cancelled"]
    finally:
        for job in blockers + waiting:
            try:
                stack.client.set_state(job["id"], "cancelled")
            except Exception:  # noqa: BLE001 - already finished
                pass


def test_the_results_table_fits_a_laptop_sorts_filters_by_date_notes_cancels_and_deletes(new_page, stack, tmp_path):
    prefix = unique("table")
    done = [stack.client.submit(zip_entries(tmp_path / f"d{i}.zip", {"code.py": "print(1)\n"}), name=f"{prefix} {name}")
            for i, name in enumerate(["beta", "alpha"])]
    for job in done:
        stack.client.wait(job["id"], timeout_s=120)
    page = new_page()
    page.goto(f"/results.html?q={prefix.replace(' ', '+')}")
    rows = page.locator("#jobs-table tbody tr[data-job-id]")
    expect(rows).to_have_count(2)
    for button in page.locator("#jobs-table [data-action]").all():
        box = button.bounding_box()
        assert box["x"] + box["width"] <= 1280 - 16, f"{button.inner_text()} is cut off at 1280 px"
    fits = page.locator(".table-wrap").evaluate("wrap => wrap.scrollWidth <= wrap.clientWidth")
    assert fits, "the results table scrolls sideways at 1280 px"

    page.get_by_role("button", name="Name").click()
    expect(rows.first).to_contain_text("alpha")
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Name")
    page.get_by_role("button", name="Name").click()
    expect(rows.first).to_contain_text("beta")

    page.fill("#since-filter", "2099-01-01")
    page.locator("#since-filter").dispatch_event("change")
    expect(page.locator("#jobs-table td.empty")).to_contain_text("No jobs match")
    page.fill("#since-filter", "")
    page.locator("#since-filter").dispatch_event("change")
    expect(rows).to_have_count(2)

    rows.nth(0).locator("input.select-job").check()
    page.once("dialog", lambda dialog: dialog.accept("baseline run"))
    page.locator("#bulk-note").click()
    expect(page.locator("#jobs-table .tag")).to_have_text("baseline run")
    assert stack.client.job(done[0]["id"])["note"] == "baseline run"

    page.locator("#select-all").check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    save_screenshot(page, "pages-results-selected")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#bulk-delete").click()
    expect(page.locator("#jobs-table td.empty")).to_be_visible()
    for job in done:
        assert stack.http.get(f"{stack.url}/api/jobs/{job['id']}", timeout=10).status_code == 404
        assert not (stack.data_dir / "jobs" / job["id"]).exists()
