"""`nias` driven against the live stack as a researcher would use it: a folder submitted with its
.niasignore, logs followed, jobs listed and controlled, the status, `nias login`'s config file,
shell completion and the exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from nias.job_files import JobFiles

from tests.support.projects import WRITER_CODE
from tests.support.stack import wait_until

BIN = Path(sys.executable).parent
NIAS = str(BIN / "nias")
COUNTING = "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n" \
           "open('output/done.txt', 'w').write('done')\n"


def nias(stack, *args: str, token: str | None = "admin", home: Path | None = None,
         **env: str) -> subprocess.CompletedProcess:
    """`nias` with NIAS_URL and a token from the environment (token=None: neither, so the config file counts)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("NIAS_URL", "NIAS_TOKEN")}
    if token is not None:
        environment.update(NIAS_URL=stack.url, NIAS_TOKEN=stack.admin_token if token == "admin" else token)
    if home is not None:
        environment.update(XDG_CONFIG_HOME=str(home))
    return subprocess.run([NIAS, *args], env={**environment, **env}, capture_output=True, text=True, timeout=180)


def project_folder(root: Path, code: str = COUNTING) -> Path:
    folder = root / "analysis"
    (folder / "data").mkdir(parents=True)
    (folder / "code.py").write_text(code)
    (folder / "data" / "small.csv").write_text("a,b\n1,2\n")
    (folder / "data" / "huge.bin").write_bytes(b"\0" * 1000)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".niasignore").write_text("# bulky inputs stay home\ndata/*.bin\n")
    return folder


def test_a_folder_is_zipped_without_what_niasignore_names_and_its_log_can_be_followed(stack, tmp_path):
    folder = project_folder(tmp_path)
    submitted = nias(stack, "submit", str(folder))
    assert submitted.returncode == 0, submitted.stderr
    job_id, state, name = submitted.stdout.split()[:3]
    assert state == "queued" and name == "analysis"
    followed = nias(stack, "logs", "--follow", job_id)
    assert followed.returncode == 0, followed.stderr
    assert [line for line in followed.stdout.splitlines() if line.startswith("tick")] == [f"tick {i}" for i in range(4)]
    assert "succeeded" in followed.stderr
    saved = tmp_path / "result.zip"
    assert nias(stack, "download", job_id, "-o", str(saved)).returncode == 0
    assert zipfile.ZipFile(saved).read("done.txt") == b"done"
    sent = zipfile.ZipFile(JobFiles(stack.data_dir / "jobs", job_id).upload).namelist()
    assert sorted(sent) == ["code.py", "data/small.csv"]  # no .niasignore'd data, no .git, no .niasignore


def test_a_folder_without_code_py_is_refused_before_anything_is_sent(stack, tmp_path):
    (tmp_path / "empty").mkdir()
    refused = nias(stack, "submit", str(tmp_path / "empty"))
    assert refused.returncode == 2 and "no code.py" in refused.stderr


def test_the_upload_shows_a_progress_bar_on_a_terminal(stack, tmp_path):
    folder = project_folder(tmp_path)
    command = f"{NIAS} submit {folder} --wait"
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token, "COLUMNS": "100"}
    shown = subprocess.run(["script", "-qec", command, "/dev/null"], env=env, capture_output=True, text=True,
                           timeout=180)
    assert shown.returncode == 0, shown.stdout
    assert "Uploading" in shown.stdout and "100%" in shown.stdout


def test_list_prints_a_table_and_json_and_status_shows_the_queue_and_units(stack, tmp_path):
    nias(stack, "submit", str(project_folder(tmp_path)), "--name", "listed-job", "--wait")
    table = nias(stack, "list", "--limit", "5")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "CREATED", "POOL", "NAME"]
    assert any(row.endswith("listed-job") for row in rows)
    listed = json.loads(nias(stack, "list", "--json", "--state", "succeeded").stdout)
    assert listed["jobs"] and {job["state"] for job in listed["jobs"]} == {"succeeded"}
    status = nias(stack, "status")
    assert status.returncode == 0 and status.stdout.startswith("jobs:  queued ")
    assert "unit-1" in status.stdout and "unit-2" in status.stdout
    assert {unit["name"] for unit in json.loads(nias(stack, "status", "--json").stdout)["units"]} >= {"unit-1",
                                                                                                        "unit-2"}


def test_pause_resume_cancel_rerun_and_priority_change_a_job_and_refusals_exit_3(stack, tmp_path):
    job_id = nias(stack, "submit", str(project_folder(tmp_path, WRITER_CODE))).stdout.split()[0]
    wait_until(lambda: stack.client.job(job_id)["state"] == "running", 60, message="the job starts")
    assert nias(stack, "pause", job_id).stdout.split()[1] == "paused"
    assert nias(stack, "resume", job_id).stdout.split()[1] == "running"
    cancelled = nias(stack, "cancel", job_id)
    assert cancelled.returncode == 0 and cancelled.stdout.split()[1] == "cancelled"
    assert nias(stack, "wait", job_id).returncode == 1  # it did not succeed
    again = nias(stack, "rerun", job_id)
    assert again.returncode == 0, again.stderr
    rerun_id = again.stdout.split()[0]
    assert stack.client.job(rerun_id)["rerun_of"] == job_id
    nias(stack, "cancel", rerun_id)
    moved = nias(stack, "priority", job_id, "7")
    assert moved.returncode == 3 and "only a queued job" in moved.stderr
    assert nias(stack, "pause", "no-such-job").returncode == 3


def test_login_writes_the_config_file_that_later_commands_use(stack, tmp_path):
    home = tmp_path / "config"
    login = nias(stack, "--url", stack.url, "login", "--email", "admin@example.org",
                 "--password", stack.env["NIAS_ADMIN_PASSWORD"], token=None, home=home)
    assert login.returncode == 0, login.stderr
    config = home / "nias" / "config.toml"
    assert f'url = "{stack.url}"' in config.read_text() and (config.stat().st_mode & 0o777) == 0o600
    listed = nias(stack, "list", "--json", token=None, home=home)
    assert listed.returncode == 0 and "jobs" in json.loads(listed.stdout)
    wrong = nias(stack, "--url", stack.url, "login", "--email", "admin@example.org", "--password", "wrong",
                 token=None, home=tmp_path / "other")
    assert wrong.returncode == 4 and not (tmp_path / "other" / "nias" / "config.toml").exists()


def test_without_a_token_or_a_server_the_exit_code_says_which(stack, tmp_path):
    unsigned = nias(stack, "list", token=None, home=tmp_path, NIAS_URL=stack.url)
    assert unsigned.returncode == 4 and "nias login" in unsigned.stderr
    unreachable = nias(stack, "--url", "http://127.0.0.1:9", "list")
    assert unreachable.returncode == 5 and "unreachable" in unreachable.stderr


def test_shell_completion_offers_commands_and_the_ids_of_recent_jobs(stack, tmp_path):
    script = nias(stack, "completion", "bash")
    assert script.returncode == 0 and "_NIAS_COMPLETE=bash_complete" in script.stdout
    commands = nias(stack, _NIAS_COMPLETE="bash_complete", COMP_WORDS="nias lo", COMP_CWORD="1")
    assert {"plain,logs", "plain,login"} <= set(commands.stdout.split())
    job_id = stack.client.jobs(per_page=1)["jobs"][0]["id"]
    ids = nias(stack, _NIAS_COMPLETE="bash_complete", COMP_WORDS=f"nias logs {job_id[:6]}", COMP_CWORD="2")
    assert f"plain,{job_id}" in ids.stdout.split()
