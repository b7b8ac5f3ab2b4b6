"""`process_unit.results.pack_output`: only regular files of output/ reach the result zip."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from nias.errors import ExecutionFailed
from process_unit.results import ResultTooLarge, pack_output


@pytest.fixture
def output(tmp_path) -> Path:
    folder = tmp_path / "project" / "output"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def target(tmp_path) -> Path:
    folder = tmp_path / "runs" / "1"
    folder.mkdir(parents=True)
    return folder / "result.zip"


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_regular_files_and_nested_folders_are_packed(output, target):
    (output / "summary.csv").write_text("channel,value\n1,0.5\n")
    (output / "figures" / "raw").mkdir(parents=True)
    (output / "figures" / "raw" / "trace.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    (output / "figures" / "fit.txt").write_text("slope 0.3")
    size, skipped = pack_output(output, target, max_bytes=1024 * 1024)
    packed = entries(target)
    assert sorted(packed) == ["figures/fit.txt", "figures/raw/trace.png", "summary.csv"]
    assert packed["summary.csv"] == b"channel,value\n1,0.5\n"
    assert packed["figures/raw/trace.png"] == (output / "figures" / "raw" / "trace.png").read_bytes()
    assert skipped == []
    assert size == target.stat().st_size


def test_a_symlink_to_a_host_file_is_skipped_and_reported(output, target):
    (output / "result.txt").write_text("mine")
    (output / "passwd").symlink_to("/etc/passwd")
    _, skipped = pack_output(output, target, max_bytes=1024 * 1024)
    assert sorted(entries(target)) == ["result.txt"]
    assert skipped == ["passwd"]


def test_a_symlinked_directory_is_skipped_and_reported(output, target, tmp_path):
    secrets = tmp_path / "elsewhere"
    secrets.mkdir()
    (secrets / "private.key").write_text("not for the result")
    (output / "kept.txt").write_text("kept")
    (output / "sub").mkdir()
    (output / "sub" / "linked").symlink_to(secrets, target_is_directory=True)
    (output / "etc").symlink_to("/etc", target_is_directory=True)
    _, skipped = pack_output(output, target, max_bytes=1024 * 1024)
    assert sorted(entries(target)) == ["kept.txt"]
    assert sorted(skipped) == ["etc", "sub/linked"]


def test_a_fifo_is_skipped_instead_of_blocking_the_pack(output, target):
    os.mkfifo(output / "pipe")
    (output / "data.txt").write_text("d")
    _, skipped = pack_output(output, target, max_bytes=1024 * 1024)
    assert sorted(entries(target)) == ["data.txt"]
    assert skipped == ["pipe"]


def test_an_output_folder_that_is_itself_a_symlink_packs_nothing(tmp_path, target):
    real = tmp_path / "host-files"
    real.mkdir()
    (real / "secret.txt").write_text("host data")
    output = tmp_path / "project" / "output"
    output.parent.mkdir(parents=True)
    output.symlink_to(real, target_is_directory=True)
    pack_output(output, target, max_bytes=1024 * 1024)
    assert entries(target) == {}


def test_a_missing_output_folder_gives_an_empty_result(tmp_path, target):
    size, skipped = pack_output(tmp_path / "no-output", target, max_bytes=1024)
    assert entries(target) == {}
    assert (size, skipped) == (target.stat().st_size, [])


def test_output_over_the_limit_raises_result_too_large_and_leaves_no_file(output, target):
    (output / "a.bin").write_bytes(b"a" * 600)
    (output / "b.bin").write_bytes(b"b" * 600)
    with pytest.raises(ResultTooLarge) as caught:
        pack_output(output, target, max_bytes=1000)
    assert isinstance(caught.value, ExecutionFailed)
    assert caught.value.code == "result_too_large"
    assert list(target.parent.iterdir()) == []


def test_output_exactly_at_the_limit_is_packed(output, target):
    (output / "a.bin").write_bytes(b"a" * 1000)
    pack_output(output, target, max_bytes=1000)
    assert entries(target) == {"a.bin": b"a" * 1000}


def test_symlinks_do_not_count_towards_the_limit(output, target, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    (output / "big-link").symlink_to(big)
    (output / "small.txt").write_text("s")
    _, skipped = pack_output(output, target, max_bytes=100)
    assert sorted(entries(target)) == ["small.txt"]
    assert skipped == ["big-link"]


def test_an_earlier_result_is_replaced_whole(output, target):
    target.write_bytes(b"an older result")
    (output / "new.txt").write_text("new")
    pack_output(output, target, max_bytes=1024)
    assert entries(target) == {"new.txt": b"new"}
    assert [p.name for p in target.parent.iterdir()] == ["result.zip"]


def test_an_unwritable_target_fails_as_execution_failed_without_a_partial_file(output, tmp_path):
    (output / "a.txt").write_text("a")
    target = tmp_path / "missing-folder" / "result.zip"
    with pytest.raises(ExecutionFailed) as caught:
        pack_output(output, target, max_bytes=1024)
    assert "could not be saved" in caught.value.message
    assert not target.with_name("result.zip.part").exists()
