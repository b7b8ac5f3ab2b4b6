"""`backend.uploads`: job names and integer form fields."""
from __future__ import annotations

import pytest

from backend.uploads import MAX_NAME_LENGTH, clean_name, parse_int_field
from nias.errors import BadRequest


def test_control_characters_are_stripped_from_a_name():
    assert clean_name("filter\x00 run\n3\t\x1b[31m", "fallback") == "filter run3[31m"


def test_invisible_format_characters_are_stripped_from_a_name():
    assert clean_name("report\u202etxt.exe\u200b", "fallback") == "reporttxt.exe"


def test_a_name_is_trimmed():
    assert clean_name("   filter run 3 \n ", "fallback") == "filter run 3"


def test_letters_beyond_ascii_are_kept():
    assert clean_name("Analyse — Zürich 東京", "fallback") == "Analyse — Zürich 東京"


@pytest.mark.parametrize("raw", [None, "", "    ", "\x00\x01\n\t"])
def test_an_empty_name_falls_back(raw):
    assert clean_name(raw, "my-analysis") == "my-analysis"


def test_with_no_name_and_no_fallback_the_job_is_called_job():
    assert clean_name("", "") == "job"


def test_a_name_is_capped_at_200_characters():
    assert MAX_NAME_LENGTH == 200
    assert clean_name("n" * 500, "fallback") == "n" * 200
    assert clean_name("x", "f" * 300) == "x"
    assert clean_name(None, "f" * 300) == "f" * 200


@pytest.mark.parametrize("raw", [None, ""])
def test_an_absent_integer_field_is_none(raw):
    assert parse_int_field(raw, "priority", 0, 9) is None


@pytest.mark.parametrize("raw, expected", [("0", 0), ("9", 9), ("5", 5), (" 7 ", 7)])
def test_an_integer_field_within_its_bounds_is_read(raw, expected):
    assert parse_int_field(raw, "priority", 0, 9) == expected


@pytest.mark.parametrize("raw", ["-1", "10", "1000000"])
def test_an_integer_field_outside_its_bounds_is_refused_naming_field_and_bounds(raw):
    with pytest.raises(BadRequest) as caught:
        parse_int_field(raw, "priority", 0, 9)
    assert caught.value.status == 400
    assert "priority" in caught.value.message and "0" in caught.value.message and "9" in caught.value.message


@pytest.mark.parametrize("raw", ["high", "1.5", "5s", "0x10"])
def test_an_integer_field_that_is_not_a_whole_number_is_refused(raw):
    with pytest.raises(BadRequest) as caught:
        parse_int_field(raw, "timeout_s", 1, 3600)
    assert caught.value.code == "bad_request"
    assert "timeout_s" in caught.value.message


def test_a_name_taken_from_the_file_name_is_cleaned_like_a_given_one():
    assert clean_name(None, "a\tb\x00c") == "abc"
    assert clean_name("", "\n") == "job"
