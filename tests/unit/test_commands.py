"""Commands: reading command.toml, checking a job's parameters, seeing changes on disk."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nias.errors import BadRequest
from backend.commands import CommandBook, UnknownCommand, load_command
from tests.support.projects import WELCH



def make_command(root: Path, folder: str, declaration: str, code: str = "print('hi')\n") -> Path:
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "command.toml").write_text(declaration)
    (path / "code.py").write_text(code)
    return path


def test_a_declaration_gives_the_command_its_typed_parameters(tmp_path):
    command = load_command(make_command(tmp_path, "welch", WELCH))
    assert command.name == "welch-psd" and command.title == "Power spectrum (Welch)"
    assert [(p.name, p.type) for p in command.parameters] == [
        ("nperseg", "int"), ("window", "choice"), ("label", "str"), ("detrend", "bool"), ("alpha", "float")]
    assert command.to_json()["parameters"][0] == {"name": "nperseg", "type": "int", "required": False,
                                                  "help": "Segment length", "default": 2048, "min": 64, "max": 65536}
    assert set(command.files) == {"command.toml", "code.py"} and len(command.digest) == 64


def test_given_parameters_are_checked_and_defaults_fill_in_the_rest(tmp_path):
    command = load_command(make_command(tmp_path, "welch", WELCH))
    assert command.resolve({"label": "s3", "nperseg": 4096}) == {
        "nperseg": 4096, "window": "hann", "label": "s3", "detrend": False}


@pytest.mark.parametrize("given, name, problem", [
    ({"label": "s3", "nperseg": "4096"}, "nperseg", "whole number"),
    ({"label": "s3", "nperseg": 1.5}, "nperseg", "whole number"),
    ({"label": "s3", "nperseg": True}, "nperseg", "whole number"),
    ({"label": "s3", "nperseg": 32}, "nperseg", "at least 64"),
    ({"label": "s3", "nperseg": 70000}, "nperseg", "at most 65536"),
    ({"label": "s3", "window": "kaiser"}, "window", "one of hann, hamming, blackman"),
    ({"label": 3}, "label", "text"),
    ({"label": "s3", "alpha": "big"}, "alpha", "a number"),
    ({"label": "s3", "alpha": -1}, "alpha", "at least 0"),
    ({"label": "s3", "alpha": 1.5}, "alpha", "at most 1"),
    ({"label": "s3", "detrend": "yes"}, "detrend", "true or false"),
    ({}, "label", "required"),
    ({"label": "s3", "colour": "red"}, "colour", "not a parameter"),
])
def test_every_kind_of_bad_parameter_is_refused_naming_it(tmp_path, given, name, problem):
    command = load_command(make_command(tmp_path, "welch", WELCH))
    with pytest.raises(BadRequest) as caught:
        command.resolve(given)
    assert caught.value.status == 400 and caught.value.details["param"] == name
    assert problem in caught.value.message and repr(name) in caught.value.message


@pytest.mark.parametrize("declaration, reason", [
    ("[command\nname=", "not valid TOML"),
    ('[[parameters]]\nname = "x"\ntype = "complex"', "type 'complex'"),
    ('[[parameters]]\nname = "x"\ntype = "choice"', "without a list of choices"),
    ('[[parameters]]\nname = "x"\ntype = "int"\ndefault = 1\nmin = 5', "default must be at least 5"),
    ('[[parameters]]\nname = "x"\ntype = "int"\nmin = 5\nmax = 1', "min above max"),
    ('[[parameters]]\nname = "x"\ntype = "str"\ncolour = 1', "unknown keys: colour"),
    ('[command]\nname = "bad name"', "name 'bad name'"),
])
def test_a_broken_declaration_is_listed_with_its_reason_and_the_others_keep_working(tmp_path, declaration, reason):
    make_command(tmp_path, "good", '[command]\nname = "good"\n')
    make_command(tmp_path, "broken", declaration)
    book = CommandBook(tmp_path)
    assert [command.name for command in book.usable()] == ["good"]
    [broken] = book.broken()
    assert broken.folder == "broken" and reason in broken.reason


def test_a_folder_without_code_py_or_with_a_taken_name_is_broken(tmp_path):
    make_command(tmp_path, "a", '[command]\nname = "same"\n')
    make_command(tmp_path, "b", '[command]\nname = "same"\n')
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "command.toml").write_text("")
    reasons = {broken.folder: broken.reason for broken in CommandBook(tmp_path).broken()}
    assert "taken by the folder a" in reasons["b"] and "no code.py" in reasons["c"]


def test_commands_added_changed_and_removed_on_disk_are_seen_without_a_new_book(tmp_path):
    book = CommandBook(tmp_path)
    assert book.usable() == []
    folder = make_command(tmp_path, "echo", '[command]\ntitle = "Echo"\n')
    first = book.get("echo")
    assert first.title == "Echo"
    (folder / "code.py").write_text("print('changed')\n")
    os.utime(folder / "code.py", ns=(1, 1))  # a change of content whatever the clock's resolution
    assert book.get("echo").digest != first.digest
    (folder / "command.toml").write_text('[command]\ntitle = "Echo two"\n')
    assert book.get("echo").title == "Echo two"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    with pytest.raises(UnknownCommand):
        book.get("echo")


def test_links_in_a_command_folder_are_left_out_of_its_files(tmp_path):
    folder = make_command(tmp_path, "linky", "")
    (folder / "secret").symlink_to("/etc/hostname")
    assert "secret" not in load_command(folder).files
