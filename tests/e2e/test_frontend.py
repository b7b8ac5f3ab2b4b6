"""The web pages in Chromium, against the whole stack: upload, follow, read and download a job."""
from __future__ import annotations

import logging
import os
import re
import uuid
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from nias.client import ApiError
from nias.client import NiasClient
from tests.support.browser import (  # noqa: F401 (fixtures)
    NARROW, admin_credentials, browser, console_errors, new_page, page, save_screenshot,
)
from tests.support.projects import PROJECTS, zip_entries, zip_project

logger = logging.getLogger(__name__)

SLOW = 30_000  # ms: generous waits for jobs to change state
SLEEPER_CODE = "import time\nprint('step 1', flush=True)\ntime.sleep(6)\nprint('step 2', flush=True)\n"
LONG_RUNNING_CODE = "import time\nfor step in range(600):\n    print('step', step, flush=True)\n    time.sleep(0.5)\n"
BIG_UPLOAD_MB = 30
UPLOAD_THROTTLE_BYTES_S = 10 * 1024 * 1024  # a 30 MB upload then takes about 3 s
LARGE_FILES_CODE = """
with open("output/table.csv", "w") as handle:
    handle.write("index,double,label\\n")
    for index in range(20000):
        handle.write(f"{index},{index * 2},\\"row, {index}\\"\\n")
with open("output/notes.txt", "w") as handle:
    for index in range(20000):
        handle.write(f"line {index}\\n")
with open("output/figure.svg", "w") as handle:
    handle.write('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
                 '<script>document.title = "owned"</script><rect width="40" height="20" fill="teal"/></svg>')
"""


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def finished_jobs(stack, tmp_path_factory) -> dict[str, dict]:
    """A succeeded and a failed job sharing one name prefix, submitted through the API."""
    folder = tmp_path_factory.mktemp("frontend")
    prefix = unique("pages")
    jobs = {
        "hello": stack.client.submit(zip_project("hello", folder / "hello.zip"), name=f"{prefix} hello"),
        "raises": stack.client.submit(zip_project("raises", folder / "raises.zip"), name=f"{prefix} raises"),
    }
    finished = {key: stack.client.wait(job["id"], timeout_s=120) for key, job in jobs.items()}
    finished["prefix"] = prefix
    return finished


def job_row(page: Page, job_id: str):
    return page.locator(f'tr[data-job-id="{job_id}"]')


def open_job_page_id(page: Page) -> str:
    expect(page).to_have_url(re.compile(r"/job\.html\?id=\w+"), timeout=SLOW)
    return page.url.split("id=")[1]


# Signing in


def test_a_signed_out_visitor_signs_in_and_comes_back_to_the_page_asked_for(new_page, stack, console_errors):
    console_errors.allow(r"status of 401")
    page = new_page(signed_in=False)
    page.goto("/results.html?state=failed")
    expect(page).to_have_url(re.compile(r"/signin\.html\?next="))
    save_screenshot(page, "signin")
    email, password = admin_credentials(stack)
    page.get_by_label("E-mail address").first.fill(email)
    page.get_by_label("Password").first.fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/results\.html\?state=failed$"))
    expect(page.locator("#account")).to_contain_text(email)
    expect(page.locator("#state-filter")).to_have_value("failed")


def test_the_sign_in_page_says_when_the_password_is_wrong(new_page, stack, console_errors):
    console_errors.allow(r"status of 401")
    page = new_page(signed_in=False)
    page.goto("/signin.html")
    page.fill("#signin-email", admin_credentials(stack)[0])
    page.fill("#signin-password", "not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail address or password.")
    expect(page).to_have_url(re.compile(r"/signin\.html$"))


def test_signing_out_ends_the_session(page, console_errors):
    console_errors.allow(r"status of 401")
    page.goto("/")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin\.html$"))
    page.goto("/upload.html")
    expect(page).to_have_url(re.compile(r"/signin\.html\?next=%2Fupload\.html$"))


def test_the_account_page_makes_and_revokes_an_api_token_that_works_meanwhile(page, stack):
    page.goto("/")
    page.locator("#account").get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/account\.html$"))
    token_name = unique("laptop")
    page.fill("#token-name", token_name)
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-value")
    expect(secret).to_have_text(re.compile(r"^nias_"))
    expect(page.locator("#tokens-table")).to_contain_text(token_name)
    save_screenshot(page, "account")
    token_client = NiasClient(stack.url, token=secret.inner_text())
    assert "jobs" in token_client.jobs()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Revoke the token {token_name}").click()
    expect(page.locator("#tokens-table")).not_to_contain_text(token_name)
    with pytest.raises(ApiError) as refusal:
        token_client.jobs()
    assert refusal.value.status == 401


def test_an_admins_invitation_link_lets_a_colleague_register_and_sign_in(page, new_page, console_errors):
    console_errors.allow(r"status of 401")
    page.goto("/account.html")
    page.get_by_role("button", name="Create an invitation").click()
    link = page.locator("#invitation-link")
    expect(link).to_contain_text("/signin.html?invitation=")

    colleague = new_page(signed_in=False)
    colleague.goto(link.inner_text())
    email = f"{uuid.uuid4().hex[:8]}@lab.example"
    colleague.fill("#register-email", email)
    colleague.fill("#register-password", "a long enough password")
    expect(colleague.locator("#register-invitation")).not_to_have_value("")
    colleague.get_by_role("button", name="Create account").click()
    expect(colleague).to_have_url(re.compile(r"/$"))
    expect(colleague.locator("#account")).to_contain_text(email)
    expect(colleague.locator("#recent-jobs")).to_contain_text("No jobs yet.")


# Home


def test_home_page_shows_the_queue_the_latest_jobs_and_how_to_shape_a_job(page, stack, finished_jobs):
    page.goto("/")
    expect(page.get_by_role("heading", name="How to shape a job")).to_be_visible()
    expect(page.locator("main")).to_contain_text("requirements.txt")
    for counter in ("#count-queued", "#count-running", "#units-busy", "#units-idle"):
        expect(page.locator(counter)).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#unit-list")).to_contain_text("unit-1")
    expect(page.locator("#unit-list")).to_contain_text("unit-2")
    newest = stack.client.session.get(f"{stack.url}/api/jobs", params={"per_page": 1}, timeout=10).json()["jobs"][0]
    first_row = page.locator("#recent-jobs tbody tr").first
    expect(first_row).to_have_attribute("data-job-id", newest["id"])
    expect(first_row.locator(".badge")).to_have_text(newest["state"])
    expect(page.locator("#limits")).to_contain_text("MB")
    save_screenshot(page, "home")
    page.get_by_role("link", name="Upload a project").click()
    expect(page).to_have_url(re.compile(r"/upload\.html$"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Results").click()
    expect(page).to_have_url(re.compile(r"/results\.html"))


# Upload


def test_upload_by_file_picker_runs_the_project_and_shows_its_log_result_and_previews(page, tmp_path):
    project = zip_project("hello", tmp_path / "hello.zip")
    name = unique("picker")
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(project))
    expect(page.locator("#chosen-name")).to_have_text("hello.zip")
    page.fill("#job-name", name)
    save_screenshot(page, "upload")
    page.get_by_role("button", name="Upload and run").click()

    open_job_page_id(page)
    expect(page.locator("#job-name")).to_have_text(name)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#log")).to_contain_text("hello from NIAS")

    image = page.locator('.preview[data-file="plot.png"] img')
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => img.naturalWidth") == 64

    table = page.locator('.preview[data-file="channels.csv"] table')
    expect(table.locator("thead th")).to_have_text(["channel", "mean", "std"])
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(page.locator('.preview[data-file="result.txt"] pre')).to_have_text("42")
    expect(page.locator("#result-body")).not_to_contain_text("null")
    save_screenshot(page, "job-succeeded")

    with page.expect_download() as download_info:
        page.locator("#download-result").click()
    download = download_info.value
    with zipfile.ZipFile(download.path()) as result:
        assert sorted(result.namelist()) == [".nias/provenance.json", "channels.csv", "plot.png", "result.txt"]
        assert result.read("result.txt") == b"42\n"
        assert result.read("channels.csv").decode().splitlines()[0] == "channel,mean,std"


def test_a_successful_upload_opens_the_job_without_a_leave_site_dialog_and_links_it(page, tmp_path):
    dialogs: list[str] = []

    def record(dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()  # "Stay": the page must still lead to the job

    page.on("dialog", record)
    # The job page answers 204 at first, so the browser stays on the upload page to be looked at.
    page.route("**/job.html?*", lambda route: route.fulfill(status=204))
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(zip_project("hello", tmp_path / "hello.zip")))
    page.get_by_role("button", name="Upload and run").click()
    link = page.locator("#progress-text").get_by_role("link")
    expect(link).to_have_attribute("href", re.compile(r"^/job\.html\?id=\w+$"), timeout=SLOW)
    expect(page.locator("#progress-text")).to_contain_text("Accepted as")
    assert dialogs == [], f"the page asked before leaving: {dialogs}"
    page.unroute("**/job.html?*")
    link.click()
    open_job_page_id(page)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    assert dialogs == []


def big_project(destination: Path, megabytes: int) -> Path:
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("big/code.py", "import os\nprint('read', os.path.getsize('data.bin'), 'bytes')\n")
        archive.writestr("big/data.bin", os.urandom(megabytes * 1024 * 1024))
    return destination


def throttle_uploads(page: Page, bytes_per_second: int) -> None:
    """Slow the page's uploads like a real network, so a loopback upload takes long enough to watch."""
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    session.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second,
    })


def test_upload_page_shows_progress_for_a_big_upload_and_opens_the_job(page, stack, tmp_path):
    limit_mb = stack.client.session.get(f"{stack.url}/api/limits", timeout=10).json()["max_upload_mb"]
    project = big_project(tmp_path / "big.zip", min(BIG_UPLOAD_MB, int(limit_mb * 0.75)))
    seen: list[tuple[float, float]] = []
    page.expose_function("reportUploadProgress", lambda value, maximum: seen.append((value, maximum)))
    page.goto("/upload.html")
    page.evaluate("""() => {
        const bar = document.getElementById('upload-progress');
        new MutationObserver(() => {
            if (bar.hasAttribute('value')) window.reportUploadProgress(bar.value, bar.max);
        }).observe(bar, {attributes: true, attributeFilter: ['value', 'max']});
    }""")
    throttle_uploads(page, bytes_per_second=UPLOAD_THROTTLE_BYTES_S)
    page.set_input_files("#zip-input", str(project))
    page.get_by_role("button", name="Upload and run").click()
    expect(page.locator("#progress-text")).to_contain_text("Uploading…")
    expect(page.get_by_role("button", name="Cancel upload")).to_be_visible()
    save_screenshot(page, "upload-progress")
    job_id = open_job_page_id(page)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#log")).to_contain_text("read ")
    assert job_id
    intermediate = [(value, maximum) for value, maximum in seen if 0 < value < maximum]
    assert intermediate, f"the progress bar never showed a value between empty and full: {seen}"
    logger.info("Upload progress seen: %s", seen)


def test_upload_page_can_cancel_an_upload_under_way(page, client, tmp_path):
    project = big_project(tmp_path / "cancelled.zip", 8)
    name = unique("cancelled")
    throttle_uploads(page, bytes_per_second=1024 * 1024)
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(project))
    page.fill("#job-name", name)
    page.get_by_role("button", name="Upload and run").click()
    expect(page.locator("#progress-text")).to_contain_text("Uploading…")
    page.get_by_role("button", name="Cancel upload").click()
    expect(page.get_by_role("alert")).to_contain_text("The upload was cancelled.")
    expect(page.get_by_role("button", name="Upload and run")).to_be_enabled()
    expect(page).to_have_url(re.compile(r"/upload\.html$"))
    assert name not in [job["name"] for job in client.jobs(per_page=100)["jobs"]]


def test_upload_page_shows_the_servers_reason_for_a_bad_zip(page, client, console_errors, tmp_path):
    project = zip_entries(tmp_path / "no-code.zip", {"analysis/notes.txt": "code.py is missing"})
    with pytest.raises(ApiError) as refusal:
        client.submit(project)
    console_errors.allow(r"status of 400")
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(project))
    page.get_by_role("button", name="Upload and run").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The server refused this upload")
    expect(alert).to_contain_text(refusal.value.message)
    expect(alert).to_contain_text(refusal.value.code)
    expect(page).to_have_url(re.compile(r"/upload\.html$"))
    save_screenshot(page, "upload-refused")


def test_upload_page_refuses_a_file_that_is_not_a_zip_before_sending(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a zip")
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    page.goto("/upload.html")
    page.set_input_files("#zip-input", str(notes))
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"^This file cannot be uploaded\s*notes\.txt is not a \.zip file"))
    expect(page.get_by_role("alert")).not_to_contain_text("null")
    page.get_by_role("button", name="Upload and run").click()
    expect(page.get_by_role("alert")).to_contain_text("Choose a .zip file or a project folder first")
    assert sent == []


def test_upload_page_refuses_a_zip_over_the_servers_size_limit_before_sending(page, stack, tmp_path):
    limit_mb = stack.client.session.get(f"{stack.url}/api/limits", timeout=10).json()["max_upload_mb"]
    too_big = tmp_path / "too-big.zip"
    with open(too_big, "wb") as handle:
        handle.truncate((limit_mb + 1) * 1024 * 1024)  # sparse: the page only looks at its size
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" else None)
    page.goto("/upload.html")
    expect(page.locator("#limit-hint")).to_contain_text(f"Up to {limit_mb} MB")
    page.set_input_files("#zip-input", str(too_big))
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This file cannot be uploaded")
    expect(alert).to_contain_text(f"too-big.zip is {limit_mb + 1} MB, over this server's limit of {limit_mb} MB")
    expect(page.locator("#chosen")).to_be_hidden()
    save_screenshot(page, "upload-too-large")
    page.get_by_role("button", name="Upload and run").click()
    page.get_by_role("button", name="Check only").click()
    expect(alert).to_contain_text("Choose a .zip file or a project folder first")
    assert sent == []


def test_upload_page_takes_a_zip_dropped_on_it(page, tmp_path):
    project = zip_project("hello", tmp_path / "dropped.zip")
    page.goto("/upload.html")
    expect(page.locator("#limit-hint")).to_contain_text("Up to")  # the page's script has wired the zone
    page.evaluate("""([name, bytes]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, {type: 'application/zip'}));
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", ["dropped.zip", list(project.read_bytes())])
    expect(page.locator("#chosen-name")).to_have_text("dropped.zip")
    page.get_by_role("button", name="Upload and run").click()
    open_job_page_id(page)
    expect(page.locator("#job-name")).to_have_text("dropped")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)


def test_upload_page_zips_a_chosen_folder_and_runs_it(page):
    page.goto("/upload.html")
    page.set_input_files("#folder-input", str(PROJECTS / "hello"))
    expect(page.locator("#chosen-name")).to_have_text("hello/")
    page.get_by_role("button", name="Upload and run").click()
    open_job_page_id(page)
    expect(page.locator("#job-name")).to_have_text("hello")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#files-table")).to_contain_text("plot.png")


# Results


def test_results_page_shows_jobs_with_their_state_badges_and_filters_them(page, finished_jobs):
    hello, raises = finished_jobs["hello"], finished_jobs["raises"]
    page.goto(f"/results.html?q={finished_jobs['prefix']}")
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(2)
    rows = page.locator("tbody tr[data-job-id]")
    expect(rows.nth(0)).to_have_attribute("data-job-id", raises["id"])  # newest first
    hello_badge = job_row(page, hello["id"]).locator(".badge")
    expect(hello_badge).to_have_text("succeeded")
    expect(hello_badge).to_have_class(re.compile(r"\bsucceeded\b"))
    expect(job_row(page, raises["id"]).locator(".badge")).to_have_class(re.compile(r"\bfailed\b"))
    expect(job_row(page, hello["id"]).get_by_role("link", name=re.compile("Download"))).to_have_attribute(
        "href", f"/api/jobs/{hello['id']}/result")
    save_screenshot(page, "results")

    page.select_option("#state-filter", "failed")
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(1)
    expect(job_row(page, raises["id"])).to_be_visible()
    expect(page).to_have_url(re.compile(r"state=failed"))

    page.select_option("#state-filter", "")
    page.fill("#search", f"{finished_jobs['prefix']} hello")
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(1)
    expect(job_row(page, hello["id"])).to_be_visible()
    expect(page).to_have_url(re.compile(r"q="))

    page.fill("#search", unique("nothing matches"))
    expect(page.locator("tbody")).to_contain_text("No jobs match these filters.")


def test_results_page_pages_through_the_jobs(page, finished_jobs):
    hello, raises = finished_jobs["hello"], finished_jobs["raises"]
    page.goto(f"/results.html?q={finished_jobs['prefix']}")
    page.select_option("#per-page", "20")
    expect(page.locator("#page-info")).to_contain_text("1–2 of 2")
    page.goto(f"/results.html?q={finished_jobs['prefix']}&per_page=1")
    expect(page.locator("#page-info")).to_contain_text("1–1 of 2")
    expect(page.locator("#per-page")).to_have_value("1")
    page.evaluate("() => { window.sameDocument = true; }")
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()
    page.get_by_role("button", name="Older →").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(job_row(page, hello["id"])).to_be_visible()
    expect(job_row(page, raises["id"])).to_have_count(0)
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    assert page.evaluate("() => window.sameDocument") is True


def test_results_page_updates_a_running_job_to_succeeded_without_a_reload(page, client, tmp_path):
    project = zip_entries(tmp_path / "sleeper.zip", {"code.py": SLEEPER_CODE})
    job = client.submit(project, name=unique("sleeper"))
    page.goto(f"/results.html?q={job['name']}")
    page.evaluate("() => { window.sameDocument = true; }")
    badge = job_row(page, job["id"]).locator(".badge")
    expect(badge).to_have_text("running", timeout=SLOW)
    expect(badge).to_have_text("succeeded", timeout=SLOW)
    assert page.evaluate("() => window.sameDocument") is True
    expect(job_row(page, job["id"]).get_by_role("link", name=re.compile("Download"))).to_be_visible()


# Job page


def test_job_page_shows_a_failed_jobs_error(page, finished_jobs):
    raises = finished_jobs["raises"]
    page.goto(f"/job.html?id={raises['id']}")
    expect(page.locator("#job-state")).to_have_text("failed")
    error = page.get_by_role("alert")
    expect(error).to_contain_text("The job failed")
    expect(error).to_contain_text("ValueError: channel 3 has no samples")
    expect(page.locator('[data-fact="Exit code"] dd')).to_have_text("1")
    limits = raises["run_limits"]
    assert limits["cpu_s"] == 120 == limits["timeout_s"]  # the stack's NIAS_JOB_TIMEOUT_S, as no CPU limit is set
    expect(page.locator('[data-fact="Limits"] dd')).to_have_text(
        f"memory {limits['memory_mb']} MB, CPU time 2 min, {limits['processes']} processes, "
        f"{limits['open_files']} open files, files up to {limits['file_mb']} MB")
    expect(page.locator("#log")).to_contain_text("starting the analysis")
    expect(page.locator('.preview[data-file="partial.txt"] pre')).to_have_text("written before the crash")
    save_screenshot(page, "job-failed")


def test_job_page_shows_the_log_while_the_job_runs(page, client, tmp_path):
    project = zip_entries(tmp_path / "sleeper.zip", {"code.py": SLEEPER_CODE})
    job = client.submit(project, name=unique("live log"))
    page.goto(f"/job.html?id={job['id']}")
    page.wait_for_function("""() => document.getElementById('job-state').dataset.state === 'running'
        && document.getElementById('log').textContent.includes('step 1')""", timeout=SLOW)
    expect(page.locator('[data-fact="Running for"]')).to_be_visible()
    save_screenshot(page, "job-running")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#log")).to_contain_text("step 2")
    expect(page.locator('[data-fact="Ran for"]')).to_be_visible()


def test_job_page_previews_only_the_start_of_large_files_and_shows_svg_images(page, client, tmp_path):
    project = zip_entries(tmp_path / "large.zip", {"code.py": LARGE_FILES_CODE})
    job = client.wait(client.submit(project, name=unique("large files"))["id"], timeout_s=120)
    assert job["state"] == "succeeded", job["error"]
    page.goto(f"/job.html?id={job['id']}")
    table = page.locator('.preview[data-file="table.csv"]')
    expect(table.locator("thead th")).to_have_text(["index", "double", "label"])
    expect(table.locator("tbody tr")).to_have_count(200)
    expect(table.locator("tbody tr").first.locator("td")).to_have_text(["0", "0", "row, 0"])
    expect(table.locator(".note")).to_contain_text("First 200 rows shown")
    text = page.locator('.preview[data-file="notes.txt"]')
    expect(text.locator("pre")).to_contain_text("line 0\nline 1\n")
    expect(text.locator(".note")).to_contain_text("First 64 KB")
    assert "line 19999" not in text.locator("pre").inner_text()
    image = page.locator('.preview[data-file="figure.svg"] img')
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert page.title() != "owned"
    save_screenshot(page, "job-large-files")


def test_job_page_shows_a_jpeg_output_inline(page, client, tmp_path):
    job = client.wait(client.submit(zip_project("photo", tmp_path / "photo.zip"), name=unique("photo"))["id"],
                      timeout_s=120)
    assert job["state"] == "succeeded", job["error"]
    page.goto(f"/job.html?id={job['id']}")
    image = page.locator('.preview[data-file="photo.jpg"] img')
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 24]
    expect(image).to_have_attribute("title", "48 × 24 px")


def test_job_page_pauses_resumes_cancels_and_runs_a_job_again(page, client, tmp_path):
    project = zip_entries(tmp_path / "long.zip", {"code.py": LONG_RUNNING_CODE})
    job = client.submit(project, name=unique("controlled"))
    page.goto(f"/job.html?id={job['id']}")
    state = page.locator("#job-state")
    expect(state).to_have_text("running", timeout=SLOW)
    page.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("paused", timeout=SLOW)
    page.get_by_role("button", name="Resume").click()
    expect(state).to_have_text("running", timeout=SLOW)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(state).to_have_text("cancelled", timeout=SLOW)
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()

    page.get_by_role("button", name="Run again").click()
    page.get_by_role("button", name="Queue the new job").click()  # the form, prefilled from the original
    expect(page).not_to_have_url(re.compile(f"id={job['id']}$"))
    rerun_id = open_job_page_id(page)
    assert client.job(rerun_id)["rerun_of"] == job["id"]
    expect(state).to_have_text(re.compile("queued|running"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(state).to_have_text("cancelled", timeout=SLOW)


def test_job_page_for_an_unknown_job_says_so(page, console_errors):
    console_errors.allow(r"status of 404")
    page.goto("/job.html?id=no-such-job")
    expect(page.get_by_role("alert")).to_contain_text("No such job")


# Layout and keyboard


def expect_no_sideways_scroll(page: Page) -> None:
    """Once the page has settled (styles applied, lists drawn), it is no wider than the window."""
    try:
        page.wait_for_function("() => document.documentElement.scrollWidth <= window.innerWidth", timeout=10_000)
    except PlaywrightTimeout:
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        raise AssertionError(f"the page scrolls sideways: {width[0]} px wide in a {width[1]} px window") from None


def test_narrow_window_keeps_the_navigation_and_the_results_usable(new_page, finished_jobs):
    page = new_page(viewport=NARROW)
    page.goto(f"/results.html?q={finished_jobs['prefix']}")
    navigation = page.get_by_role("navigation", name="Main")
    for link in ("Home", "Upload", "Results"):
        expect(navigation.get_by_role("link", name=link)).to_be_in_viewport()
    hello_row = job_row(page, finished_jobs["hello"]["id"])
    expect(hello_row.locator(".badge")).to_be_visible()
    hello_row.scroll_into_view_if_needed()  # a phone's list scrolls down; nothing of a row is cut off sideways
    expect(hello_row.get_by_role("link", name=re.compile("Download"))).to_be_in_viewport()
    expect_no_sideways_scroll(page)
    save_screenshot(page, "results-narrow")

    hello_row.get_by_role("link", name=finished_jobs["hello"]["name"], exact=True).click()
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator('.preview[data-file="plot.png"] img')).to_be_visible()
    expect_no_sideways_scroll(page)
    save_screenshot(page, "job-narrow")

    for path, name in (("/", "home-narrow"), ("/upload.html", "upload-narrow")):
        page.goto(path)
        expect(navigation.get_by_role("link", name="Results")).to_be_in_viewport()
        expect_no_sideways_scroll(page)
        save_screenshot(page, name)


def focus_path(page: Page, presses: int) -> list[str]:
    """What the Tab key reaches, in order: each element's id or its text, with a visible outline."""
    reached = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("""() => {
            const element = document.activeElement;
            if (!element || element === document.body) return '(page)';
            const style = getComputedStyle(element);
            const outlined = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
            const label = element.id || (element.textContent || '').trim() || element.getAttribute('aria-label');
            return (outlined ? '' : 'NO-OUTLINE ') + label;
        }"""))
    return reached


@pytest.mark.parametrize(("path", "expected"), [
    ("/", ["Home", "Upload", "Results", "Upload a project", "See results"]),
    ("/upload.html", ["Results", "choose-zip", "choose-folder", "job-name", "job-priority", "job-timeout",
                      "upload-button"]),
    ("/results.html", ["Results", "Upload a project", "state-filter", "search", "per-page"]),
])
def test_key_pages_are_reachable_by_tab_with_a_visible_focus(page, path, expected, finished_jobs):
    page.goto(path)
    expect(page.locator("main")).to_be_visible()
    page.wait_for_load_state("networkidle")
    reached = focus_path(page, 40)  # the Results page's sweeps list and date filters come before per-page
    for target in expected:
        assert target in reached, f"Tab never reached {target!r} on {path}: {reached}"
    assert not [label for label in reached if label.startswith("NO-OUTLINE")], reached


def test_job_page_controls_are_reachable_by_tab(page, finished_jobs):
    hello = finished_jobs["hello"]
    page.goto(f"/job.html?id={hello['id']}")
    expect(page.locator("#files-table")).to_be_visible()
    reached = focus_path(page, 30)
    for target in ("Results", "download-result", "follow-log", "log", "Preview"):
        assert target in reached, f"Tab never reached {target!r} on the job page: {reached}"
