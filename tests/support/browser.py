"""Chromium for the end-to-end tests: Debian's build driven by Playwright.

Import the fixtures into a test module (`from tests.support.browser import browser, page, ...`).
Every page records the console's errors and uncaught exceptions; a test fails on any it did
not announce with `console_errors.allow(...)`.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
LAPTOP = {"width": 1280, "height": 860}
NARROW = {"width": 400, "height": 860}


@dataclass
class ConsoleErrors:
    """Errors a page wrote to its console, and the ones the test expects."""

    seen: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def record(self, text: str) -> None:
        logger.info("Browser console error: %s", text)
        self.seen.append(text)

    def unexpected(self) -> list[str]:
        return [text for text in self.seen if not any(p.search(text) for p in self.allowed)]


def save_screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot at test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


def admin_credentials(stack) -> tuple[str, str]:
    return stack.env["NIAS_ADMIN_EMAIL"], stack.env["NIAS_ADMIN_PASSWORD"]


def sign_in(context: BrowserContext, email: str, password: str) -> None:
    """Give the context a session cookie, as the sign-in page would."""
    answer = context.request.post("/api/auth/login", data={"email": email, "password": password})
    assert answer.ok, answer.text()


def _watch(page: Page, errors: ConsoleErrors) -> None:
    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.record(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.record(f"uncaught: {exc}"))


def open_page(browser: Browser, stack, errors: ConsoleErrors, viewport: dict | None = None, *,
              signed_in: bool = True) -> Page:
    """A page on `stack` in a fresh browser context (close `page.context` after), signed in as the
    stack's admin unless `signed_in=False`; its console errors go to `errors`."""
    context = browser.new_context(base_url=stack.url, viewport=viewport or LAPTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    if signed_in:
        sign_in(context, *admin_credentials(stack))
    page = context.new_page()
    _watch(page, errors)
    return page


def assert_no_unexpected(errors: ConsoleErrors) -> None:
    unexpected = errors.unexpected()
    assert not unexpected, f"the browser console reported errors: {unexpected}"


@contextmanager
def admin_page(browser: Browser, stack, errors: ConsoleErrors) -> Iterator[Page]:
    """A page signed in as the admin of a stack of the test module's own (the `new_page` fixture
    serves the shared one); at the end, a console error the test did not allow fails it."""
    page = open_page(browser, stack, errors)
    try:
        yield page
    finally:
        page.context.close()
    assert_no_unexpected(errors)


@pytest.fixture
def new_page(browser: Browser, stack, console_errors: ConsoleErrors) -> Iterator[Callable[..., Page]]:
    """Opens a page in a fresh browser context, signed in as the stack's admin unless
    `signed_in=False` (`viewport=NARROW` for a narrow window)."""
    contexts: list[BrowserContext] = []

    def open_shared_page(viewport: dict | None = None, *, signed_in: bool = True) -> Page:
        page = open_page(browser, stack, console_errors, viewport, signed_in=signed_in)
        contexts.append(page.context)
        return page

    yield open_shared_page
    for context in contexts:
        context.close()
    assert_no_unexpected(console_errors)


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    """A signed-in page on a laptop-sized window, in a fresh context."""
    return new_page()


# Sync Playwright can run only once per thread, and every test module that imports `browser` gets
# its own session-scoped copy of the fixture: they share one Chromium, closed by the last user.
_shared: dict = {"users": 0}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if "browser" not in _shared:
        playwright = sync_playwright().start()
        _shared["playwright"] = playwright
        _shared["browser"] = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    _shared["users"] += 1
    try:
        yield _shared["browser"]
    finally:
        _shared["users"] -= 1
        if not _shared["users"]:
            _shared.pop("browser").close()
            _shared.pop("playwright").stop()
