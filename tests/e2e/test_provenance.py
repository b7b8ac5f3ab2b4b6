"""A job's provenance: what exactly it ran, recorded from its environment and kept in its result zip
(`.nias/provenance.json`); and "re-run exactly", which installs the versions the original ran with
even once a newer one is published. The stack's units install from a local index folder
(UV_FIND_LINKS, UV_NO_INDEX) that the tests publish wheels of `niasprobe` into."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.conftest import STACK_ENV
from tests.support.browser import browser, console_errors, new_page, page, save_screenshot  # noqa: F401 (fixtures)
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack
from tests.support.wheels import probe_wheel

# Reports what the environment's own Python says: its version, its packages, and niasprobe's version.
CODE = """
import importlib.metadata, json, platform
import niasprobe
seen = sorted([d.metadata["Name"], d.version] for d in importlib.metadata.distributions())
json.dump({"python": platform.python_version(), "packages": seen}, open("output/seen.json", "w"))
open("output/provenance.json", "w").write("the job's own file")
print("niasprobe", niasprobe.VERSION)
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    probe_wheel(folder, "1.0")
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory, index):
    with LocalStack(tmp_path_factory.mktemp("provenance-stack"), units=1, UV_FIND_LINKS=str(index), UV_NO_INDEX="1",
                    **STACK_ENV) as stack:
        yield stack


@pytest.fixture
def client(stack):
    return stack.client


@pytest.fixture(scope="module")
def original(stack, tmp_path_factory) -> dict:
    """A job with an unpinned requirement, run while the index holds niasprobe 1.0 only."""
    folder = tmp_path_factory.mktemp("original")
    project = zip_entries(folder / "probe.zip", {"code.py": CODE, "requirements.txt": "niasprobe\n"})
    job = stack.client.wait(stack.client.submit(project)["id"], timeout_s=180)
    assert job["state"] == "succeeded", job["error"]
    return {**job, "zip": project}


def _result(client, job: dict, folder: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(client.result(job["id"], folder / f"{job['id']}.zip"))


def test_the_result_zip_records_exactly_the_upload_python_and_packages_of_the_jobs_environment(
        client, original, tmp_path):
    result = _result(client, original, tmp_path)
    record = json.loads(result.read(".nias/provenance.json"))
    seen = json.loads(result.read("seen.json"))
    assert record["upload_sha256"] == hashlib.sha256(original["zip"].read_bytes()).hexdigest()
    assert sorted(record["packages"]) == seen["packages"] and ["niasprobe", "1.0"] in record["packages"]
    assert record["python"] == seen["python"]
    assert record["unit"] == original["unit"] and record["executor"] == "local" and record["host"]
    assert record["datasets"] == [] and record["command"] is None and record["git"] is None
    assert result.read("provenance.json") == b"the job's own file"  # never overwritten by NIAS's
    assert client.provenance(original["id"]) == record == original["provenance"]


def test_re_run_exactly_installs_the_recorded_versions_after_a_newer_one_is_published(
        stack, client, original, index, tmp_path):
    probe_wheel(index, "2.0")
    newest = client.wait(client.rerun(original["id"], fresh_env=True)["id"], timeout_s=180)
    assert newest["state"] == "succeeded" and newest["exact"] is False
    assert "niasprobe 2.0" in client.log(newest["id"])
    assert ["niasprobe", "2.0"] in json.loads(_result(client, newest, tmp_path).read(".nias/provenance.json"))["packages"]
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token}
    cli = subprocess.run([str(Path(sys.executable).parent / "nias"), "rerun", "--exact", original["id"]], env=env,
                         capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    exact = client.wait(cli.stdout.split()[0], timeout_s=180)
    assert exact["exact"] is True and exact["rerun_of"] == original["id"]
    assert exact["state"] == "succeeded" and "niasprobe 1.0" in client.log(exact["id"])
    assert "Re-running exactly" in client.log(exact["id"])
    record = json.loads(_result(client, exact, tmp_path).read(".nias/provenance.json"))
    assert sorted(record["packages"]) == sorted(original["provenance"]["packages"])


def test_a_job_whose_environment_was_never_built_cannot_be_re_run_exactly(client, page, tmp_path):
    project = zip_entries(tmp_path / "broken.zip", {"code.py": "print('never')\n",
                                                    "requirements.txt": "this-package-does-not-exist-nias\n"})
    job = client.wait(client.submit(project)["id"], timeout_s=180)
    assert job["state"] == "failed" and job["provenance"]["packages"] is None
    answer = requests.post(f"{client.base_url}/api/jobs/{job['id']}/rerun", json={"exact": True},
                           headers=client.session.headers, timeout=60)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "no_packages"
    assert "cannot be re-run exactly" in answer.json()["error"]["message"]
    page.goto(f"/job.html?id={job['id']}")
    expect(page.locator("#action-rerun")).to_be_visible()
    expect(page.locator("#action-rerun-exact")).to_be_hidden()  # nothing recorded to pin
    expect(page.locator("#ran-packages")).to_contain_text("listed once the job has run")


def test_the_job_page_shows_the_provenance_and_re_runs_exactly_from_its_button(client, original, page):
    page.goto(f"/job.html?id={original['id']}")
    expect(page.locator("#ran-title")).to_have_text("Provenance")
    expect(page.locator("#ran-sha256")).to_have_text(original["provenance"]["upload_sha256"])
    expect(page.locator("#ran-executor")).to_have_text("local")
    expect(page.locator("#ran-origin")).to_have_text("uploaded zip")
    expect(page.locator("#packages-table")).to_contain_text("niasprobe")
    button = page.locator("#action-rerun-exact")
    expect(button).to_be_visible()
    expect(page.locator("#action-rerun")).to_be_visible()
    save_screenshot(page, "job-provenance")
    button.click()
    page.wait_for_url(lambda url: original["id"] not in url, timeout=30_000)
    new_id = page.url.split("id=")[1].split("&")[0]
    assert client.job(new_id)["exact"] is True and client.job(new_id)["rerun_of"] == original["id"]
    client.wait(new_id, timeout_s=180)
