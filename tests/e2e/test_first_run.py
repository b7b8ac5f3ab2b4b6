"""A first run: `make up` from a fresh copy of the repository in a 0700 home, with a `mktemp -d` data dir
whose path holds a space, runs a job that cannot read the data dir's private/. A first visit: signed
out, every page leads to the sign-in form without one error in the browser's console; and when
processing units run jobs without a sandbox, `make up`, the Home page and the Admin page say so. As an
ordinary user, `make up` runs jobs as that user and says what it cannot give them (cgroups, uids)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support.browser import (  # noqa: F401 (fixtures)
    admin_credentials, browser, console_errors, new_page, save_screenshot, sign_in,
)
from nias.client import NiasClient
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, delete_queues, free_port_block, wait_until

ROOT = Path(__file__).resolve().parents[2]
OLD_UNIT_PORT = 8090  # where unit-1 listened by default before the web port was set to it
START_TIMEOUT_S = 150
PRIVATE_PROBE = """import os, pathlib, sys
private = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else {private!r})
for what, read in (("private", lambda: os.listdir(private)), ("store", lambda: (private / "nias.db").read_bytes())):
    try:
        read()
        print(what, "READABLE")
    except OSError as exc:
        print(what, "not readable:", type(exc).__name__)
print("working in", os.getcwd().replace("/", ":"))  # spelled so: the log shows the work dir's own paths relative
"""

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
    assert signed_out.status_code == 200 and signed_out.json() == {"signed_in": False, "registration": "invite"}
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
    assert ended.status_code == 200 and ended.json() == {"signed_in": False, "registration": "invite"}


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
    warning = unsandboxed.http.get(f"{unsandboxed.url}/api/summary", timeout=10).json()["sandbox_warning"]
    assert warning.startswith("unit-1 runs jobs without a sandbox, so a job there can read every file")


@pytest.mark.parametrize("path,warning,text", [
    ("/admin.html", "#sandbox-warning", r"unit-1 runs jobs without a sandbox"),
    ("/", "#sandbox-note", r"^unit-1 runs jobs without a sandbox, [^.]*\.$"),  # one sentence
], ids=["admin-banner", "home-sentence"])
def test_the_admin_page_and_the_home_page_warn_an_admin_when_a_unit_runs_jobs_without_a_sandbox(
        browser, unsandboxed, path, warning, text):
    page = _admin_page(browser, unsandboxed)
    errors = _console_errors(page)
    page.goto(path)
    expect(page.locator(warning)).to_be_visible()
    expect(page.locator(warning)).to_have_text(re.compile(text))
    save_screenshot(page, f"{warning[1:]}-unsandboxed")
    page.context.close()
    assert errors == []


def test_the_home_page_keeps_the_sandbox_sentence_from_users_who_are_not_admins(browser, unsandboxed):
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    created = unsandboxed.http.post(f"{unsandboxed.url}/api/users", json={"email": email, "password": password,
                                                                          "role": "user"}, timeout=10)
    assert created.status_code == 201, created.text
    context = browser.new_context(base_url=unsandboxed.url)
    context.set_default_timeout(15_000)
    sign_in(context, email, password)
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#unit-list")).to_contain_text("unit-1")
    expect(page.locator("#queue-live")).to_contain_text("Updated")
    expect(page.locator("#sandbox-note")).to_be_hidden()
    context.close()


def test_the_admin_page_shows_no_such_banner_when_every_unit_uses_bubblewrap(browser, stack):
    page = _admin_page(browser, stack)
    page.goto("/")
    expect(page.locator("#unit-list")).to_contain_text("unit-1")
    expect(page.locator("#sandbox-note")).to_be_hidden()
    page.goto("/admin.html")
    expect(page.locator("#users-table")).to_contain_text(admin_credentials(stack)[0])
    expect(page.locator("#sandbox-warning")).to_be_hidden()
    assert stack.http.get(f"{stack.url}/api/summary", timeout=10).json()["sandbox_warning"] is None
    assert "WITHOUT A SANDBOX" not in stack.log_path.read_text(errors="replace")
    page.context.close()


# --- a first run from a fresh copy ---------------------------------------------------------------


def _copy_of_the_repository(home: Path) -> Path:
    """The repository as a fresh clone has it (no .venv, no data), run with this checkout's Python."""
    copy = home / "nias"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "shared-volume", "__pycache__", ".pytest_cache", "node_modules"))
    (copy / "shared-volume").mkdir()
    return copy


def _wait_for_ready(launcher: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "NIAS_READY" in text:
            return text
        assert launcher.poll() is None, f"make up exited with code {launcher.returncode}:\n{text[-6000:]}"
        time.sleep(0.3)
    raise AssertionError(f"make up did not start within {START_TIMEOUT_S} s:\n{log.read_text()[-6000:]}")


def _stop(launcher: subprocess.Popen) -> None:
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(launcher.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(params=["mktemp data dir with a space", "default data dir in the copy"])
def first_run(request, tmp_path):
    """`make up` as root from a copy in a 0700 home, with NIAS_PORT on the old default unit port and a data
    dir made by `mktemp -d` with a space in its path, or the default one inside the copy:
    (its output up to NIAS_READY, the data dir, the folder job users cannot pass through, a client)."""
    assert os.geteuid() == 0, "this first run is the one as root"
    home = Path(tempfile.mkdtemp(prefix="nias-home-"))  # 0700, as /root is
    copy = _copy_of_the_repository(home)
    prefix, token = f"test-{uuid.uuid4().hex[:10]}", f"nias_test_{uuid.uuid4().hex}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("NIAS_")}
    env.update(NIAS_PORT=str(OLD_UNIT_PORT), NIAS_UNITS="1", NIAS_QUEUE_PREFIX=prefix, NIAS_ADMIN_TOKEN=token,
               NIAS_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2F")
    if request.param.startswith("mktemp"):
        data_dir = Path(tempfile.mkdtemp(prefix="nias data "))  # 0700, and a space in its path
        env["NIAS_DATA_DIR"], closed = str(data_dir), data_dir
    else:
        data_dir, closed = copy / "shared-volume", home
    log = tmp_path / "make-up.log"
    with open(log, "ab") as output:
        launcher = subprocess.Popen([sys.executable, str(copy / "tools" / "launcher.py")], cwd=copy, env=env,
                                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    place = None
    try:
        text = _wait_for_ready(launcher, log)
        place = re.search(r"work dirs in (/var/tmp/nias-\w+)/work/<unit>", text)
        yield text, data_dir, closed, NiasClient(f"http://127.0.0.1:{OLD_UNIT_PORT}", token=token)
    finally:
        _stop(launcher)
        delete_queues(prefix)
        for folder in [home, data_dir] + ([Path(place[1])] if place else []):
            shutil.rmtree(folder, ignore_errors=True)


def test_make_up_from_a_fresh_copy_in_a_closed_home_runs_a_job_that_cannot_read_the_data_dirs_private_folder(
        first_run, tmp_path):
    text, data_dir, closed, client = first_run
    assert closed.stat().st_mode & 0o777 == 0o700
    # The work dirs moved where the job users can pass through, and make up said so.
    moved = re.search(r"jobs:     work dirs in (/var/tmp/nias-\w+)/work/<unit>, environments in (\S+)", text)
    assert moved, text[-4000:]
    place = Path(moved[1])
    assert place.stat().st_mode & 0o777 == 0o711 and place.stat().st_uid == 0
    assert moved[2] == f"{place}/envs"
    assert f"Jobs run as other users, who cannot pass through {closed}: their work dirs" in text
    # The closing block: the URL on the old unit port, the first admin's password, the data dir, one sandboxed unit.
    assert f"NIAS is up: http://127.0.0.1:{OLD_UNIT_PORT}/" in text
    assert re.search(r"Started unit-1 \(pid \d+\) at http://127\.0\.0\.1:(?!8090)\d+", text)
    assert f"  data dir: {data_dir}" in text and "  units:    1; jobs run in a bubblewrap sandbox" in text
    signed_in = re.search(r"  sign in:  (\S+) with the password (\S+) ", text)
    assert signed_in, text[-4000:]
    login = requests.post(f"{client.base_url}/api/auth/login",
                          json={"email": signed_in[1], "password": signed_in[2]}, timeout=10)
    assert login.status_code == 200, login.text
    # A job runs, in the moved work dir, and cannot read private/ (the store, the session key).
    probe = PRIVATE_PROBE.format(private=str(data_dir / "private"))
    job = client.submit(zip_entries(tmp_path / "probe.zip", {"code.py": probe}))
    done = client.wait(job["id"], timeout_s=120)
    log = client.log(job["id"])
    assert done["state"] == "succeeded", (done, log)
    assert "private not readable" in log and "store not readable" in log and "READABLE" not in log
    assert f"working in {str(place).replace('/', ':')}:work:unit-1:" in log
    assert (data_dir / "private" / "nias.db").exists()  # the store stayed where it was


NOBODY = 65534


@pytest.fixture(scope="module")
def user_python(tmp_path_factory) -> Path:
    """An interpreter an ordinary user may run (this checkout's venv may sit under a closed home),
    with the project installed from this checkout, as a researcher's own venv would be."""
    folder = Path(tempfile.mkdtemp(prefix="nias-user-venv-"))
    folder.chmod(0o755)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(folder)], check=True, timeout=120)
    subprocess.run([str(Path(sys.executable).with_name("uv")), "pip", "install", "--python", str(folder / "bin" / "python"),
                    "-q", "-r", str(ROOT / "requirements-dev.txt")], check=True, timeout=300, cwd=ROOT)
    yield folder / "bin" / "python"
    shutil.rmtree(folder, ignore_errors=True)


def test_make_up_as_an_ordinary_user_runs_jobs_as_that_user_and_says_what_it_cannot_give_them(user_python, tmp_path):
    home = Path(tempfile.mkdtemp(prefix="nias-user-home-"))
    os.chown(home, NOBODY, NOBODY)
    home.chmod(0o700)  # a home of its own, closed to others, as Debian and Ubuntu make them
    port = free_port_block(1)
    prefix, token = f"test-{uuid.uuid4().hex[:10]}", f"nias_test_{uuid.uuid4().hex}"
    env = {"PATH": f"{user_python.parent}:/usr/bin:/bin", "HOME": str(home), "NIAS_DATA_DIR": str(home / "data"),
           "NIAS_PORT": str(port), "NIAS_QUEUE_PREFIX": prefix, "NIAS_UNITS": "1", "NIAS_ADMIN_TOKEN": token,
           "NIAS_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F", "NIAS_ADMIN_EMAIL": "admin@example.org"}
    log = home / "launcher.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                     str(user_python), str(ROOT / "tools" / "launcher.py")],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: b"NIAS_READY" in log.read_bytes() or launcher.poll() is not None, timeout_s=START_TIMEOUT_S,
                   message="make up as an ordinary user")
        text = log.read_text(errors="replace")
        assert launcher.poll() is None, text[-4000:]
        assert "the unit does not run as root" in text  # no cgroups, no uids of their own: said, not hidden
        client = NiasClient(f"http://127.0.0.1:{port}", token=token)
        code = "import os\nopen('output/uid.txt', 'w').write(str(os.getuid()))\n"
        done = client.wait(client.submit(zip_entries(tmp_path / "uid.zip", {"code.py": code}))["id"], timeout_s=120)
        assert done["state"] == "succeeded", (done, text[-3000:])
        with zipfile.ZipFile(client.result(done["id"], tmp_path / "uid-result.zip")) as result:
            assert result.read("uid.txt") == str(NOBODY).encode()
        assert (home / "data" / "work" / "unit-1").is_dir()  # its own home is reachable by its own jobs
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
        delete_queues(prefix)
        shutil.rmtree(home, ignore_errors=True)
