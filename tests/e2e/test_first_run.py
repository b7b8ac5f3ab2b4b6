"""A first visit: signed out, every page leads to the sign-in form without one error in the browser's
console; and when processing units run jobs without a sandbox, `make up` and the Admin page say so."""
from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support.browser import (  # noqa: F401 (fixtures)
    admin_credentials, browser, console_errors, new_page, save_screenshot, sign_in,
)
from tests.support.stack import LocalStack, wait_until

PAGES = ["/", "/upload.html", "/results.html", "/job.html?id=0123456789abcdef0123456789abcdef", "/account.html",
         "/admin.html", "/signin.html"]


def _console_errors(page: Page) -> list[str]:
    """Every console message of type error the page writes from now on."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    return errors


@pytest.mark.parametrize("path", PAGES)
def test_a_signed_out_visit_shows_the_sign_in_form_without_a_console_error(new_page, path):
    page = new_page(signed_in=False)
    errors = _console_errors(page)
    page.goto(path)
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/signin\.html(\?next=.*)?$"))
    page.wait_for_load_state("networkidle")
    assert errors == []


def test_a_signed_out_visitor_is_sent_on_to_the_page_asked_for_after_signing_in(new_page, stack):
    page = new_page(signed_in=False)
    errors = _console_errors(page)
    page.goto("/upload.html")
    expect(page).to_have_url(re.compile(r"/signin\.html\?next=%2Fupload\.html$"))
    email, password = admin_credentials(stack)
    page.fill("#signin-email", email)
    page.fill("#signin-password", password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/upload\.html$"))
    expect(page.locator("#account")).to_contain_text(email)
    assert errors == []


def test_the_session_endpoint_answers_200_whether_or_not_the_asker_is_signed_in(stack):
    signed_out = requests.get(f"{stack.url}/api/session", timeout=10)
    assert signed_out.status_code == 200 and signed_out.json() == {"signed_in": False}
    browser_like = requests.Session()
    email, password = admin_credentials(stack)
    assert browser_like.post(f"{stack.url}/api/auth/login", json={"email": email, "password": password},
                             timeout=10).ok
    signed_in = browser_like.get(f"{stack.url}/api/session", timeout=10).json()
    assert signed_in["signed_in"] is True
    assert signed_in["user"]["email"] == email and signed_in["user"]["csrf_token"]
    cookie = browser_like.cookies.get("nias_session")
    csrf = {"X-CSRF-Token": signed_in["user"]["csrf_token"]}
    assert browser_like.post(f"{stack.url}/api/auth/logout", headers=csrf, timeout=10).status_code == 204
    ended = requests.get(f"{stack.url}/api/session", cookies={"nias_session": cookie}, timeout=10)
    assert ended.status_code == 200 and ended.json() == {"signed_in": False}


# --- jobs without a sandbox -------------------------------------------------------------------


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("unsandboxed-first-run"), units=1, NIAS_SANDBOX="off") as stack:
        yield stack


def _admin_page(browser, stack) -> Page:
    context = browser.new_context(base_url=stack.url)
    context.set_default_timeout(15_000)
    sign_in(context, *admin_credentials(stack))
    return context.new_page()


def test_make_up_warns_at_start_when_units_run_jobs_without_a_sandbox(unsandboxed):
    log = unsandboxed.log_path.read_text(errors="replace")
    warning = next(line for line in log.splitlines() if "WITHOUT A SANDBOX" in line)
    assert " WARNING launcher " in warning
    assert "unit-1 runs jobs WITHOUT A SANDBOX (NIAS_SANDBOX=off)" in warning
    assert "every file on this host that its user may read" in warning and "network" in warning
    assert log.index("WITHOUT A SANDBOX") < log.index("NIAS is up")


def test_units_report_their_sandbox_to_the_backend(unsandboxed):
    units = wait_until(lambda: unsandboxed.http.get(f"{unsandboxed.url}/api/units", timeout=10).json()["units"],
                       message="unit-1 announced itself")
    assert [(unit["name"], unit["sandbox"]) for unit in units] == [("unit-1", "none")]


def test_the_admin_page_shows_a_banner_when_a_unit_runs_jobs_without_a_sandbox(browser, unsandboxed):
    page = _admin_page(browser, unsandboxed)
    errors = _console_errors(page)
    page.goto("/admin.html")
    banner = page.locator("#sandbox-warning")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("unit-1")
    expect(banner).to_contain_text("without a sandbox")
    save_screenshot(page, "admin-unsandboxed")
    page.context.close()
    assert errors == []


def test_the_admin_page_shows_no_such_banner_when_every_unit_uses_bubblewrap(browser, stack):
    page = _admin_page(browser, stack)
    page.goto("/admin.html")
    expect(page.locator("#users-table")).to_contain_text(admin_credentials(stack)[0])
    expect(page.locator("#sandbox-warning")).to_be_hidden()
    assert "WITHOUT A SANDBOX" not in stack.log_path.read_text(errors="replace")
    page.context.close()
