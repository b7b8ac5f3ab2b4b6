"""`backend.result_index`: a result's zip directory is parsed once, and read anew when the file changes."""
from __future__ import annotations

import os
import zipfile

from backend.result_index import ResultIndex


def _write(path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_the_same_result_is_parsed_once_and_lists_its_files_by_name(tmp_path):
    path = tmp_path / "result.zip"
    _write(path, {"b.txt": b"b", "a/c.txt": b"c", "a/": b""})
    index = ResultIndex()
    first = index.open(path)
    assert index.open(path) is first
    assert [info.filename for info in first.files] == ["a/c.txt", "b.txt"]
    assert first.find("b.txt").file_size == 1 and first.find("a/") is None and first.find("missing") is None


def test_a_result_replaced_on_disk_is_read_anew_and_the_old_one_closed(tmp_path):
    path = tmp_path / "result.zip"
    _write(path, {"old.txt": b"old"})
    index = ResultIndex()
    old = index.open(path)
    replacement = tmp_path / "new.zip"
    _write(replacement, {"new.txt": b"new"})
    os.replace(replacement, path)
    new = index.open(path)
    assert new is not old and [info.filename for info in new.files] == ["new.txt"]
    assert old.archive.fp is None  # closed: a stale directory is never served


def test_only_the_most_recent_results_stay_open(tmp_path):
    index = ResultIndex(capacity=2)
    opened = []
    for number in range(3):
        path = tmp_path / f"{number}.zip"
        _write(path, {f"{number}.txt": b"x"})
        opened.append(index.open(path))
    assert opened[0].archive.fp is None and opened[2].archive.fp is not None
