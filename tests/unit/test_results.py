"""`process_unit.results.pack_output`: only regular files of output/ reach the result zip, and
whatever else a job leaves there is left out with its reason, never followed and never fatal."""
from __future__ import annotations

import os
import socket
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest

from nias.errors import ExecutionFailed
from process_unit.results import PackedResult, ResultLimits, ResultTooLarge, pack_output


def pack(output: Path, target: Path, max_bytes: int = 1024 * 1024, max_files: int = 1000,
         **limits) -> tuple[int, list[str]]:
    """Pack `output` (inside its project folder); return the zip's size and the names left out."""
    packed = pack_output(output.parent, target, ResultLimits(max_bytes, max_files, **limits))
    return packed.size, [note.split(": ", 1)[0].removeprefix("output/") for note in packed.left_out]


def reasons(packed: PackedResult) -> dict[str, str]:
    return dict(note.removeprefix("output/").split(": ", 1) for note in packed.left_out)


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
    size, skipped = pack(output, target, max_bytes=1024 * 1024)
    packed = entries(target)
    assert sorted(packed) == ["figures/fit.txt", "figures/raw/trace.png", "summary.csv"]
    assert packed["summary.csv"] == b"channel,value\n1,0.5\n"
    assert packed["figures/raw/trace.png"] == (output / "figures" / "raw" / "trace.png").read_bytes()
    assert skipped == []
    assert size == target.stat().st_size


def test_a_symlink_to_a_host_file_is_skipped_and_reported(output, target):
    (output / "result.txt").write_text("mine")
    (output / "passwd").symlink_to("/etc/passwd")
    _, skipped = pack(output, target, max_bytes=1024 * 1024)
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
    _, skipped = pack(output, target, max_bytes=1024 * 1024)
    assert sorted(entries(target)) == ["kept.txt"]
    assert sorted(skipped) == ["etc", "sub/linked"]


def test_a_fifo_is_skipped_instead_of_blocking_the_pack(output, target):
    os.mkfifo(output / "pipe")
    (output / "data.txt").write_text("d")
    _, skipped = pack(output, target, max_bytes=1024 * 1024)
    assert sorted(entries(target)) == ["data.txt"]
    assert skipped == ["pipe"]


def test_an_output_folder_that_is_itself_a_symlink_packs_nothing(tmp_path, target):
    real = tmp_path / "host-files"
    real.mkdir()
    (real / "secret.txt").write_text("host data")
    output = tmp_path / "project" / "output"
    output.parent.mkdir(parents=True)
    output.symlink_to(real, target_is_directory=True)
    packed = pack_output(output.parent, target, ResultLimits(1024 * 1024, 100))
    assert entries(target) == {}
    assert packed.left_out == ["output/: output is a symbolic link, which is not followed: the result is empty"]


def test_a_missing_output_folder_gives_an_empty_result(tmp_path, target):
    (tmp_path / "project").mkdir()
    size, skipped = pack(tmp_path / "project" / "output", target, max_bytes=1024)
    assert entries(target) == {}
    assert (size, skipped) == (target.stat().st_size, [])


def test_output_over_the_limit_raises_result_too_large_and_leaves_no_file(output, target):
    (output / "a.bin").write_bytes(b"a" * 600)
    (output / "b.bin").write_bytes(b"b" * 600)
    with pytest.raises(ResultTooLarge) as caught:
        pack(output, target, max_bytes=1000)
    assert isinstance(caught.value, ExecutionFailed)
    assert caught.value.code == "result_too_large"
    assert list(target.parent.iterdir()) == []


def test_output_exactly_at_the_limit_is_packed(output, target):
    (output / "a.bin").write_bytes(b"a" * 1000)
    pack(output, target, max_bytes=1000)
    assert entries(target) == {"a.bin": b"a" * 1000}


def test_symlinks_do_not_count_towards_the_limit(output, target, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    (output / "big-link").symlink_to(big)
    (output / "small.txt").write_text("s")
    _, skipped = pack(output, target, max_bytes=100)
    assert sorted(entries(target)) == ["small.txt"]
    assert skipped == ["big-link"]


def test_an_earlier_result_is_replaced_whole(output, target):
    target.write_bytes(b"an older result")
    (output / "new.txt").write_text("new")
    pack(output, target, max_bytes=1024)
    assert entries(target) == {"new.txt": b"new"}
    assert [p.name for p in target.parent.iterdir()] == ["result.zip"]


def test_an_unwritable_target_fails_as_execution_failed_without_a_partial_file(output, tmp_path):
    (output / "a.txt").write_text("a")
    target = tmp_path / "missing-folder" / "result.zip"
    with pytest.raises(ExecutionFailed) as caught:
        pack(output, target, max_bytes=1024)
    assert "could not be saved" in caught.value.message
    assert not target.with_name("result.zip.part").exists()


def test_a_name_that_is_not_utf8_is_left_out_with_its_reason_and_the_rest_is_packed(output, target):
    with open(os.path.join(os.fsencode(output), b"\xff\xfe.txt"), "wb") as handle:
        handle.write(b"odd")
    (output / "fine.txt").write_text("fine")
    packed = pack_output(output.parent, target, ResultLimits(1024, 10))
    assert entries(target) == {"fine.txt": b"fine"}
    assert reasons(packed) == {"\\xff\\xfe.txt": "its name is not valid UTF-8"}


def test_a_path_longer_than_the_name_limit_is_left_out(output, target):
    deep = output / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("deep")
    (output / "short.txt").write_text("short")
    packed = pack_output(output.parent, target, ResultLimits(1024, 10, max_name_bytes=300))
    assert sorted(entries(target)) == ["short.txt"]
    [(name, reason)] = reasons(packed).items()
    assert name.startswith("d" * 200) and reason == "its path is longer than 300 bytes"


def test_folders_nested_past_the_depth_limit_are_left_out(output, target):
    folder = output
    for level in range(6):
        folder = folder / f"l{level}"
        folder.mkdir()
        (folder / "here.txt").write_text(str(level))
    packed = pack_output(output.parent, target, ResultLimits(1024, 100, max_depth=3))
    assert sorted(entries(target)) == ["l0/here.txt", "l0/l1/here.txt", "l0/l1/l2/here.txt"]
    assert reasons(packed) == {"l0/l1/l2/l3/": "nested deeper than 3 folders"}


def test_more_files_than_the_limit_fail_as_result_too_large_naming_the_file_limit(output, target):
    for number in range(11):
        (output / f"{number}.txt").write_text("x")
    with pytest.raises(ResultTooLarge) as caught:
        pack(output, target, max_files=10)
    assert "10 files" in caught.value.message
    assert list(target.parent.iterdir()) == []


def test_a_socket_and_a_symlink_loop_are_left_out_with_what_they_are(output, target):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(output / "control.sock"))
    (output / "loop-a").symlink_to(output / "loop-b")
    (output / "loop-b").symlink_to(output / "loop-a")
    (output / "data.txt").write_text("d")
    try:
        packed = pack_output(output.parent, target, ResultLimits(1024, 10))
    finally:
        listener.close()
    assert entries(target) == {"data.txt": b"d"}
    assert reasons(packed) == {"control.sock": "a socket", "loop-a": "a symbolic link (links are not followed)",
                               "loop-b": "a symbolic link (links are not followed)"}


def test_a_file_without_read_permission_is_packed_readable_when_the_unit_can_read_it(output, target):
    locked = output / "locked.txt"
    locked.write_text("mine")
    locked.chmod(0)
    if os.geteuid() != 0:
        packed = pack_output(output.parent, target, ResultLimits(1024, 10))
        assert reasons(packed) == {"locked.txt": "could not be opened (Permission denied)"}
        return
    pack(output, target)
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("locked.txt")
        assert archive.read(info) == b"mine"
        assert stat.S_IMODE(info.external_attr >> 16) & 0o400  # the researcher can open what comes back


def test_a_folder_swapped_for_a_link_while_the_result_is_written_never_lets_the_link_target_in(
        output, target, tmp_path):
    """The race of a daemon left behind: once packing has begun (on a big first file), `output/d`
    becomes a link to a secret folder. Paths listed before the swap must not be opened through it."""
    secrets = tmp_path / "private"
    secrets.mkdir()
    (secrets / "secret_key").write_text("THE-REAL-KEY")
    (output / "a-big.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    (output / "d").mkdir()
    (output / "d" / "secret_key").write_text("placeholder")
    partial = target.with_name(target.name + ".part")

    def swap_once_packing_begins() -> None:
        while not partial.exists():
            time.sleep(0.001)
        os.rename(output / "d", output / "d-real")
        os.symlink(secrets, output / "d")

    swapper = threading.Thread(target=swap_once_packing_begins)
    swapper.start()
    packed = pack_output(output.parent, target, ResultLimits(100 * 1024 * 1024, 10))
    swapper.join()
    assert b"THE-REAL-KEY" not in entries(target).values()
    assert reasons(packed) == {"d": "a symbolic link (links are not followed)"}
