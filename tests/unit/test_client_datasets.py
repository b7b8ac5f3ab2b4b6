"""The client names a job's data sets as the submit form's JSON list."""
from __future__ import annotations

import json

from click.testing import CliRunner

from nias.client import NiasClient


def test_the_data_sets_a_submit_names_go_as_a_json_list_and_none_sends_no_field():
    fields = NiasClient._submit_fields("run", None, None, {"datasets": ["eeg", "boss@lab.example/trials"]})
    assert json.loads(fields["datasets"]) == ["eeg", "boss@lab.example/trials"]
    assert "datasets" not in NiasClient._submit_fields("run", None, None, {"datasets": None})


def test_nias_submit_takes_data_more_than_once(monkeypatch, tmp_path):
    from nias import cli_jobs

    seen = {}
    monkeypatch.setattr(cli_jobs, "client_of", lambda ctx: object())
    monkeypatch.setattr(cli_jobs, "upload", lambda client, zipped, name, **fields: seen.update(fields) or {})
    monkeypatch.setattr(cli_jobs, "submitted", lambda client, answer, wait: None)
    project = tmp_path / "p.zip"
    project.write_bytes(b"PK")
    result = CliRunner().invoke(cli_jobs.submit, [str(project), "--data", "eeg", "--data", "trials"])
    assert result.exit_code == 0, result.output
    assert seen["datasets"] == ["eeg", "trials"]
