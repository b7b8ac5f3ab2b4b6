"""A job may ask for its environment built anew (`fresh_env`, `nias submit --fresh-env`): it gets a
new build, says so in its log, and the jobs after it reuse that build; each job records when its
environment was built."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from playwright.sync_api import expect

from tests.support.browser import browser, console_errors, new_page, page, save_screenshot  # noqa: F401 (fixtures)
from tests.support.projects import zip_entries


def _built(job: dict) -> float:
    return datetime.fromisoformat(job["env_built_at"]).timestamp()


def test_a_job_asking_for_the_newest_versions_gets_a_new_build_that_later_jobs_reuse(stack, client, tmp_path):
    project = zip_entries(tmp_path / "fresh.zip", {"code.py": "print('ran')\n", "requirements.txt": "\n"})
    before = client.wait(client.submit(project)["id"], timeout_s=120)
    assert before["state"] == "succeeded" and before["fresh_env"] is False and before["env_built_at"]
    fresh = client.wait(client.submit(project, fresh_env="true")["id"], timeout_s=180)
    assert fresh["state"] == "succeeded" and fresh["fresh_env"] is True and fresh["env_cached"] is False
    assert _built(fresh) > _built(before)
    assert "Rebuilding the environment with the newest versions, as the job asked" in client.log(fresh["id"])
    after = client.wait(client.submit(project)["id"], timeout_s=120)
    assert after["env_cached"] is True and after["env_built_at"] == fresh["env_built_at"]


def test_the_job_page_says_when_the_environment_was_built_and_that_the_newest_versions_were_asked_for(
        client, page, tmp_path):
    project = zip_entries(tmp_path / "fresh-page.zip", {"code.py": "print('ran')\n"})
    job = client.wait(client.submit(project, fresh_env="true")["id"], timeout_s=180)
    page.goto(f"/job.html?id={job['id']}")
    expect(page.locator("#job-state")).to_have_text("succeeded")
    details = page.locator("main")
    expect(details).to_contain_text("newest versions asked for")
    expect(details).to_contain_text(re.compile(r"built, [^(]*\(built \w{3} \d+, \d{4}"))
    save_screenshot(page, "job-fresh-environment")


def test_nias_submit_fresh_env_asks_for_it_and_a_bad_value_is_refused(stack, client, tmp_path):
    project = zip_entries(tmp_path / "fresh-cli.zip", {"code.py": "print('ran')\n"})
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token}
    done = subprocess.run([str(Path(sys.executable).parent / "nias"), "submit", str(project), "--fresh-env", "--wait"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    assert client.job(job_id)["fresh_env"] is True
    answer = stack.http.post(f"{stack.url}/api/jobs", files={"file": ("p.zip", project.read_bytes())},
                             data={"fresh_env": "maybe"}, timeout=60)
    assert answer.status_code == 400 and "fresh_env must be true or false" in answer.json()["error"]["message"]
