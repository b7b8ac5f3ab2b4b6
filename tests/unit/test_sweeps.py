"""Expanding a sweep into each job's parameters."""
from __future__ import annotations

import pytest

from nias.errors import BadRequest
from backend.sweeps import expand_sweep, point_label, varied_names


def test_a_grid_expands_to_the_product_of_its_lists_merged_over_the_fixed_parameters():
    points = expand_sweep({"alpha": [0.1, 0.2, 0.5], "mode": ["fast", "exact"]}, {"label": "s3", "mode": "x"}, 1000)
    assert len(points) == 6
    assert points[0] == {"label": "s3", "alpha": 0.1, "mode": "fast"}
    assert {(p["alpha"], p["mode"]) for p in points} == {(a, m) for a in (0.1, 0.2, 0.5) for m in ("fast", "exact")}


def test_a_list_gives_one_job_per_entry_each_merged_over_the_fixed_parameters():
    points = expand_sweep([{"alpha": 0.1}, {"alpha": 0.2, "mode": "exact"}], {"mode": "fast"}, 1000)
    assert points == [{"mode": "fast", "alpha": 0.1}, {"mode": "exact", "alpha": 0.2}]


def test_a_sweep_of_more_jobs_than_allowed_is_refused_before_it_is_expanded():
    with pytest.raises(BadRequest) as caught:
        expand_sweep({"a": list(range(100)), "b": list(range(100)), "c": list(range(100))}, {}, 1000)
    assert caught.value.code == "sweep_too_large" and "1000000" in caught.value.message
    with pytest.raises(BadRequest, match="at most 2"):
        expand_sweep([{"a": 1}, {"a": 2}, {"a": 3}], {}, 2)


@pytest.mark.parametrize("sweep", [{}, [], "alpha", {"alpha": []}, {"alpha": 0.1}, [1, 2], {"bad name": [1]}])
def test_a_sweep_that_is_not_a_grid_of_lists_or_a_list_of_objects_is_refused(sweep):
    with pytest.raises(BadRequest):
        expand_sweep(sweep, {}, 1000)


def test_a_point_with_a_bad_parameter_names_the_job():
    with pytest.raises(BadRequest, match="job 2"):
        expand_sweep([{"a": 1}, {"bad name": 2}], {}, 10)


def test_a_jobs_folder_is_named_by_the_parameters_its_sweep_varies():
    assert point_label({"alpha": 0.1, "mode": "fast", "label": "x"}, ["alpha", "mode"]) == "alpha=0.1_mode=fast"
    assert point_label({"path": "a/b c"}, ["path"]) == "path=a-b-c"
    assert varied_names([{"a": 1}, {"b": 2, "a": 3}]) == ["a", "b"]
