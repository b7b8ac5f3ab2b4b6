"""Data sets on the real stack: a job reads each data set it names at data/<name>/, read only; a job
that names none sees none; a 500 MiB data set is uploaded once and fetched once per unit; one a running
job names cannot be deleted."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

import pytest

from tests.e2e.conftest import STACK_ENV
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until

BIG_MIB = 500

READER = """
import hashlib, os
path = "data/sample/values.bin"
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
try:
    open(path, "ab").write(b"more")
    writable = "yes"
except OSError:
    writable = "no"
open("output/seen.txt", "w").write(f"{os.path.getsize(path)} {digest} {writable}\\n")
"""

HASHER = """
import hashlib, os
path = "data/sample/values.bin"
digest = hashlib.sha256()
with open(path, "rb") as handle:
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
open("output/seen.txt", "w").write(f"{os.path.getsize(path)} {digest.hexdigest()}\\n")
"""

SLEEPER = """
import os, time
assert os.path.isdir("data")
time.sleep(15)
"""

LOOKER = """
import os
open("output/seen.txt", "w").write(repr(sorted(os.listdir("data")) if os.path.isdir("data") else []))
"""


def result_text(client, job_id, tmp_path) -> str:
    with zipfile.ZipFile(client.result(job_id, tmp_path / f"{job_id}.zip")) as archive:
        return archive.read("seen.txt").decode().strip()


def test_a_job_reads_the_data_set_it_names_read_only_and_one_naming_none_sees_none(client, tmp_path):
    data = os.urandom(300_000)
    source = tmp_path / "values.bin"
    source.write_bytes(data)
    name = f"sample-{os.getpid()}"
    stored = client.upload_dataset(name, source)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    reader = zip_entries(tmp_path / "reader.zip", {"code.py": READER.replace("data/sample/", f"data/{name}/")})
    job = client.wait(client.submit(reader, datasets=[name])["id"], timeout_s=180)
    assert job["state"] == "succeeded", client.log(job["id"])
    assert result_text(client, job["id"], tmp_path) == f"{len(data)} {stored['sha256']} no"
    kept = zipfile.ZipFile(client.result(job["id"], tmp_path / "with-data.zip")).read(".nias/provenance.json")
    recorded = [{"name": name, "sha256": stored["sha256"]}]
    assert client.provenance(job["id"])["datasets"] == json.loads(kept)["datasets"] == recorded
    looker = zip_entries(tmp_path / "looker.zip", {"code.py": LOOKER})
    plain = client.wait(client.submit(looker)["id"], timeout_s=180)
    assert plain["state"] == "succeeded", client.log(plain["id"])
    assert result_text(client, plain["id"], tmp_path) == "[]"


def test_a_data_set_used_by_three_jobs_is_uploaded_once_and_fetched_once_per_unit(client, tmp_path):
    source = tmp_path / "values.bin"
    with open(source, "wb") as handle:  # streamed to disk and up, never held whole in memory
        for _ in range(30):
            handle.write(os.urandom(1024 * 1024))
    name = f"big-{os.getpid()}"
    stored = client.upload_dataset(name, source)
    reader = zip_entries(tmp_path / "reader.zip", {"code.py": READER.replace("data/sample/", f"data/{name}/")})
    expect_three_jobs_fetching_once_per_unit(client, reader, name, 30 * 1024 * 1024,
                                             f"{30 * 1024 * 1024} {stored['sha256']} no", tmp_path, 300)


def expect_three_jobs_fetching_once_per_unit(client, project, name: str, size: int, answer: str, tmp_path,
                                             timeout_s: float) -> list[dict]:
    """Three jobs of `project` naming the data set `name`: each succeeds with `answer` in its result,
    and each unit that ran one fetched the data set exactly once."""
    jobs = [client.submit(project, datasets=[name]) for _ in range(3)]
    done = [client.wait(job["id"], timeout_s=timeout_s) for job in jobs]
    assert [job["state"] for job in done] == ["succeeded"] * 3, [client.log(job["id"]) for job in done]
    for job in done:
        assert result_text(client, job["id"], tmp_path) == answer
    marker = f"Data set {name} ({size} bytes, fetched)"
    fetched = [job["unit"] for job in done if marker in client.log(job["id"])]
    assert len(fetched) == len(set(fetched)) == len({job["unit"] for job in done})  # once per unit
    return done


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory):
    """A stack of this module's own whose limits take a 500 MiB data set."""
    env = {**STACK_ENV, "NIAS_MAX_UPLOAD_MB": "600", "NIAS_MAX_UNPACKED_MB": "600", "NIAS_JOB_TIMEOUT_S": "300"}
    with LocalStack(tmp_path_factory.mktemp("big-datasets-stack"), units=2, **env) as stack:
        yield stack


def sparse_file(path, size: int) -> str:
    """A file of `size` bytes, mostly a hole on disk, and its sha256 computed by streaming it."""
    with open(path, "wb") as handle:
        handle.write(b"head of the recording")
        handle.truncate(size)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_500_mib_data_set_used_by_three_jobs_is_uploaded_once_and_fetched_once_per_unit(big_stack, tmp_path):
    client = big_stack.client
    size = BIG_MIB * 1024 * 1024
    source = tmp_path / "values.bin"
    digest = sparse_file(source, size)
    name = f"huge-{os.getpid()}"
    stored = client.upload_dataset(name, source)  # streamed from disk
    assert (stored["size"], stored["sha256"]) == (size, digest)
    hasher = zip_entries(tmp_path / "hasher.zip", {"code.py": HASHER.replace("data/sample/", f"data/{name}/")})
    expect_three_jobs_fetching_once_per_unit(client, hasher, name, size, f"{size} {digest}", tmp_path, 600)
    assert [entry["name"] for entry in client.datasets()].count(name) == 1  # stored once


def test_a_data_set_a_running_job_names_cannot_be_deleted_until_the_job_has_ended(client, tmp_path):
    source = tmp_path / "values.bin"
    source.write_bytes(os.urandom(10_000))
    name = f"busy-{os.getpid()}"
    client.upload_dataset(name, source)
    sleeper = client.submit(zip_entries(tmp_path / "sleeper.zip", {"code.py": SLEEPER}), datasets=[name])
    wait_until(lambda: client.job(sleeper["id"])["state"] == "running", timeout_s=120)
    refused = client.session.delete(f"{client.base_url}/api/datasets/{name}", timeout=10)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "dataset_in_use"
    assert sleeper["id"] in refused.json()["error"]["jobs"]
    assert sleeper["id"] in refused.json()["error"]["message"]
    assert client.wait(sleeper["id"], timeout_s=180)["state"] == "succeeded", client.log(sleeper["id"])
    allowed = client.session.delete(f"{client.base_url}/api/datasets/{name}", timeout=10)
    assert allowed.status_code == 204, allowed.text
    assert name not in [entry["name"] for entry in client.datasets()]


def test_a_data_set_that_is_not_a_zip_reaches_the_job_as_one_file_even_when_it_holds_a_zip(client, tmp_path):
    """Only a .zip is checked under the zip rules at upload, so only a .zip is unpacked for jobs."""
    disguised = zip_entries(tmp_path / "inner.zip", {"a.txt": "inside"})
    source = tmp_path / "archive.bin"
    source.write_bytes(disguised.read_bytes())
    name = f"disguised-{os.getpid()}"
    client.upload_dataset(name, source)
    code = (f"import os\nopen('output/seen.txt', 'w').write(repr(sorted(os.listdir('data/{name}'))))\n")
    job = client.wait(client.submit(zip_entries(tmp_path / "look.zip", {"code.py": code}), datasets=[name])["id"],
                      timeout_s=180)
    assert job["state"] == "succeeded", client.log(job["id"])
    assert result_text(client, job["id"], tmp_path) == "['archive.bin']"
