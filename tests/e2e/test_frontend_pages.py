"""The pages as a researcher uses them, in Chromium on a laptop and a phone: the log viewer, dates,
the queue, what ran, failed and cancelled jobs, the results table, layout, notifications and the
small things. One stack of the module's own (its queue, units and accounts are the tests' to
arrange) and the one shared browser serve the whole module."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import uuid
import zipfile

import pika
import pytest
import requests
from playwright.sync_api import Page, expect

from nias.amqp import Topology, connect
from nias.client import NiasClient
from nias.settings import load_settings
from tests.e2e.conftest import STACK_ENV
from tests.support.stack import LocalStack, wait_until

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two units that only this module's tests use: the queue and drain tests need them free."""
    with LocalStack(tmp_path_factory.mktemp("pages-stack"), units=2, **STACK_ENV) as stack:
        yield stack


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


# 5. Failed and cancelled jobs read as what they are


def test_a_failed_job_shows_a_one_line_reason_with_its_traceback_folded_and_no_primary_result(page, crashed):
    open_job(page, crashed)
    expect(page.locator("#job-error")).to_have_class(re.compile(r"\berror\b"))
    download = page.locator("#download-result")
    expect(download).to_have_text("Download the partial result")
    expect(download).not_to_have_class(re.compile(r"\bprimary\b"))
    reason = page.locator("#history details.reason")
    expect(reason.locator("summary")).to_have_text("code.py exited with code 1: ValueError: channel 3 has no samples")
    expect(reason.locator("pre")).to_be_hidden()
    reason.locator("summary").click()
    expect(reason.locator("pre")).to_contain_text("Traceback")
    save_screenshot(page, "pages-job-failed")


def test_a_cancel_the_user_asked_for_is_a_plain_note_not_an_error(page, stack, tmp_path):
    job = submit_code(stack, tmp_path, "cancel me", BLOCKER_CODE)
    wait_state(stack, job["id"], "running")
    stack.client.set_state(job["id"], "cancelled")
    cancelled = stack.client.wait(job["id"], timeout_s=60)
    open_job(page, cancelled)
    box = page.locator("#job-error")
    expect(box).to_have_class(re.compile(r"\binfo\b"))
    expect(box).not_to_have_attribute("role", "alert")
    expect(page.locator("#job-error-title")).to_have_text("Cancelled")
    expect(page.get_by_text("What went wrong")).to_have_count(0)


def test_a_refused_zip_lists_what_it_holds_on_the_upload_page_and_in_the_api(page, stack, tmp_path, console_errors):
    console_errors.allow(r"status of 400")
    wrong = zip_entries(tmp_path / "nocode.zip", {"nocode/README.txt": "read me", "nocode/data.csv": "a\n1\n",
                                                  "other/x.py": "print(1)\n"})
    answer = stack.http.post(f"{stack.url}/api/jobs", files={"file": ("nocode.zip", wrong.read_bytes())}, timeout=30)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "no_code_py" and "found: nocode/README.txt, nocode/data.csv, other/x.py" in error["message"]
    assert error["found"] == ["nocode/README.txt", "nocode/data.csv", "other/x.py"]
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(wrong))
    page.get_by_role("button", name="Upload and run").click()
    expect(page.locator("#upload-error")).to_contain_text("found: nocode/README.txt, nocode/data.csv")


# 7. Layout that stays put


def test_image_previews_keep_their_place_open_full_size_and_the_csv_preview_sorts(page, spectrum):
    open_job(page, spectrum)
    frame = page.locator('.preview[data-file="psd.png"] .image-frame')
    expect(frame).to_have_attribute("style", re.compile(r"aspect-ratio: 512 / 384"))
    expect(frame.locator(".image-placeholder")).to_have_text(re.compile(r"512 × 384 px · \d+ KB"))
    expect(frame).to_have_attribute("target", "_blank")
    with page.context.expect_page() as opened:
        frame.click()
    full = opened.value
    full.wait_for_load_state()
    assert full.url.endswith("/files/psd.png")
    full.close()
    table = page.locator('.preview[data-file="peaks.csv"] table')
    table.get_by_role("button", name="channel").click()
    expect(table.locator("tbody tr").first.locator("td").first).to_have_text("C3")
    table.get_by_role("button", name="channel").click()
    expect(table.locator("tbody tr").first.locator("td").first).to_have_text("Pz")
    expect(table.locator("th").first).to_have_attribute("aria-sort", "descending")


def test_the_job_pages_sections_stay_put_when_the_run_ends(page, stack, tmp_path):
    code = "import time\nprint('working', flush=True)\nprint('##nias progress 0.5 half', flush=True)\ntime.sleep(4)\n"
    job = submit_code(stack, tmp_path, "steady", code)
    page.goto(f"/job.html?id={job['id']}")
    expect(page.locator("#job-state")).to_have_text("running", timeout=SLOW)
    expect(page.locator('[data-fact="Progress"] dd')).to_have_text("50 %")
    expect(log_line(page, "working")).to_have_count(1)
    log_top = page.locator("#log").bounding_box()["y"]
    facts = page.locator("#facts > div").count()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#progress-text")).to_contain_text("succeeded")
    assert page.locator("#log").bounding_box()["y"] == log_top, "the log moved when the run ended"
    assert page.locator("#facts > div").count() == facts, "the details changed shape when the run ended"


# 10. Small things


def test_the_upload_names_every_bad_field_and_marks_it(page, tmp_path):
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(zip_project("hello", tmp_path / "hello.zip")))
    page.fill("#job-priority", "12")
    page.fill("#job-timeout", "-1")
    page.fill("#job-params", "{not json")
    page.get_by_role("button", name="Upload and run").click()
    alert = page.locator("#upload-error")
    expect(alert).to_contain_text("Check these 3 options")
    for field, words in [("#job-priority", "Priority"), ("#job-timeout", "Time limit"), ("#job-params", "Parameters")]:
        expect(page.locator(field)).to_have_attribute("aria-invalid", "true")
        expect(alert).to_contain_text(words)
    expect(page.locator("#job-name")).not_to_have_attribute("aria-invalid", "true")
    save_screenshot(page, "pages-upload-bad-fields")


def test_the_upload_counts_the_zips_own_bytes(page, tmp_path):
    project = zip_project("hello", tmp_path / "hello.zip")
    size = project.stat().st_size
    # Every count the upload page shows, kept across the move to the job's page.
    page.add_init_script("""document.addEventListener('DOMContentLoaded', () => {
        const node = document.getElementById('progress-bytes');
        if (!node) return;
        new MutationObserver(() => {
            const seen = JSON.parse(sessionStorage.getItem('bytes') || '[]');
            seen.push(node.textContent);
            sessionStorage.setItem('bytes', JSON.stringify(seen));
        }).observe(node, { childList: true, characterData: true, subtree: true });
    });""")
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(project))
    page.get_by_role("button", name="Upload and run").click()
    expect(page).to_have_url(re.compile(r"/job\.html\?id="), timeout=SLOW)
    seen = page.evaluate("JSON.parse(sessionStorage.getItem('bytes') || '[]')")
    assert seen and seen[-1] == f"{size} B of {size} B", seen
    assert all(re.fullmatch(rf"\d+ B of {size} B", text) for text in seen if text), seen


def test_an_unknown_page_answers_a_page_and_an_unknown_api_path_json(page, stack, console_errors):
    console_errors.allow(r"status of 404")
    answer = page.goto("/no-such-page.html")
    assert answer.status == 404
    expect(page.get_by_role("heading", name="This page does not exist")).to_be_visible()
    api = stack.http.get(f"{stack.url}/api/no-such-thing", timeout=10)
    assert api.status_code == 404 and api.json()["error"]["code"]


def contrast(page: Page, selector: str) -> float:
    return page.locator(selector).first.evaluate("""node => {
        const rgb = (text) => text.match(/[\\d.]+/g).slice(0, 3).map(Number);
        const lum = (c) => { const v = c.map((x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
                             return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
        let back = node; let colour = "rgba(0, 0, 0, 0)";
        while (back && (colour === "rgba(0, 0, 0, 0)" || colour === "transparent")) {
            colour = getComputedStyle(back).backgroundColor; back = back.parentElement; }
        const [a, b] = [lum(rgb(getComputedStyle(node).color)), lum(rgb(colour))];
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }""")


def test_the_job_id_meets_wcag_aa_contrast_and_the_phone_drop_zone_says_choose(new_page, spectrum):
    page = new_page()
    page.goto("/results.html")
    assert contrast(page, ".job-id") >= 4.5
    phone = new_page(NARROW)
    phone.goto("/upload.html")
    assert phone.locator("#dropzone .big").inner_text() == "Choose a .zip or a project folder"  # what is shown
    expect(phone.get_by_text("Drop a")).to_be_hidden()
    save_screenshot(phone, "pages-upload-phone")


def test_live_regions_stay_quiet_while_only_the_clock_moves(page, stack, tmp_path):
    job = submit_code(stack, tmp_path, "quiet", BLOCKER_CODE)
    try:
        page.goto(f"/job.html?id={job['id']}")
        expect(page.locator("#job-state")).to_have_text("running", timeout=SLOW)
        expect(page.locator("#progress-text")).to_contain_text("running for")
        page.evaluate("""() => { window.announced = 0;
            const observer = new MutationObserver((changes) => { window.announced += changes.length; });
            for (const region of document.querySelectorAll('[aria-live]:not([aria-live=off])'))
                observer.observe(region, { childList: true, characterData: true, subtree: true }); }""")
        before = page.locator("#progress-text").inner_text()
        expect(page.locator("#progress-text")).not_to_have_text(before)  # the clock moved on
        assert page.evaluate("window.announced") == 0
    finally:
        stack.client.set_state(job["id"], "cancelled")


# 8. Notifications


def test_a_followed_job_notifies_the_browser_once_when_it_ends(new_page, stack, tmp_path):
    page = new_page()
    page.context.grant_permissions(["notifications"])
    page.add_init_script("""(() => { window.shown = [];
        const Real = window.Notification;
        class Recorded extends Real { constructor(title, options) { super(title, options); window.shown.push(title); } }
        Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
        Recorded.requestPermission = (...args) => Real.requestPermission(...args);
        window.Notification = Recorded; })();""")
    job = submit_code(stack, tmp_path, "notify", "import time\ntime.sleep(4)\nprint('done')\n")
    page.goto(f"/job.html?id={job['id']}")
    button = page.locator("#follow-job")
    expect(button).to_have_text("Notify me when it ends", timeout=SLOW)
    button.click()
    expect(button).to_have_text("Notifying you when it ends")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    page.wait_for_function("() => window.shown.length > 0")
    assert page.evaluate("window.shown") == [f"{job['name']}: succeeded"]
    expect(button).to_be_hidden()
    page.reload()
    expect(page.locator("#job-state")).to_have_text("succeeded")
    assert page.evaluate("window.shown") == [], "an ended job notifies once"


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook target on loopback that refuses its first call (so the retry shows) and records the rest."""

    calls: list = []
    refused: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not Receiver.refused:
            Receiver.refused.append(body)
            self.send_response(503)
        else:
            Receiver.calls.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_args):
        pass


@pytest.fixture
def receiver():
    Receiver.calls, Receiver.refused = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_the_account_webhook_is_called_signed_and_retried_when_a_job_ends(new_page, stack, tmp_path, receiver):
    user, password = make_user(stack)
    page = new_page(signed_in=False)
    sign_in_as(page, user["email"], password)
    page.goto("/account.html")
    page.fill("#webhook-url", receiver)
    page.get_by_role("button", name="Save").click()
    secret = page.locator("#webhook-secret")
    expect(secret).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    save_screenshot(page, "pages-account")
    token = NiasClient(stack.url, token=create_token(page, "webhook test"))
    job = token.submit(zip_entries(tmp_path / "hook.zip", {"code.py": "print('hook')\n"}), name=unique("hooked"))
    token.wait(job["id"], timeout_s=120)
    wait_until(lambda: Receiver.calls, timeout_s=60, message="the webhook was called")
    headers, body = Receiver.calls[0]
    expected = "sha256=" + hmac.new(secret.inner_text().encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Nias-Signature"] == expected
    sent = json.loads(body)
    assert sent["event"] == "job.finished" and sent["job"]["id"] == job["id"] and sent["job"]["state"] == "succeeded"
    assert Receiver.refused, "the first call was refused, and the webhook tried again"


# 9. Account and admin


def make_user(stack) -> tuple[dict, str]:
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    answer = stack.http.post(f"{stack.url}/api/users", json={"email": email, "password": password}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json(), password


def sign_in_as(page: Page, email: str, password: str) -> None:
    assert page.context.request.post("/api/auth/login", data={"email": email, "password": password}).ok


def create_token(page: Page, name: str) -> str:
    page.fill("#token-name", name)
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token-value")).to_have_text(re.compile(r"^nias_"))
    return page.locator("#new-token-value").inner_text()


def test_the_account_page_changes_the_password_names_and_expires_tokens_and_shows_this_servers_url(
        new_page, stack, console_errors):
    console_errors.allow(r"status of 400")
    user, password = make_user(stack)
    page = new_page(signed_in=False)
    sign_in_as(page, user["email"], password)
    page.goto("/account.html")
    expect(page.locator("#cli-snippet")).to_contain_text(f"export NIAS_URL={stack.url} NIAS_TOKEN=nias_…")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-name")).to_have_attribute("aria-invalid", "")
    expect(page.locator("#token-name-error")).to_contain_text("Name")
    page.select_option("#token-expiry", "7")
    token = create_token(page, "laptop CLI")
    expect(page.locator("#cli-snippet")).to_contain_text(f"NIAS_TOKEN={token}")
    row = page.locator("#tokens-table tr", has_text="laptop CLI")
    expect(row.locator("td").nth(3)).to_contain_text(str(time.gmtime(time.time() + 7 * 86400).tm_year))
    page.fill("#current-password", "not it")
    page.fill("#new-password", "another long password")
    page.get_by_role("button", name="Change password").click()
    console_errors.allow(r"status of 403")
    expect(page.locator("#password-error")).to_contain_text("current password is not right")
    page.fill("#current-password", password)
    page.fill("#new-password", "another long password")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-done")).to_contain_text("Your password is changed")
    assert requests.post(f"{stack.url}/api/auth/login", json={"email": user["email"], "password": "another long password"},
                         timeout=10).ok
    phone = new_page(NARROW, signed_in=False)
    sign_in_as(phone, user["email"], "another long password")
    phone.goto("/account.html")
    expect(phone.locator("#cli-snippet")).to_be_visible()
    save_screenshot(phone, "pages-account-phone")


def test_the_admin_disables_enables_resets_and_promotes_a_user_from_the_admin_page(page, stack):
    user, password = make_user(stack)
    page.goto("/admin.html")
    row = page.locator(f'#users-table tr[data-user-id="{user["id"]}"]')
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Disable {user['email']}").click()
    expect(row.locator(".user-disabled")).to_have_text("disabled")
    refused = requests.post(f"{stack.url}/api/auth/login", json={"email": user["email"], "password": password}, timeout=10)
    assert refused.status_code == 401
    row.get_by_role("button", name=f"Enable {user['email']}").click()
    expect(row.locator(".user-disabled")).to_have_count(0)
    assert requests.post(f"{stack.url}/api/auth/login", json={"email": user["email"], "password": password}, timeout=10).ok
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Reset the password of {user['email']}").click()
    new_password = page.locator("#reset-password-value")
    expect(new_password).to_have_text(re.compile(r".{12,}"))
    assert requests.post(f"{stack.url}/api/auth/login",
                         json={"email": user["email"], "password": new_password.inner_text()}, timeout=10).ok
    row.get_by_label(f"Role of {user['email']}").select_option("admin")
    expect(page.locator("#new-user-done")).to_contain_text("is now an admin")
    assert stack.http.get(f"{stack.url}/api/users", timeout=10).json()["users"][-1]["role"] in ("admin", "user")
    assert next(u for u in stack.http.get(f"{stack.url}/api/users", timeout=10).json()["users"]
                if u["id"] == user["id"])["role"] == "admin"
    stack.http.patch(f"{stack.url}/api/users/{user['id']}", json={"role": "user"}, timeout=10)
    save_screenshot(page, "pages-admin")


def test_sign_in_offers_registration_only_with_an_invitation_link_when_registration_is_by_invitation(
        new_page, stack, console_errors):
    console_errors.allow(r"status of 401")
    page = new_page(signed_in=False)
    page.goto("/signin.html")
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#register-form")).to_be_hidden()
    page.goto("/signin.html?invitation=abc123")
    expect(page.locator("#register-form")).to_be_visible()
    expect(page.locator("#register-invitation")).to_have_value("abc123")


def publish_dead_letter(stack, body: bytes, message_id: str) -> None:
    connection = connect(load_settings({}, queue_prefix=stack.prefix), attempts=3)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", Topology(stack.prefix).jobs, body,
                              pika.BasicProperties(delivery_mode=2, message_id=message_id))
    finally:
        connection.close()


def test_the_admin_page_explains_dead_letters_discards_them_and_shows_the_disk_use(page, stack):
    ids = [f"poison-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for message_id in ids:
        publish_dead_letter(stack, b"not json at all", message_id)
    wait_until(lambda: stack.http.get(f"{stack.url}/api/admin/dead-letters", timeout=10).json()["count"] >= 2,
               timeout_s=30, message="two dead letters")
    page.goto("/admin.html")
    expect(page.get_by_text("Messages NIAS could not process")).to_be_visible()
    rows = page.locator("#dead-table tbody tr", has_text="not json at all")
    expect(rows.first.locator("td").nth(1)).to_contain_text("not JSON")
    expect(page.locator('#storage-facts [data-fact="Uploads"] dd')).to_have_text(re.compile(r"\d"))
    expect(page.locator('#storage-facts [data-fact="Results kept for"] dd')).to_contain_text("days")
    save_screenshot(page, "pages-admin-dead-letters")
    before = page.locator("#dead-table tbody tr").count()
    page.get_by_role("button", name=f"Discard the dead letter {ids[0]}").click()
    expect(page.locator("#dead-table tbody tr")).to_have_count(before - 1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#discard-all-dead").click()
    expect(page.locator("#dead-table td.empty")).to_contain_text("No dead letters")
    assert stack.http.get(f"{stack.url}/api/admin/dead-letters", timeout=10).json()["count"] == 0


def test_a_drained_unit_finishes_its_job_takes_no_more_and_takes_jobs_again_when_brought_back(page, stack, tmp_path):
    blocker = submit_code(stack, tmp_path, "drain blocker", BLOCKER_CODE)
    running = wait_state(stack, blocker["id"], "running")
    drained, other = running["unit"], {"unit-1": "unit-2", "unit-2": "unit-1"}[running["unit"]]
    extra: list[dict] = []
    try:
        page.goto("/admin.html")
        row = page.locator(f'#units-table tr[data-unit="{drained}"]')
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name=f"Drain {drained}").click()
        expect(row.locator(".unit-drain")).to_have_text("draining")
        wait_until(lambda: f"Consumer {drained} draining" in stack.log_path.read_text(errors="replace"), timeout_s=30,
                   message="the consumer heard the drain")
        assert stack.client.job(blocker["id"])["state"] == "running", "draining lets the current job run on"
        stack.client.set_state(blocker["id"], "cancelled")
        stack.client.wait(blocker["id"], timeout_s=60)
        page.reload()
        expect(row.locator(".unit-drain")).to_have_text("drained", timeout=SLOW)
        save_screenshot(page, "pages-admin-drained")
        quick = [submit_code(stack, tmp_path, "after drain") for _ in range(3)]
        extra += quick
        assert {stack.client.wait(job["id"], timeout_s=120)["unit"] for job in quick} == {other}

        row.get_by_role("button", name=f"Bring back {drained}").click()
        expect(row.locator(".unit-drain")).to_have_count(0)
        holders = [submit_code(stack, tmp_path, "back", BLOCKER_CODE) for _ in range(2)]
        extra += holders
        units = {wait_state(stack, job["id"], "running", timeout_s=90)["unit"] for job in holders}
        assert units == {drained, other}, "the unit brought back takes jobs again"
    finally:
        stack.http.put(f"{stack.url}/api/admin/units/{drained}/drain", json={"drain": False}, timeout=10)
        for job in [blocker, *extra]:
            try:
                stack.client.set_state(job["id"], "cancelled")
            except Exception:  # noqa: BLE001 - finished already
                pass


# 2. Dates and times, and 4. what ran


ZONE = re.compile(r"\d{4}.*\d\d:\d\d:\d\d.*(UTC|GMT|[A-Z]{2,5}[+-]?\d*)")


def test_every_time_has_its_date_and_zone_and_a_paused_duration_says_so(new_page, stack, tmp_path):
    job = submit_code(stack, tmp_path, "dated", "import time\nfor i in range(30):\n    print(i, flush=True)\n"
                                                "    time.sleep(0.2)\n")
    wait_state(stack, job["id"], "running")
    stack.client.set_state(job["id"], "paused")
    wait_state(stack, job["id"], "paused")
    time.sleep(2)  # paused for a while, so the paused time shows
    stack.client.set_state(job["id"], "running")
    done = stack.client.wait(job["id"], timeout_s=120)
    assert done["paused_s"] > 1
    page = new_page()
    open_job(page, done)
    for fact in ("Submitted", "Started", "Finished"):
        expect(page.locator(f'[data-fact="{fact}"] dd')).to_have_text(ZONE)
    expect(page.locator('[data-fact="Ran for"] dd')).to_contain_text(re.compile(r"\(paused [\d.]+ s not counted\)"))
    expect(page.locator("#history time").first).to_have_attribute("title", ZONE)
    page.goto(f"/results.html?q={done['name'].replace(' ', '+')}")
    submitted = page.locator("#jobs-table td.col-submitted time")
    expect(submitted).to_have_text(re.compile(r"ago|just now"))
    expect(submitted).to_have_attribute("title", ZONE)
    expect(page.locator("#jobs-table th.col-duration")).to_have_attribute("title", re.compile("paused time is left out"))


def test_what_ran_shows_the_projects_files_and_downloads_its_zip(page, spectrum):
    open_job(page, spectrum)
    page.get_by_role("button", name="View its files").click()
    code = page.get_by_role("button", name="View spectrum/eeg/channels.py")
    expect(code).to_be_visible()
    code.click()
    expect(page.locator("#project-file pre")).to_contain_text('CHANNELS = ["Fz"')
    with page.expect_download() as download:
        page.locator("#download-project").click()
    with zipfile.ZipFile(download.value.path()) as archive:
        assert "spectrum/code.py" in archive.namelist()


def test_run_again_opens_a_prefilled_form_marks_bad_fields_and_queues_the_changed_job(page, stack, crashed,
                                                                                      console_errors):
    console_errors.allow(r"status of 400")
    open_job(page, crashed)
    page.locator("#action-rerun").click()
    dialog = page.locator("#rerun-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#rerun-name")).to_have_value(f"{crashed['name']} (run 2)")
    expect(page.locator("#rerun-priority")).to_have_value(str(crashed["priority"]))
    expect(page.locator("#rerun-memory_mb")).to_have_value(str(crashed["run_limits"]["memory_mb"]))
    save_screenshot(page, "pages-run-again-form")
    page.fill("#rerun-priority", "15")
    page.fill("#rerun-timeout_s", "0")
    page.get_by_role("button", name="Queue the new job").click()
    expect(page.locator("#rerun-priority")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#rerun-timeout_s")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#rerun-error")).to_contain_text("priority")
    page.fill("#rerun-priority", "6")
    page.fill("#rerun-timeout_s", "30")
    page.fill("#rerun-memory_mb", "512")
    page.get_by_role("button", name="Queue the new job").click()
    expect(page).not_to_have_url(re.compile(crashed["id"]), timeout=SLOW)
    new = stack.client.job(page.url.split("id=")[1].split("&")[0])
    assert (new["name"], new["priority"], new["timeout_s"], new["limits"], new["rerun_of"]) == (
        f"{crashed['name']} (run 2)", 6, 30, {"memory_mb": 512}, crashed["id"])
    stack.client.wait(new["id"], timeout_s=120)


def test_a_results_rows_run_again_opens_the_form_on_the_jobs_page(page, crashed):
    page.goto(f"/results.html?q={crashed['name'].replace(' ', '+')}")
    page.locator(f'tr[data-job-id="{crashed["id"]}"] [data-action="rerun"]').click()
    expect(page.locator("#rerun-dialog")).to_be_visible(timeout=SLOW)
    expect(page.locator("#rerun-name")).to_have_value(f"{crashed['name']} (run 2)")


def test_the_job_page_and_its_log_fit_a_phone(new_page, spectrum):
    phone = new_page(NARROW)
    open_job(phone, spectrum)
    expect(phone.locator("#log-setup")).to_be_visible()
    wide = phone.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 400, f"the job page is {wide} px wide on a 400 px phone"
    save_screenshot(phone, "pages-job-finished-spectrum-phone")
