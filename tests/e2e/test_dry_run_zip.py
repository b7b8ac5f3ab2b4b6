"""A dry run of a zip the upload rules refuse: the report says which rule, and nothing is stored."""
from __future__ import annotations

import os
import zipfile

import pytest
import requests

from tests.support.projects import zip_entries


def dry_run(stack, path, name: str | None = None) -> requests.Response:
    with open(path, "rb") as handle:
        return stack.http.post(f"{stack.url}/api/jobs", params={"dry_run": "true"},
                               files={"file": (name or path.name, handle, "application/zip")}, timeout=60)


def not_a_zip(folder):
    path = folder / "notes.zip"
    path.write_bytes(b"these are notes, not a zip\n" * 50)
    return path


def without_code_py(folder):
    return zip_entries(folder / "nocode.zip", {"analysis.py": "print(1)\n"})


def with_a_symlink(folder):
    path = folder / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("code.py", "pass\n")
        link = zipfile.ZipInfo("data")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    return path


def stored(stack) -> tuple:
    """What a refused upload must not change: the jobs, their folders and the upload spool."""
    return (stack.client.jobs()["total"], sorted(os.listdir(stack.data_dir / "jobs")),
            sorted(os.listdir(stack.data_dir / "uploads")))


@pytest.mark.parametrize("make,code", [(not_a_zip, "not_a_zip"), (without_code_py, "no_code_py"),
                                       (with_a_symlink, "symlink_entry")])
def test_a_dry_run_of_a_zip_that_breaks_an_upload_rule_reports_the_failed_zip_check_and_stores_nothing(
        stack, tmp_path, make, code):
    before = stored(stack)
    answer = dry_run(stack, make(tmp_path))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["dry_run"] is True and report["ok"] is False
    [zip_check] = [check for check in report["checks"] if check["check"] == "zip"]
    assert zip_check["ok"] is False and zip_check["code"] == code and zip_check["message"]
    assert stored(stack) == before


def test_the_same_zip_uploaded_for_real_is_still_refused_with_400(stack, tmp_path):
    with open(without_code_py(tmp_path), "rb") as handle:
        answer = stack.http.post(f"{stack.url}/api/jobs", files={"file": ("nocode.zip", handle)}, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "no_code_py"


def test_a_dry_run_without_a_file_is_still_a_400(stack):
    answer = stack.http.post(f"{stack.url}/api/jobs", params={"dry_run": "true"}, data={"name": "x"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "missing_file"


def test_a_dry_run_reports_requirements_a_real_upload_would_refuse_beside_the_other_checks(stack, tmp_path):
    path = zip_entries(tmp_path / "evil.zip", {"code.py": "print(1)\n", "requirements.txt": "six\n-e ./evil\n",
                                               "evil/setup.py": "raise SystemExit('built')\n"})
    before = stored(stack)
    answer = dry_run(stack, path)
    assert answer.status_code == 200, answer.text
    checks = {check["check"]: check for check in answer.json()["checks"]}
    assert answer.json()["ok"] is False
    assert checks["zip"]["ok"] is True and checks["syntax"]["ok"] is True
    assert checks["requirements"]["ok"] is False and checks["requirements"]["code"] == "unsafe_requirements"
    assert "line 2" in checks["requirements"]["message"]
    assert stored(stack) == before
    with open(path, "rb") as handle:  # and a real upload of it is refused
        real = stack.http.post(f"{stack.url}/api/jobs", files={"file": ("evil.zip", handle)}, timeout=60)
    assert real.status_code == 400 and real.json()["error"]["code"] == "unsafe_requirements"
