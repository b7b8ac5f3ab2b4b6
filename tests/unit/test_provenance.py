"""The record of what a job ran (nias.provenance): its shape, its place in the result zip, and the
pins a "re-run exactly" builds its environment from."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nias.errors import BadMessage
from nias.messages import JobMessage
from nias.provenance import PROVENANCE_NAME, check_pins, encode_provenance, origin_of, pins_of, provenance_record
from process_unit.environments import EnvironmentCache
from process_unit.results import ResultLimits, pack_output
from tests.support.wheels import probe_wheel

UV = str(Path(sys.executable).with_name("uv"))
PYTHON = "/usr/bin/python3"
RAN_WITH = {"python": "3.11.2", "unit": "unit-1", "host": "node-a", "packages": [["numpy", "2.1.0"], ["six", "1.16.0"]]}
SHA = "ab" * 32


def _message(**fields) -> JobMessage:
    return JobMessage(job_id="j1", upload="jobs/j1/upload.zip", sha256=SHA, size=10, dispatch=1, **fields)


def test_the_record_of_a_git_job_names_its_repository_commit_unit_host_executor_python_and_packages():
    job = {"source": {"git": {"url": "https://example.org/r.git", "ref": "main", "path": "", "commit": "c" * 40}}}
    record = provenance_record(SHA, origin_of(job), RAN_WITH, "local")
    assert record == {"upload_sha256": SHA, "datasets": [], "command": None,
                      "git": {"url": "https://example.org/r.git", "commit": "c" * 40},
                      "unit": "unit-1", "host": "node-a", "executor": "local", "python": "3.11.2",
                      "packages": [["numpy", "2.1.0"], ["six", "1.16.0"]]}


def test_the_record_of_a_command_job_names_the_command_and_its_digest_and_has_no_packages_before_it_ran():
    record = provenance_record(SHA, origin_of({"command": "filter", "command_digest": "d" * 64}), None, None)
    assert record["command"] == {"name": "filter", "digest": "d" * 64} and record["git"] is None
    assert record["packages"] is None and record["python"] is None and record["datasets"] == []


def test_pins_are_the_exact_versions_a_job_ran_with_and_none_when_nothing_was_recorded():
    assert pins_of(RAN_WITH) == ["numpy==2.1.0", "six==1.16.0"]
    assert pins_of(None) == [] and pins_of({"packages": []}) == []


def test_a_job_message_carries_its_pins_and_origin_and_refuses_pins_that_are_not_name_equals_version():
    message = _message(pins=["numpy==2.1.0"], origin={"command": "filter"})
    assert JobMessage.decode(message.encode()) == message
    for bad in (["numpy>=2"], ["numpy==2; rm -rf /"], "numpy==2", [1]):
        assert check_pins(bad)
        with pytest.raises(BadMessage):
            JobMessage.decode(_message(pins=bad).encode())
    with pytest.raises(BadMessage):
        JobMessage.decode(_message(origin={"evil": "x"}).encode())


def _pack(tmp_path: Path, files: dict[str, str], record: dict) -> tuple[zipfile.ZipFile, object]:
    output = tmp_path / "project" / "output"
    for name, text in files.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text(text)
    packed = pack_output(tmp_path / "project", tmp_path / "result.zip", ResultLimits(10**7, 100),
                         encode_provenance(record))
    return zipfile.ZipFile(tmp_path / "result.zip"), packed


def test_the_result_zip_holds_the_record_beside_the_outputs_files(tmp_path):
    record = provenance_record(SHA, {}, RAN_WITH, "local")
    archive, packed = _pack(tmp_path, {"table.csv": "a,b\n", "provenance.json": "{\"mine\": 1}"}, record)
    assert sorted(archive.namelist()) == [PROVENANCE_NAME, "provenance.json", "table.csv"]
    assert json.loads(archive.read(PROVENANCE_NAME)) == record
    assert json.loads(archive.read("provenance.json")) == {"mine": 1}  # the user's own file is theirs
    assert packed.files == 2 and packed.left_out_count == 0


def test_an_output_file_at_the_records_own_path_is_left_out_with_its_reason_never_mixed_with_it(tmp_path):
    record = provenance_record(SHA, {}, RAN_WITH, "local")
    archive, packed = _pack(tmp_path, {".nias/provenance.json": "forged"}, record)
    assert archive.namelist() == [PROVENANCE_NAME] and json.loads(archive.read(PROVENANCE_NAME)) == record
    assert packed.left_out == ["output/.nias/provenance.json: the name of NIAS's own record of the run; "
                               "name the file otherwise"]


def _version(environment) -> str:
    ran = subprocess.run([str(environment.python), "-c", "import niasprobe; print(niasprobe.VERSION)"],
                         capture_output=True, text=True, timeout=30)
    return ran.stdout.strip()


def test_pinned_versions_are_installed_instead_of_the_newest_and_get_an_environment_of_their_own(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    probe_wheel(index, "1.0")
    monkeypatch.setenv("UV_FIND_LINKS", str(index))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    cache = EnvironmentCache(tmp_path / "envs", UV, PYTHON)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("niasprobe\n")
    first = cache.prepare(requirements, lambda _line: None)
    probe_wheel(index, "2.0")
    newest = cache.prepare(requirements, lambda _line: None, fresh=True)
    lines: list[str] = []
    pinned = cache.prepare(requirements, lines.append, fresh=True, pins=["niasprobe==1.0"])
    assert (_version(first), _version(newest), _version(pinned)) == ("1.0", "2.0", "1.0")
    assert len({first.key, pinned.key}) == 2 and pinned.key != newest.key
    assert any("built from 1 pinned packages" in line for line in lines)
