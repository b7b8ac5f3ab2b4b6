"""What a starting unit clears from its work dir: every attempt's folders a killed unit left behind,
but the recorded batch jobs a Slurm unit adopts."""
from __future__ import annotations

from process_unit.app import remove_leftover_work
from process_unit.runner import OWN_FILES


def test_leftover_attempts_are_removed_but_those_a_slurm_unit_adopts_are_kept(tmp_path):
    for name in ("abc-1", "def-2"):
        (tmp_path / name / "project").mkdir(parents=True)
        (tmp_path / OWN_FILES / name).mkdir(parents=True)
    (tmp_path / "batch-jobs.json").write_text("[]")
    removed = remove_leftover_work(tmp_path, frozenset({"def-2"}))
    assert sorted(removed) == ["abc-1", "abc-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [OWN_FILES, "batch-jobs.json", "def-2"]
    assert [p.name for p in (tmp_path / OWN_FILES).iterdir()] == ["def-2"]


def test_a_local_unit_removes_every_leftover_attempt(tmp_path):
    (tmp_path / "abc-1").mkdir()
    (tmp_path / OWN_FILES / "abc-1").mkdir(parents=True)
    assert remove_leftover_work(tmp_path) == ["abc-1", "abc-1"]
    assert not (tmp_path / "abc-1").exists() and not any((tmp_path / OWN_FILES).iterdir())
