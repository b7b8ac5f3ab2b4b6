"""`nias.states`: the job states and the one table of allowed transitions."""
from __future__ import annotations

import pytest

from nias.states import FINAL_STATES, REQUESTABLE, TRANSITIONS, JobState, allowed_targets, can_transition, is_final


def test_every_state_has_a_row_in_the_table():
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_a_final_state_has_no_exits(state):
    assert TRANSITIONS[state] == frozenset()
    assert allowed_targets(state) == []
    assert not any(can_transition(state, target) for target in JobState)
    assert is_final(state)


def test_the_final_states_are_succeeded_failed_and_cancelled():
    assert FINAL_STATES == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    assert not is_final(JobState.QUEUED) and not is_final("running") and not is_final("paused")


def test_a_queued_job_may_start_running():
    assert can_transition(JobState.QUEUED, JobState.RUNNING)


def test_a_queued_job_cannot_succeed_without_running():
    assert not can_transition(JobState.QUEUED, JobState.SUCCEEDED)


def test_a_succeeded_job_cannot_run_again():
    assert not can_transition(JobState.SUCCEEDED, JobState.RUNNING)


def test_a_running_job_may_go_back_to_queued_when_its_attempt_is_lost():
    assert can_transition(JobState.RUNNING, JobState.QUEUED)


def test_a_running_job_may_finish_either_way():
    assert can_transition("running", "succeeded") and can_transition("running", "failed")


def test_allowed_targets_are_sorted_plain_strings():
    assert allowed_targets(JobState.RUNNING) == ["cancelled", "failed", "paused", "queued", "succeeded"]
    assert allowed_targets("queued") == ["cancelled", "failed", "running"]
    assert all(type(target) is str for target in allowed_targets(JobState.PAUSED))


def test_an_unknown_state_is_refused():
    with pytest.raises(ValueError):
        can_transition("queued", "exploded")


def test_a_state_prints_and_compares_as_its_lowercase_value():
    assert str(JobState.QUEUED) == "queued"
    assert JobState.RUNNING == "running"
    assert JobState("failed") is JobState.FAILED


def test_what_a_user_may_request_is_a_subset_of_the_table():
    for state, targets in REQUESTABLE.items():
        assert targets <= TRANSITIONS[state]


def test_a_user_may_only_cancel_a_queued_job():
    assert allowed_targets(JobState.QUEUED, REQUESTABLE) == ["cancelled"]
    assert allowed_targets(JobState.PAUSED, REQUESTABLE) == ["cancelled", "running"]
