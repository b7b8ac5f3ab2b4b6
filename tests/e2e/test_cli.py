"""The command lines: `nias` for researchers and `nias-admin` for the server's admin."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import requests

from tests.support.projects import zip_project

BIN = Path(sys.executable).parent


def cli(stack, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": token or stack.admin_token}
    return subprocess.run([str(BIN / "nias"), *args], env=env, capture_output=True, text=True, timeout=180)


def admin(stack, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NIAS_DATA_DIR": str(stack.data_dir)}
    return subprocess.run([str(BIN / "nias-admin"), *args], env=env, capture_output=True, text=True, timeout=60,
                          input=input_text)


def test_nias_admin_creates_a_user_who_can_then_sign_in(stack):
    created = admin(stack, "create-user", "--email", "cli-user@lab.example", "--password", "cli password 1")
    assert created.returncode == 0 and "created user cli-user@lab.example" in created.stdout
    login = requests.post(f"{stack.url}/api/auth/login",
                          json={"email": "cli-user@lab.example", "password": "cli password 1"}, timeout=10)
    assert login.status_code == 200
    again = admin(stack, "create-user", "--email", "cli-user@lab.example", "--password", "cli password 1")
    assert again.returncode != 0 and "exists already" in again.stderr
    token = admin(stack, "create-token", "--email", "cli-user@lab.example").stdout.strip()
    assert requests.get(f"{stack.url}/api/me", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()["email"] == "cli-user@lab.example"


def test_nias_submit_waits_for_the_job_and_download_saves_the_result(stack, tmp_path):
    submitted = cli(stack, "submit", str(zip_project("hello", tmp_path / "hello.zip")), "--name", "from-cli", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert "succeeded" in submitted.stdout.splitlines()[-1]
    assert "hello from NIAS" in cli(stack, "log", job_id).stdout
    target = tmp_path / "result.zip"
    assert cli(stack, "download", job_id, "-o", str(target)).returncode == 0
    assert zipfile.ZipFile(target).read("result.txt") == b"42\n"
    assert job_id in cli(stack, "list").stdout


def test_nias_explains_a_refused_upload_and_a_bad_token_in_words(stack, tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    refused = cli(stack, "submit", str(bad))
    assert refused.returncode != 0 and "not a zip file" in refused.stderr
    unknown = cli(stack, "list", token="nias_wrong")
    assert unknown.returncode != 0 and "token is not valid" in unknown.stderr
