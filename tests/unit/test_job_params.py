"""The unit writes a job's parameters into its project as params.json."""
from __future__ import annotations

import json

import pytest

from nias.errors import ExecutionFailed
from process_unit.job_params import write_params_file


def test_the_jobs_parameters_are_written_as_params_json(tmp_path):
    path = write_params_file(tmp_path, {"alpha": 0.5, "mode": "fast"})
    assert path == tmp_path / "params.json"
    assert json.loads(path.read_text()) == {"alpha": 0.5, "mode": "fast"}


def test_a_job_without_parameters_gets_an_empty_object_or_keeps_the_uploads_own_file(tmp_path):
    assert json.loads(write_params_file(tmp_path, {}).read_text()) == {}
    (tmp_path / "params.json").write_text('{"from": "the zip"}')
    assert json.loads(write_params_file(tmp_path, {}).read_text()) == {"from": "the zip"}
    assert json.loads(write_params_file(tmp_path, {"n": 1}).read_text()) == {"n": 1}


def test_a_link_named_params_json_is_replaced_never_written_through(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.json").symlink_to(target)
    write_params_file(project, {})
    assert target.read_text() == "keep me"
    assert not (project / "params.json").is_symlink()


def test_a_folder_named_params_json_fails_the_job_with_a_reason(tmp_path):
    (tmp_path / "params.json").mkdir()
    with pytest.raises(ExecutionFailed, match="folder named params.json"):
        write_params_file(tmp_path, {"n": 1})
