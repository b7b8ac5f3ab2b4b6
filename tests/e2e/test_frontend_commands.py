"""The command form on the Upload page, the sweep page and the Results sweep row, in Chromium."""
from __future__ import annotations

import re
import shutil
import uuid
import zipfile

from playwright.sync_api import expect

from tests.e2e.test_commands_and_sweeps import commands_dir, params_zip, welch  # noqa: F401 (fixtures)
from tests.support.browser import browser, console_errors, new_page, page, save_screenshot  # noqa: F401 (fixtures)

SLOW = 60_000  # ms: generous waits for jobs to change state


def test_the_command_form_is_drawn_from_its_parameters_and_queues_a_checked_job(page, stack, welch, console_errors):
    console_errors.allow(r"status of 400")
    page.goto("/upload.html")
    page.get_by_role("radio", name="Run a command").check()
    expect(page.locator("#upload-form")).to_be_hidden()
    page.get_by_label("Command", exact=True).select_option("welch-psd")
    expect(page.locator("#command-description")).to_have_text("Estimates the PSD of each channel of a recording.")
    segment = page.locator("#param-nperseg")
    expect(segment).to_have_attribute("type", "number")
    expect(segment).to_have_attribute("min", "64")
    expect(segment).to_have_attribute("max", "65536")
    expect(segment).to_have_value("2048")
    expect(page.locator("#param-window option")).to_have_text(["hann", "hamming", "blackman"])
    expect(page.locator("#param-detrend")).to_have_attribute("type", "checkbox")
    expect(page.locator("#param-label")).to_have_attribute("required", "")
    save_screenshot(page, "command-form")
    segment.fill("8")
    page.locator("#param-label").fill("s3")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#command-error")).to_contain_text("Parameter 'nperseg' must be at least 64")
    expect(segment).to_be_focused()
    save_screenshot(page, "command-form-refused")
    segment.fill("4096")
    page.locator("#param-window").select_option(label="blackman")
    page.locator("#param-detrend").check()
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page).to_have_url(re.compile(r"/job\.html\?id=\w+"), timeout=SLOW)
    job_id = page.url.split("id=")[1]
    job = stack.client.wait(job_id, timeout_s=120)
    assert job["params"] == {"nperseg": 4096, "window": "blackman", "label": "s3", "detrend": True}
    assert job["command"] == "welch-psd" and job["state"] == "succeeded"
    expect(page.locator("#params-table")).to_contain_text('"blackman"')
    expect(page.locator("#params-origin")).to_contain_text("From the command welch-psd")


def test_an_admin_sees_the_broken_commands_and_why_on_the_upload_page(page, commands_dir, welch):
    folder = commands_dir / "broken-for-page"
    folder.mkdir()
    (folder / "code.py").write_text("print(1)\n")
    (folder / "command.toml").write_text("[command\n")
    try:
        page.goto("/upload.html")
        page.get_by_role("radio", name="Run a command").check()
        expect(page.locator("#command-broken")).to_contain_text("broken-for-page: command.toml is not valid TOML")
        expect(page.locator("#command-select option", has_text="broken-for-page")).to_have_count(0)
    finally:
        shutil.rmtree(folder)


def test_the_sweep_page_counts_lists_and_sorts_its_jobs_by_their_metrics(page, stack, tmp_path, console_errors):
    sweep = stack.client.submit(params_zip(tmp_path), name=f"grid {uuid.uuid4().hex[:6]}",
                                sweep={"alpha": [0.1, 0.2, 0.5], "mode": ["fast", "exact"]})
    stack.client.wait_sweep(sweep["id"], timeout_s=300)
    page.goto(f"/sweep.html?id={sweep['id']}")
    expect(page.locator('#sweep-counts [data-state="succeeded"] dd')).to_have_text("6", timeout=SLOW)
    rows = page.locator("#sweep-table tbody tr")
    expect(rows).to_have_count(6)
    expect(page.locator("#sweep-table thead")).to_contain_text("alpha")
    expect(page.locator("#sweep-table thead")).to_contain_text("score")
    page.locator('button[data-sort="metric:score"]').click()  # metrics sort best (highest) first
    expect(page.locator('#sweep-table tbody tr td[data-metric="score"]').first).to_have_text("1")
    expect(rows.first).to_contain_text("exact")
    page.locator('button[data-sort="metric:score"]').click()
    expect(page.locator('#sweep-table tbody tr td[data-metric="score"]').first).to_have_text("0.1")
    save_screenshot(page, "sweep-page")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download every result").click()
    path = tmp_path / "all.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        assert "alpha=0.5_mode=exact/metrics.json" in archive.namelist()
    page.goto("/results.html")
    row = page.locator(f'#sweeps-list li[data-sweep-id="{sweep["id"]}"]')
    expect(row).to_be_visible()
    row.locator("summary").click()
    expect(row.locator(".sweep-jobs li")).to_have_count(6)
    for job in sweep["jobs"]:  # listed with the sweep, not again among the jobs
        expect(page.locator(f'#jobs-table tr[data-job-id="{job["id"]}"]')).to_have_count(0)
    save_screenshot(page, "results-sweep-row")


def test_cancelling_a_sweep_from_its_page_ends_the_jobs_still_going_and_failed_ones_run_again(page, stack,
                                                                                              tmp_path):
    sweep = stack.client.submit(params_zip(tmp_path), sweep=[{"fail": True}] + [{"sleep": 120, "n": n}
                                                                                 for n in range(3)])
    failed = sweep["jobs"][0]["id"]
    stack.client.wait(failed, timeout_s=120)
    page.goto(f"/sweep.html?id={sweep['id']}")
    page.get_by_role("button", name="Cancel the jobs not ended").click()
    expect(page.locator('#sweep-counts [data-state="cancelled"] dd')).to_have_text("3", timeout=SLOW)
    expect(page.get_by_role("button", name="Cancel the jobs not ended")).to_be_hidden()
    save_screenshot(page, "sweep-cancelled")
    page.get_by_role("button", name="Re-run the failed jobs").click()
    expect(page.locator(f'#sweep-table tr[data-job-id="{failed}"]')).to_have_count(0, timeout=SLOW)
    rerun = [job for job in stack.client.sweep(sweep["id"])["jobs"] if job["rerun_of"] == failed]
    assert len(rerun) == 1 and rerun[0]["params"] == {"fail": True}
    expect(page.locator(f'#sweep-table tr[data-job-id="{rerun[0]["id"]}"]')).to_have_count(1)


def test_a_zip_upload_with_a_sweep_opens_the_sweep_page(page, stack, tmp_path):
    path = params_zip(tmp_path)
    page.goto("/upload.html")
    page.locator("#zip-input").set_input_files(str(path))
    page.locator("#job-params").fill('{"label": "fixed"}')
    page.locator("#job-sweep").fill('{"alpha": [0.1, 0.2]}')
    page.get_by_role("button", name="Upload and run").click()
    expect(page).to_have_url(re.compile(r"/sweep\.html\?id=\w+"), timeout=SLOW)
    expect(page.locator("#sweep-table tbody tr")).to_have_count(2)
    sweep = stack.client.sweep(page.url.split("id=")[1])
    assert sorted(job["params"]["alpha"] for job in sweep["jobs"]) == [0.1, 0.2]
    assert all(job["params"]["label"] == "fixed" for job in sweep["jobs"])
