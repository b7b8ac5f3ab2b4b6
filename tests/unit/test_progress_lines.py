"""The progress line a job prints: `##nias progress <fraction> [message]`."""
from __future__ import annotations

import pytest

from process_unit.joblog import parse_progress


@pytest.mark.parametrize("line,expected", [
    (b"##nias progress 0.42 filtering channel 3\n", (0.42, "filtering channel 3")),
    (b"##nias progress 1\n", (1.0, "")),
    (b"##nias progress 1.7 over the top\n", (1.0, "over the top")),
    (b"##nias progress -3 below\n", (0.0, "below")),
])
def test_a_progress_line_gives_a_fraction_clamped_to_0_1_and_its_message(line, expected):
    assert parse_progress(line) == expected


@pytest.mark.parametrize("line", [b"progress 0.5\n", b"##nias progress half\n", b"##nias progress nan x\n",
                                  b"  ##nias progress 0.5\n", b"##nias progres 0.5\n"])
def test_anything_else_is_an_ordinary_log_line(line):
    assert parse_progress(line) is None


def test_a_long_message_is_cut_to_200_characters():
    assert len(parse_progress(b"##nias progress 0.5 " + b"m" * 500)[1]) == 200
