"""Jobs whose project the backend fetches from a git repository (a real `git http-backend` on
127.0.0.1), through the stack as `make up` starts it: at a tag, a branch with a subfolder and a
commit, from the API and from `nias submit --git`; each job records the commit it ran, a re-run
keeps it, and what is refused (a host not listed, a ref that is not there, a tree without code.py)
answers a clear 4xx and queues nothing."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.git_server import GitServer
from tests.support.stack import LocalStack

pytestmark = pytest.mark.e2e

WHICH = "open('output/which.txt', 'w').write({!r})\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = GitServer(tmp_path_factory.mktemp("git"))
    server.ids = server.repository("eeg", [
        {"code.py": WHICH.format("v1")},
        {"code.py": WHICH.format("v2"), "filters/code.py": WHICH.format("filters"),
         "filters/requirements.txt": "\n"},
        {"code.py": WHICH.format("v3"), "README.md": "no code in here\n", "docs/README.md": "docs\n"},
    ], tags={"v1.0": 0, "v2.0": 1})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("git-stack"), units=1, NIAS_GIT_HOSTS="127.0.0.1",
                    NIAS_GIT_HTTP_HOSTS="127.0.0.1") as stack:
        yield stack


def _output(stack, job_id: str) -> str:
    answer = stack.client.session.get(f"{stack.url}/api/jobs/{job_id}/result", timeout=30)
    assert answer.status_code == 200, answer.text
    return zipfile.ZipFile(io.BytesIO(answer.content)).read("which.txt").decode()


def test_a_job_from_a_tag_runs_that_tags_code_and_records_its_commit(stack, server):
    job = stack.client.submit_git(f"{server.url}/eeg.git", ref="v1.0")
    assert job["source"] == {"git": {"url": f"{server.url}/eeg.git", "ref": "v1.0", "path": "", "commit": server.ids[0]}}
    assert job["name"] == "eeg @ v1.0"
    done = stack.client.wait(job["id"], timeout_s=120)
    assert done["state"] == "succeeded", done
    assert _output(stack, job["id"]) == "v1"
    rerun = stack.client.rerun(job["id"])
    assert rerun["source"] == job["source"]
    assert stack.client.wait(rerun["id"], timeout_s=120)["state"] == "succeeded"
    assert _output(stack, rerun["id"]) == "v1"


def test_the_provenance_of_a_git_job_names_its_repository_and_commit_in_its_json_and_its_result(stack, server):
    job = stack.client.wait(stack.client.submit_git(f"{server.url}/eeg.git", ref="v2.0")["id"], timeout_s=120)
    assert job["state"] == "succeeded", job
    expected = {"url": f"{server.url}/eeg.git", "commit": server.ids[1]}
    assert job["provenance"]["git"] == expected and job["provenance"]["command"] is None
    answer = stack.client.session.get(f"{stack.url}/api/jobs/{job['id']}/result", timeout=30)
    record = json.loads(zipfile.ZipFile(io.BytesIO(answer.content)).read(".nias/provenance.json"))
    assert record["git"] == expected and record == stack.client.provenance(job["id"])


def test_a_branchs_subfolder_and_an_old_commit_are_each_the_project_they_name(stack, server):
    sub = stack.client.submit_git(f"{server.url}/eeg.git", ref="v2.0", path="filters", name="filters only")
    old = stack.client.submit_git(f"{server.url}/eeg.git", ref=server.ids[0])
    head = stack.client.submit_git(f"{server.url}/eeg.git", ref="main")
    assert (sub["name"], sub["source"]["git"]["commit"], sub["source"]["git"]["path"]) == \
        ("filters only", server.ids[1], "filters")
    assert old["source"]["git"]["commit"] == server.ids[0] and head["source"]["git"]["commit"] == server.ids[2]
    for job, which in ((sub, "filters"), (old, "v1"), (head, "v3")):
        assert stack.client.wait(job["id"], timeout_s=120)["state"] == "succeeded"
        assert _output(stack, job["id"]) == which


def test_nias_submit_git_queues_the_job_and_waits_for_it(stack, server):
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token}
    done = subprocess.run([str(Path(sys.executable).parent / "nias"), "submit", "--git", f"{server.url}/eeg.git",
                           "--ref", "v2.0", "--wait"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and "eeg @ v2.0" in done.stdout
    usage = subprocess.run([str(Path(sys.executable).parent / "nias"), "submit", "--ref", "v2.0"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "either a PROJECT" in usage.stderr


@pytest.mark.parametrize("fields, status, code, words", [
    ({"url": "https://elsewhere.example/eeg.git"}, 400, "git_host_not_allowed", "only from the git hosts"),
    ({"url": "{server}/eeg.git", "ref": "no-such-tag"}, 422, "git_fetch_failed", "no-such-tag"),
    ({"url": "{server}/missing.git"}, 422, "git_fetch_failed", "could not be fetched"),
    ({"url": "{server}/eeg.git", "ref": "main", "path": "docs"}, 400, "no_code_py", "code.py"),
])
def test_a_refused_git_job_answers_its_reason_and_queues_nothing(stack, server, fields, status, code, words):
    git = {key: value.replace("{server}", server.url) for key, value in fields.items()}
    before = stack.client.jobs(per_page=1)["total"]
    answer = stack.http.post(f"{stack.url}/api/jobs", files={"git": (None, json.dumps(git))},
                             timeout=60)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code and words in answer.json()["error"]["message"]
    assert stack.client.jobs(per_page=1)["total"] == before
    assert not [p for p in (stack.data_dir / "uploads").iterdir()]
