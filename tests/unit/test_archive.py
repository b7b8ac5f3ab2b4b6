"""The upload rules of `nias.archive`: what `inspect_zip` refuses and what `extract_project` writes."""
from __future__ import annotations

import os
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from nias.archive import MAX_REQUIREMENTS_BYTES, ZipLimits, extract_project, inspect_zip, read_requirements
from nias.errors import BadUpload

CODE = "print('hello')\n"


def refusal(path: Path, limits: ZipLimits) -> BadUpload:
    with pytest.raises(BadUpload) as caught:
        inspect_zip(path, limits)
    assert caught.value.status == 400
    return caught.value


def entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def set_encrypted_flag(path: Path) -> None:
    """Mark every entry as encrypted (zipfile cannot write encrypted entries itself)."""
    data = bytearray(path.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) != -1:
            data[found + flag_offset] |= 0x1
            start = found + 4
    path.write_bytes(bytes(data))


# --- what is refused -------------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_is_refused_as_not_a_zip(tmp_path, limits):
    path = tmp_path / "project.zip"
    path.write_text("print('this is code, not a zip')\n")
    assert refusal(path, limits).code == "not_a_zip"


def test_a_truncated_zip_is_refused_as_not_a_zip(make_zip, limits):
    path = make_zip({"code.py": CODE * 100})
    path.write_bytes(path.read_bytes()[:40])
    assert refusal(path, limits).code == "not_a_zip"


def test_a_zip_without_entries_is_refused_as_empty(make_zip, limits):
    assert refusal(make_zip({}), limits).code == "empty_zip"


def test_a_zip_holding_only_macos_metadata_is_refused_as_empty(make_zip, limits):
    path = make_zip({
        "__MACOSX/project/._code.py": b"\x00\x05\x16\x07",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "project/.DS_Store": b"\x00\x00\x00\x01Bud1",
        "project/": b"",
    })
    assert refusal(path, limits).code == "empty_zip"


def test_a_zip_without_code_py_is_refused_as_no_code_py(make_zip, limits):
    path = make_zip({"main.py": CODE, "requirements.txt": "numpy\n"})
    assert refusal(path, limits).code == "no_code_py"


def test_code_py_deeper_than_one_top_folder_is_refused_as_no_code_py(make_zip, limits):
    path = make_zip({"outer/inner/code.py": CODE})
    assert refusal(path, limits).code == "no_code_py"


def test_code_py_under_two_different_top_folders_is_refused_as_no_code_py(make_zip, limits):
    path = make_zip({"first/code.py": CODE, "second/code.py": CODE})
    assert refusal(path, limits).code == "no_code_py"


def test_a_top_folder_beside_a_loose_file_is_refused_as_no_code_py(make_zip, limits):
    path = make_zip({"project/code.py": CODE, "notes.txt": "loose"})
    assert refusal(path, limits).code == "no_code_py"


@pytest.mark.parametrize("name", ["/etc/code.py", "\\windows\\code.py", "C:/project/code.py"])
def test_a_zip_with_an_absolute_path_is_refused_as_unsafe_path(make_zip, limits, name):
    path = make_zip({"code.py": CODE, name: "x"})
    assert refusal(path, limits).code == "unsafe_path"


@pytest.mark.parametrize("name", ["../evil.py", "project/../../evil.py", "project/sub/../../../evil.py"])
def test_a_zip_with_a_dotdot_entry_is_refused_as_unsafe_path(make_zip, limits, name):
    path = make_zip({"code.py": CODE, name: "x"})
    assert refusal(path, limits).code == "unsafe_path"


def test_a_zip_with_a_backslash_traversal_is_refused_as_unsafe_path(make_zip, limits):
    path = make_zip({"code.py": CODE, "project\\..\\..\\evil.py": "x"})
    assert refusal(path, limits).code == "unsafe_path"


def test_a_zip_with_a_nul_byte_in_a_name_is_refused_as_unsafe_path(make_zip, limits):
    path = make_zip({"code.py": CODE, "dataXhidden.csv": "1"})
    path.write_bytes(path.read_bytes().replace(b"dataXhidden", b"data\x00hidden"))
    assert refusal(path, limits).code == "unsafe_path"


def test_a_name_longer_than_a_filesystem_allows_is_refused_as_name_too_long(make_zip, limits):
    path = make_zip({"code.py": CODE, "data/" + "n" * 256 + ".csv": "1"})
    assert refusal(path, limits).code == "name_too_long"


def test_a_zip_with_a_symlink_entry_is_refused_as_symlink_entry(make_zip, limits):
    link = entry("passwd", stat.S_IFLNK | 0o777)
    path = make_zip([("code.py", CODE), (link, "/etc/passwd")])
    assert refusal(path, limits).code == "symlink_entry"


def test_a_zip_with_the_same_entry_twice_is_refused_as_duplicate_entry(make_zip, limits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        path = make_zip([("code.py", CODE), ("data.csv", "a"), ("data.csv", "b")])
    assert refusal(path, limits).code == "duplicate_entry"


def test_two_spellings_of_one_path_are_refused_as_duplicate_entry(make_zip, limits):
    path = make_zip([("code.py", CODE), ("data/x.csv", "a"), ("data\\x.csv", "b")])
    assert refusal(path, limits).code == "duplicate_entry"


def test_a_zip_with_an_encrypted_entry_is_refused_as_encrypted_entry(make_zip, limits):
    path = make_zip({"code.py": CODE, "secret.csv": "1,2,3\n"})
    set_encrypted_flag(path)
    assert refusal(path, limits).code == "encrypted_entry"


def test_a_zip_with_more_files_than_the_limit_is_refused_as_too_many_files(make_zip):
    limits = ZipLimits(max_files=3, max_unpacked_bytes=1024 * 1024, max_ratio=200)
    path = make_zip({"code.py": CODE, "a.txt": "a", "b.txt": "b", "c.txt": "c"})
    assert refusal(path, limits).code == "too_many_files"


def test_a_zip_with_exactly_the_limit_of_files_is_accepted(make_zip):
    limits = ZipLimits(max_files=3, max_unpacked_bytes=1024 * 1024, max_ratio=200)
    project = inspect_zip(make_zip({"code.py": CODE, "a.txt": "a", "b.txt": "b"}), limits)
    assert len(project.members) == 3


def test_ignored_metadata_does_not_count_towards_the_file_limit(make_zip):
    limits = ZipLimits(max_files=1, max_unpacked_bytes=1024 * 1024, max_ratio=200)
    path = make_zip({"code.py": CODE, "__MACOSX/._code.py": "m", ".DS_Store": "d", "Thumbs.db": "t"})
    assert [m.filename for m in inspect_zip(path, limits).members] == ["code.py"]


def test_a_zip_that_unpacks_beyond_the_limit_is_refused_as_too_large_unpacked(make_zip):
    limits = ZipLimits(max_files=100, max_unpacked_bytes=4096, max_ratio=200)
    path = make_zip({"code.py": CODE, "data.bin": os.urandom(5000)})
    assert refusal(path, limits).code == "too_large_unpacked"


def test_a_large_zero_filled_member_is_refused_as_compression_ratio(make_zip, limits):
    path = make_zip({"code.py": CODE, "zeros.bin": bytes(8 * 1024 * 1024)})
    error = refusal(path, limits)
    assert error.code == "compression_ratio"
    assert "zeros.bin" in error.message


def test_small_highly_compressible_files_are_accepted(make_zip, limits):
    entries = {"code.py": CODE, **{f"masks/{i}.dat": bytes(10 * 1024) for i in range(20)}}
    project = inspect_zip(make_zip(entries), limits)
    assert project.unpacked_bytes == len(CODE) + 20 * 10 * 1024


def test_the_first_broken_rule_is_named_in_the_message(make_zip, limits):
    error = refusal(make_zip({"code.py": CODE, "../escape.txt": "x"}), limits)
    assert "../escape.txt" in error.message


# --- what is accepted ------------------------------------------------------------------------


def test_code_py_at_the_root_is_accepted_with_an_empty_root(make_zip, limits):
    project = inspect_zip(make_zip({"code.py": CODE, "data.csv": "1,2\n"}), limits)
    assert project.root == ""
    assert sorted(m.filename for m in project.members) == ["code.py", "data.csv"]
    assert project.has_requirements is False


def test_code_py_under_one_top_folder_is_accepted_with_that_root(make_zip, limits):
    path = make_zip({
        "analysis/": b"",
        "analysis/code.py": CODE,
        "analysis/requirements.txt": "numpy\n",
        "analysis/data/input.csv": "1,2\n",
    })
    project = inspect_zip(path, limits)
    assert project.root == "analysis/"
    assert project.has_requirements is True
    assert project.unpacked_bytes == len(CODE) + len("numpy\n") + len("1,2\n")


def test_macos_metadata_beside_one_top_folder_is_ignored(make_zip, limits):
    path = make_zip({
        "analysis/code.py": CODE,
        "__MACOSX/analysis/._code.py": b"\x00\x05\x16\x07",
        "analysis/.DS_Store": b"Bud1",
        "analysis/._data.csv": b"\x00",
    })
    project = inspect_zip(path, limits)
    assert project.root == "analysis/"
    assert [m.filename for m in project.members] == ["analysis/code.py"]


def test_requirements_outside_the_project_root_do_not_count(make_zip, limits):
    path = make_zip({"code.py": CODE, "vendor/requirements.txt": "numpy\n"})
    assert inspect_zip(path, limits).has_requirements is False


def test_requirements_are_read_as_the_zip_names_them_even_when_that_name_is_not_plain(make_zip, limits):
    path = make_zip({"./code.py": CODE, "./requirements.txt": "six==1.16.0\n"})
    project = inspect_zip(path, limits)
    assert project.has_requirements and read_requirements(path, project) == "six==1.16.0\n"
    assert read_requirements(make_zip({"code.py": CODE}), inspect_zip(make_zip({"code.py": CODE}), limits)) == ""


def test_damaged_requirements_are_refused_as_a_bad_zip_not_a_server_error(tmp_path, limits):
    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("code.py", CODE)
        archive.writestr("requirements.txt", "six==1.16.0\n")
    path.write_bytes(path.read_bytes().replace(b"six==1.16.0", b"six==9.99.9"))  # the CRC no longer matches
    project = inspect_zip(path, limits)
    with pytest.raises(BadUpload) as caught:
        read_requirements(path, project)
    assert caught.value.code == "not_a_zip" and caught.value.status == 400


def test_a_huge_requirements_file_is_refused_before_it_is_read(tmp_path, limits):
    path = tmp_path / "huge.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # stored: no zip-bomb ratio to trip first
        archive.writestr("code.py", CODE)
        archive.writestr("requirements.txt", "six\n" * (MAX_REQUIREMENTS_BYTES // 4 + 1))
    with pytest.raises(BadUpload, match="larger than"):
        read_requirements(path, inspect_zip(path, limits))


# --- extract_project -------------------------------------------------------------------------


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_extract_writes_every_member_below_dest_and_nothing_else(tmp_path, make_zip, limits):
    path = make_zip({"code.py": CODE, "data/input.csv": "1,2\n", "data/deep/more.txt": "more"}, name="p.zip")
    before = files_under(tmp_path)
    dest = tmp_path / "work" / "job-1"
    folder = extract_project(path, dest, limits)
    assert folder == dest.resolve()
    assert files_under(dest) == {"code.py", "data/input.csv", "data/deep/more.txt"}
    assert (dest / "data" / "input.csv").read_text() == "1,2\n"
    assert files_under(tmp_path) - before == {f"work/job-1/{name}" for name in files_under(dest)}


def test_extract_refuses_a_dotdot_zip_and_writes_nothing_outside_dest(tmp_path, make_zip, limits):
    path = make_zip({"code.py": CODE, "../../escaped.txt": "x"}, name="bad.zip")
    before = files_under(tmp_path)
    with pytest.raises(BadUpload) as caught:
        extract_project(path, tmp_path / "deep" / "dest", limits)
    assert caught.value.code == "unsafe_path"
    assert files_under(tmp_path) == before
    assert not (tmp_path / "deep").exists()


def test_extract_creates_output_when_the_project_has_none(tmp_path, make_zip, limits):
    folder = extract_project(make_zip({"code.py": CODE}), tmp_path / "dest", limits)
    assert (folder / "output").is_dir()
    assert list((folder / "output").iterdir()) == []


def test_extract_keeps_an_output_folder_the_project_brings(tmp_path, make_zip, limits):
    folder = extract_project(make_zip({"code.py": CODE, "output/seed.txt": "kept"}), tmp_path / "dest", limits)
    assert (folder / "output" / "seed.txt").read_text() == "kept"


def test_extract_returns_the_top_folder_when_there_is_one(tmp_path, make_zip, limits):
    dest = tmp_path / "dest"
    folder = extract_project(make_zip({"analysis/code.py": CODE, "analysis/a.csv": "1"}), dest, limits)
    assert folder == dest.resolve() / "analysis"
    assert (folder / "code.py").read_text() == CODE
    assert (folder / "output").is_dir()
    assert not (dest / "output").exists()


def test_extract_turns_backslash_separators_into_folders(tmp_path, make_zip, limits):
    dest = tmp_path / "dest"
    folder = extract_project(make_zip({"analysis\\code.py": CODE, "analysis\\data\\a.csv": "1"}), dest, limits)
    assert folder == dest.resolve() / "analysis"
    assert (folder / "data" / "a.csv").read_text() == "1"


def test_extract_refuses_to_write_into_an_existing_dest(tmp_path, make_zip, limits):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "code.py").write_text("earlier run")
    with pytest.raises(FileExistsError):
        extract_project(make_zip({"code.py": CODE}), dest, limits)
    assert files_under(dest) == {"code.py"}
    assert (dest / "code.py").read_text() == "earlier run"


def test_extract_keeps_the_executable_bit_and_nothing_more(tmp_path, make_zip, limits):
    path = make_zip([(entry("code.py", stat.S_IFREG | 0o644), CODE),
                     (entry("run.sh", stat.S_IFREG | 0o4777), "#!/bin/sh\n")])
    folder = extract_project(path, tmp_path / "dest", limits)
    assert stat.S_IMODE((folder / "code.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder / "run.sh").stat().st_mode) == 0o755


def test_many_small_members_that_together_unpack_past_the_floor_are_held_to_the_ratio(make_zip):
    roomy = ZipLimits(max_files=200, max_unpacked_bytes=1024 * 1024 * 1024, max_ratio=200)
    members = {"code.py": "pass", **{f"zeros/{i}.bin": b"\0" * (1024 * 1024) for i in range(70)}}
    error = refusal(make_zip(members), roomy)
    assert error.code == "compression_ratio" and "zip bomb" in error.message


def test_a_project_of_small_compressible_files_below_the_floor_is_accepted(make_zip):
    roomy = ZipLimits(max_files=200, max_unpacked_bytes=1024 * 1024 * 1024, max_ratio=200)
    members = {"code.py": "pass", **{f"zeros/{i}.csv": b"0," * 5000 for i in range(150)}}
    assert inspect_zip(make_zip(members), roomy).root == ""
