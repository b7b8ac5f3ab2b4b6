"""A job's parameters: what the job message accepts, and how the CLI reads name=value."""
from __future__ import annotations

import pytest

from nias.errors import BadMessage
from nias.messages import JobMessage
from nias.params import MAX_PARAMS_BYTES, params_problem, parse_value, split_sweep_values

SHA = "0" * 64


def test_an_object_of_json_values_is_accepted_as_parameters():
    assert params_problem({"alpha": 0.5, "mode": "fast", "n": 3, "on": True, "list": [1, {"x": None}]}) is None


@pytest.mark.parametrize("params, problem", [
    ([1, 2], "must be a JSON object"),
    ({"1abc": 1}, "name"),
    ({"has space": 1}, "name"),
    ({"x": float("nan")}, "finite"),
    ({"x": [[[[[1]]]]]}, "deep"),
    ({"x": "a" * MAX_PARAMS_BYTES}, "KiB"),
    ({f"p{i}": i for i in range(101)}, "at most 100"),
])
def test_parameters_that_are_not_a_small_object_of_named_json_values_are_refused(params, problem):
    assert problem in params_problem(params)


def test_the_job_message_carries_parameters_and_refuses_bad_ones():
    message = JobMessage(job_id="j1", upload="jobs/j1/upload.zip", sha256=SHA, size=1, dispatch=1,
                         params={"alpha": 0.1})
    assert JobMessage.decode(message.encode()).params == {"alpha": 0.1}
    bad = JobMessage(job_id="j1", upload="jobs/j1/upload.zip", sha256=SHA, size=1, dispatch=1,
                     params={"bad name": 1})
    with pytest.raises(BadMessage, match="params"):
        JobMessage.decode(bad.encode())


def test_a_message_without_parameters_decodes_to_none():
    raw = b'{"v":1,"type":"job","job_id":"j1","upload":"jobs/j1/upload.zip","sha256":"' + SHA.encode() + \
          b'","size":1,"dispatch":1}'
    assert JobMessage.decode(raw).params == {}


@pytest.mark.parametrize("text, value", [
    ("0.5", 0.5), ("4096", 4096), ("true", True), ("fast", "fast"), ('"4096"', "4096"), ("[1,2]", [1, 2]),
    ("", ""),
])
def test_a_command_line_value_is_json_when_it_parses_and_text_otherwise(text, value):
    assert parse_value(text) == value


def test_sweep_values_are_split_on_commas_or_read_as_a_json_list():
    assert split_sweep_values("0.1,0.2, 0.5") == [0.1, 0.2, 0.5]
    assert split_sweep_values("fast,exact") == ["fast", "exact"]
    assert split_sweep_values('["a,b", "c"]') == ["a,b", "c"]
