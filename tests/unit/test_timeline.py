"""nias.timeline: the hops in their order, the marks a unit may send, and what a new attempt keeps."""
from nias.timeline import ORDER, UNIT_HOPS, Hop, breakdown, clean_marks, for_new_attempt


def test_the_breakdown_lists_marked_hops_in_their_order_with_the_milliseconds_between():
    rows = breakdown({"recorded": 10.030, "received": 10.0, "claimed": 10.012})
    assert [row["hop"] for row in rows] == ["received", "claimed", "recorded"]
    assert rows[0]["ms"] is None and rows[1]["ms"] == 12.0 and rows[2]["ms"] == 18.0


def test_an_empty_timeline_has_no_rows():
    assert breakdown(None) == [] and breakdown({}) == []


def test_a_units_marks_keep_only_its_own_hops_with_times():
    marks = {"accepted": 5.0, "recorded": 6.0, "started": "soon", "exited": True, "packed": -1, "fetched": 5.5}
    assert clean_marks(marks, UNIT_HOPS) == {"accepted": 5.0, "fetched": 5.5}
    assert clean_marks(["accepted"], UNIT_HOPS) == {}


def test_a_new_attempt_keeps_the_submissions_marks_and_drops_the_last_attempts():
    kept = for_new_attempt({"received": 1.0, "claimed": 2.0, "started": 3.0, "recorded": 4.0})
    assert kept == {"received": 1.0}


def test_every_hop_is_in_the_order_once():
    assert len(ORDER) == len(set(ORDER)) == len(Hop) and ORDER[0] is Hop.RECEIVED and ORDER[-1] is Hop.RECORDED
