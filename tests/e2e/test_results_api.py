"""The result browsing endpoints over HTTP: the file list and one file at a time."""
from __future__ import annotations

import uuid
import zipfile
from urllib.parse import quote

import pytest

from tests.support.projects import zip_entries, zip_project

FIGURE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
              '<script>alert(1)</script><rect width="20" height="10" fill="teal"/></svg>')

MANY_KINDS_CODE = f'''
import os
os.makedirs("output/tables/2024", exist_ok=True)
with open("output/figure.svg", "w") as handle:
    handle.write({FIGURE_SVG!r})
with open("output/report.html", "w") as handle:
    handle.write("<script>alert(1)</script>")
with open("output/tables/2024/data.csv", "w") as handle:
    handle.write("a,b\\n1,2\\n")
with open("output/weights.bin", "wb") as handle:
    handle.write(bytes(range(256)))
with open('output/summary "final" \u00e9t\u00e9.txt', "w") as handle:
    handle.write("done")
'''

SLEEPER_CODE = "import time\nprint('resting', flush=True)\ntime.sleep(4)\n"


@pytest.fixture(scope="module")
def hello_job(stack, tmp_path_factory) -> dict:
    project = zip_project("hello", tmp_path_factory.mktemp("results-api") / "hello.zip")
    job = stack.client.submit(project, name=f"results-api hello {uuid.uuid4().hex[:6]}")
    return stack.client.wait(job["id"], timeout_s=120)


@pytest.fixture(scope="module")
def many_kinds_job(stack, tmp_path_factory) -> dict:
    project = zip_entries(tmp_path_factory.mktemp("results-api") / "kinds.zip", {"code.py": MANY_KINDS_CODE})
    job = stack.client.submit(project, name=f"results-api kinds {uuid.uuid4().hex[:6]}")
    return stack.client.wait(job["id"], timeout_s=120)


@pytest.fixture(scope="module")
def hello_result(stack, hello_job, tmp_path_factory) -> zipfile.ZipFile:
    path = stack.client.result(hello_job["id"], tmp_path_factory.mktemp("results-api") / "result.zip")
    return zipfile.ZipFile(path)


def files_url(stack, job_id: str, name: str = "") -> str:
    return f"{stack.url}/api/jobs/{job_id}/files" + (f"/{name}" if name else "")


def get_files(stack, job_id: str, name: str = "", **params):
    """GET the file list (no name) or one file, as the stack's client."""
    return stack.client.session.get(files_url(stack, job_id, name), params=params, timeout=10)


def test_the_file_list_names_every_file_of_a_finished_result_with_its_size_and_type(stack, hello_job, hello_result):
    assert hello_job["state"] == "succeeded"
    response = get_files(stack, hello_job["id"])
    assert response.status_code == 200
    files = response.json()["files"]
    assert files == [
        {"name": ".nias/provenance.json", "size": hello_result.getinfo(".nias/provenance.json").file_size,
         "type": "application/json"},  # NIAS's record of the run, beside the job's own files
        {"name": "channels.csv", "size": hello_result.getinfo("channels.csv").file_size, "type": "text/csv"},
        {"name": "plot.png", "size": hello_result.getinfo("plot.png").file_size, "type": "image/png",
         "width": 64, "height": 32},  # the fixture's 64 x 32 plot: a page keeps its place while it loads
        {"name": "result.txt", "size": 3, "type": "text/plain"},
    ]


def test_a_file_comes_back_whole_with_its_type_and_headers_that_keep_it_inert(stack, hello_job, hello_result):
    response = get_files(stack, hello_job["id"], "plot.png")
    assert response.status_code == 200
    assert response.content == hello_result.read("plot.png")
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Truncated"] == "false"
    assert response.headers["X-File-Size"] == str(len(response.content))
    assert response.headers["Content-Disposition"].startswith("inline")


def test_max_bytes_sends_only_the_start_of_a_file_and_says_it_was_cut(stack, hello_job, hello_result):
    response = get_files(stack, hello_job["id"], "channels.csv", max_bytes=10)
    assert response.status_code == 200
    assert response.content == hello_result.read("channels.csv")[:10]
    assert response.headers["X-Truncated"] == "true"
    assert response.headers["X-File-Size"] == str(hello_result.getinfo("channels.csv").file_size)
    assert response.headers["Content-Type"].startswith("text/csv")


def test_max_bytes_larger_than_the_file_sends_it_whole(stack, hello_job):
    response = get_files(stack, hello_job["id"], "result.txt", max_bytes=1000)
    assert response.status_code == 200 and response.content == b"42\n"
    assert response.headers["X-Truncated"] == "false"


def test_download_asks_the_browser_to_save_the_file(stack, hello_job):
    response = get_files(stack, hello_job["id"], "result.txt", download=1)
    assert response.status_code == 200 and response.content == b"42\n"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert 'filename="result.txt"' in response.headers["Content-Disposition"]


def test_files_in_subfolders_are_listed_and_served_by_their_path(stack, many_kinds_job):
    assert many_kinds_job["state"] == "succeeded", many_kinds_job["error"]
    names = [f["name"] for f in get_files(stack, many_kinds_job["id"]).json()["files"]]
    assert names == [".nias/provenance.json", "figure.svg", "report.html", 'summary "final" été.txt', "tables/2024/data.csv", "weights.bin"]
    response = get_files(stack, many_kinds_job["id"], "tables/2024/data.csv")
    assert response.status_code == 200 and response.content == b"a,b\n1,2\n"


def test_a_file_name_with_quotes_and_accents_is_served_and_named_safely(stack, many_kinds_job):
    response = get_files(stack, many_kinds_job["id"], quote('summary "final" été.txt'))
    assert response.status_code == 200
    assert response.text == "done"
    disposition = response.headers["Content-Disposition"]
    assert 'filename="summary _final_ _t_.txt"' in disposition
    assert "filename*=UTF-8''summary%20%22final%22%20%C3%A9t%C3%A9.txt" in disposition


def test_svg_is_served_as_an_image_in_a_sandbox_so_its_scripts_cannot_run_in_the_site(stack, many_kinds_job):
    response = get_files(stack, many_kinds_job["id"], "figure.svg")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    policy = response.headers["Content-Security-Policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.text == FIGURE_SVG


def test_html_in_a_result_is_only_ever_a_download(stack, many_kinds_job):
    response = get_files(stack, many_kinds_job["id"], "report.html")
    assert response.status_code == 200 and response.content == b"<script>alert(1)</script>"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in response.headers["Content-Security-Policy"]


def test_a_file_of_unknown_kind_is_plain_bytes(stack, many_kinds_job):
    response = get_files(stack, many_kinds_job["id"], "weights.bin")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.content == bytes(range(256))


@pytest.mark.parametrize("name", ["missing.txt", "tables", "tables/", "..%2F..%2Fupload.zip", "..%2Fresult.zip"])
def test_a_name_that_is_not_a_file_of_the_result_answers_404_as_json(stack, many_kinds_job, name):
    response = get_files(stack, many_kinds_job["id"], name)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "file_not_found"


def test_an_absolute_path_never_reaches_the_filesystem(stack, many_kinds_job):
    response = get_files(stack, many_kinds_job["id"], "%2Fetc%2Fpasswd")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"  # no route takes it: no handler ever sees the path
    assert "root:" not in response.text


def test_an_unknown_job_answers_404_as_json(stack):
    for name in ("", "plot.png"):
        response = get_files(stack, "no-such-job", name)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"


def test_the_files_of_an_unfinished_job_answer_409(stack, tmp_path):
    project = zip_entries(tmp_path / "sleeper.zip", {"code.py": SLEEPER_CODE})
    job = stack.client.submit(project, name="results-api sleeper")
    for name in ("", "anything.txt"):
        response = get_files(stack, job["id"], name)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "conflict"
    assert stack.client.wait(job["id"], timeout_s=120)["state"] == "succeeded"


def test_a_failed_job_lists_the_partial_output_it_left(stack, tmp_path):
    job = stack.client.submit(zip_project("raises", tmp_path / "raises.zip"), name="results-api raises")
    job = stack.client.wait(job["id"], timeout_s=120)
    assert job["state"] == "failed"
    listed = get_files(stack, job["id"])
    assert listed.status_code == 200
    assert [f["name"] for f in listed.json()["files"]] == [".nias/provenance.json", "partial.txt"]
    partial = get_files(stack, job["id"], "partial.txt")
    assert partial.status_code == 200 and partial.text == "written before the crash\n"

