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
