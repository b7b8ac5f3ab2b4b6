"""Data sets on the real stack: a job reads each data set it names at data/<name>/, read only; a job
that names none sees none."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

from tests.support.projects import zip_entries

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
    jobs = [client.submit(reader, datasets=[name]) for _ in range(3)]
    done = [client.wait(job["id"], timeout_s=300) for job in jobs]
    assert [job["state"] for job in done] == ["succeeded"] * 3, [client.log(job["id"]) for job in done]
    for job in done:
        assert result_text(client, job["id"], tmp_path) == f"{30 * 1024 * 1024} {stored['sha256']} no"
    marker = f"Data set {name} ({30 * 1024 * 1024} bytes, fetched)"
    fetched = [job["unit"] for job in done if marker in client.log(job["id"])]
    assert len(fetched) == len(set(fetched)) == len({job["unit"] for job in done})  # once per unit
