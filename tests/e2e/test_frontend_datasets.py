"""Data sets in the pages, in Chromium: uploaded and listed on the Account page, picked on the Upload
page for a job whose page lists them with their digests, not deleted while a job naming them waits
(the server's reason shown), and shared with another user by e-mail."""
from __future__ import annotations

import hashlib
import os
import re
import uuid

from playwright.sync_api import Page, expect

from tests.support.browser import (  # noqa: F401 (fixtures)
    browser, console_errors, new_page, save_screenshot,
)
from tests.support.projects import zip_entries

SLOW = 120_000  # ms: the job's environment may have to be built first
READER = """
import hashlib
digest = hashlib.sha256(open("data/NAME/values.bin", "rb").read()).hexdigest()
open("output/seen.txt", "w").write(digest)
"""
WAITER = "import time\ntime.sleep(600)\n"


def upload_on_account_page(page: Page, name: str, path) -> None:
    page.goto("/account.html")
    page.fill("#dataset-name", name)
    page.set_input_files("#dataset-file", str(path))
    page.click("#upload-dataset")
    expect(page.locator(f'#datasets-table tr[data-dataset="{name}"]')).to_be_visible()


def make_user(stack) -> tuple[str, str]:
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    answer = stack.http.post(f"{stack.url}/api/users", json={"email": email, "password": password}, timeout=10)
    assert answer.status_code == 201, answer.text
    return email, password


def test_a_data_set_uploaded_on_the_account_page_is_picked_on_the_upload_page_and_listed_on_the_job_page(
        new_page, stack, tmp_path):
    data = os.urandom(50_000)
    source = tmp_path / "values.bin"
    source.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    name = f"spectra-{uuid.uuid4().hex[:8]}"
    page = new_page()
    upload_on_account_page(page, name, source)
    row = page.locator(f'#datasets-table tr[data-dataset="{name}"]')
    expect(row).to_contain_text("49 KB")
    expect(row.locator(f'span[title="{digest}"]')).to_have_text(digest[:12])
    save_screenshot(page, "account-datasets")

    project = zip_entries(tmp_path / "reader.zip", {"code.py": READER.replace("NAME", name)})
    page.goto("/upload.html")
    expect(page.locator("#datasets-field")).to_be_visible()
    page.set_input_files("#zip-input", str(project))
    page.locator(f'#dataset-choice input[value="{name}"]').check()
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/job\.html\?id="))
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    listed = page.locator(f'#job-datasets li[data-dataset="{name}"]')
    expect(listed).to_contain_text(digest[:12])
    expect(listed.locator(f'span[title="{digest}"]')).to_have_count(1)
    expect(page.locator("#job-datasets li")).to_have_count(1)  # once, not again from the provenance record
    save_screenshot(page, "job-datasets")


def test_deleting_a_data_set_a_waiting_job_names_is_refused_with_the_servers_reason(
        new_page, stack, console_errors, tmp_path):
    console_errors.allow(r"status of 409")
    source = tmp_path / "values.bin"
    source.write_bytes(b"1,2,3\n")
    name = f"held-{uuid.uuid4().hex[:8]}"
    page = new_page()
    upload_on_account_page(page, name, source)
    job = stack.client.submit(zip_entries(tmp_path / "waiter.zip", {"code.py": WAITER}), datasets=[name])
    try:
        page.reload()
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator(f'#datasets-table tr[data-dataset="{name}"] button[data-action="delete"]').click()
        expect(page.locator("#datasets-error")).to_be_visible()
        expect(page.locator("#datasets-error")).to_contain_text(job["id"])
        expect(page.locator(f'#datasets-table tr[data-dataset="{name}"]')).to_be_visible()
    finally:
        cancelled = stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"}, timeout=10)
        assert cancelled.status_code == 200, cancelled.text


def test_a_data_set_shared_by_e_mail_is_listed_for_the_other_user_with_its_owner(new_page, stack, tmp_path):
    source = tmp_path / "values.bin"
    source.write_bytes(b"shared data\n")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    page = new_page()
    upload_on_account_page(page, name, source)
    email, password = make_user(stack)
    row = page.locator(f'#datasets-table tr[data-dataset="{name}"]')
    row.locator('input[type="email"]').fill(email)
    row.locator('button[data-action="share"]').click()
    expect(page.locator(f'#datasets-table tr[data-dataset="{name}"]')).to_contain_text(f"shared with {email}")

    other = new_page(signed_in=False)
    assert other.context.request.post("/api/auth/login", data={"email": email, "password": password}).ok
    other.goto("/account.html")
    theirs = other.locator(f'#datasets-table tr[data-dataset="{name}"]')
    expect(theirs).to_contain_text(stack.env["NIAS_ADMIN_EMAIL"])
    expect(theirs.locator('button[data-action="delete"]')).to_have_count(0)
    other.goto("/upload.html")
    expect(other.locator("#dataset-choice")).to_contain_text(f"shared by {stack.env['NIAS_ADMIN_EMAIL']}")
