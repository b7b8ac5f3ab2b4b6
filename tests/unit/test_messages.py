"""`nias.messages`: what travels over RabbitMQ, and how strictly it is decoded."""
from __future__ import annotations

import json

import pytest

from nias.errors import BadMessage, BadSignature
from nias.messages import (MAX_ERROR_BYTES, MAX_MESSAGE_BYTES, ControlAction, ControlMessage, EventKind, JobEvent,
                           JobMessage, UnitStatus, decode_event, unit_key)
from nias.states import JobState


def job_message(**changes) -> JobMessage:
    values = dict(job_id="3f9a2c7d1e5b4a60", upload="jobs/3f9a2c7d1e5b4a60/upload.zip", sha256="ab" * 32,
                  size=187_654_321, dispatch=2, priority=7, timeout_s=1800, limits={"memory_mb": 512})
    values.update(changes)
    return JobMessage(**values)


def job_body(**changes) -> dict:
    body = json.loads(job_message().encode())
    body.update(changes)
    return body


def encoded(body: dict) -> bytes:
    return json.dumps(body).encode()


def refuse(raw, kind=JobMessage) -> BadMessage:
    with pytest.raises(BadMessage) as caught:
        kind.decode(raw)
    assert caught.value.code == "bad_message"
    return caught.value


def test_a_job_message_survives_encode_and_decode():
    message = job_message()
    assert JobMessage.decode(message.encode()) == message


def test_a_job_message_with_only_the_required_fields_gets_the_defaults():
    message = JobMessage(job_id="a", upload="jobs/a/upload.zip", sha256="0" * 64, size=1, dispatch=1)
    decoded = JobMessage.decode(message.encode())
    assert (decoded.priority, decoded.timeout_s, decoded.limits) == (0, None, {})


def test_a_job_message_decodes_from_text_as_well_as_bytes():
    message = job_message()
    assert JobMessage.decode(message.encode().decode()) == message


def test_a_job_event_survives_encode_and_decode():
    event = JobEvent(job_id="3f9a2c7d1e5b4a60", attempt=2, unit="unit-1", event=JobEvent.FINISHED, at=1700000000.25,
                     state="failed", exit_code=1, error="ValueError: bad channel", result_size=2048,
                     details={"env_seconds": 0.4, "env_cached": True, "run_seconds": 12.5})
    assert JobEvent.decode(event.encode()) == event


def test_an_event_without_a_time_is_stamped_when_it_is_made():
    event = JobEvent(job_id="j", attempt=1, unit="u", event=JobEvent.HEARTBEAT)
    assert event.at > 1_600_000_000
    assert JobEvent.decode(event.encode()).at == event.at


def test_the_events_queue_decoder_tells_unit_status_from_job_events():
    status = UnitStatus(unit="unit-2", state="busy", job_id="j1", at=5.0)
    event = JobEvent(job_id="j1", attempt=1, unit="unit-2", event=JobEvent.HEARTBEAT, at=5.0)
    assert decode_event(status.encode()) == status
    assert decode_event(event.encode()) == event


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe\x00", b"[1, 2]", b'{"v": 1, "type": "job"}', b"null"])
def test_the_events_queue_decoder_refuses_anything_else(raw):
    with pytest.raises(BadMessage):
        decode_event(raw)


def test_a_control_message_survives_encode_and_decode():
    message = ControlMessage(job_id="j", attempt=3, action=ControlMessage.PAUSE)
    assert ControlMessage.decode(message.encode()) == message


def test_an_encoded_job_message_stays_a_few_hundred_bytes_whatever_the_upload_size():
    small = job_message(size=1).encode()
    huge = job_message(size=200 * 1024 ** 3).encode()
    assert len(huge) < 400
    assert len(huge) - len(small) < 16


def test_the_encoding_names_schema_version_and_type():
    body = json.loads(job_message().encode())
    assert (body["v"], body["type"]) == (1, "job")


@pytest.mark.parametrize("raw", [b"not json", b"{'single': 'quotes'}", b"\xff\xfe\x00", b""])
def test_a_body_that_is_not_json_is_refused(raw):
    assert "not JSON" in refuse(raw).message


@pytest.mark.parametrize("raw", [b"[1, 2, 3]", b'"job"', b"42", b"null"])
def test_a_json_body_that_is_not_an_object_is_refused(raw):
    assert "not a JSON object" in refuse(raw).message


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_a_message_of_another_schema_version_is_refused(version):
    refuse(encoded(job_body(v=version)))


def test_a_message_without_a_version_is_refused():
    body = job_body()
    del body["v"]
    refuse(encoded(body))


def test_a_message_of_another_type_is_refused():
    event = JobEvent(job_id="j", attempt=1, unit="u", event=JobEvent.HEARTBEAT)
    refuse(event.encode(), JobMessage)
    refuse(job_message().encode(), JobEvent)
    refuse(encoded(job_body(type="jobs")))


@pytest.mark.parametrize("missing", ["job_id", "upload", "sha256", "size", "dispatch"])
def test_a_message_missing_a_required_field_is_refused_naming_it(missing):
    body = job_body()
    del body[missing]
    assert repr(missing) in refuse(encoded(body)).message


def test_a_message_with_an_unknown_field_is_refused_naming_it():
    assert "command" in refuse(encoded(job_body(command="rm -rf /"))).message


@pytest.mark.parametrize("field, value", [
    ("job_id", 42), ("job_id", None), ("size", "187654321"), ("size", 1.5), ("dispatch", "2"),
    ("timeout_s", "3600"), ("limits", ["memory_mb"]), ("priority", None),
])
def test_a_field_of_the_wrong_type_is_refused_naming_it(field, value):
    assert repr(field) in refuse(encoded(job_body(**{field: value}))).message


def test_a_boolean_is_not_taken_for_a_number():
    refuse(encoded(job_body(dispatch=True)))


def test_an_event_with_a_wrong_field_type_is_refused():
    body = json.loads(JobEvent(job_id="j", attempt=1, unit="u", event=JobEvent.LOST).encode())
    refuse(encoded({**body, "attempt": "1"}), JobEvent)
    refuse(encoded({**body, "at": "now"}), JobEvent)
    refuse(encoded({**body, "details": "none"}), JobEvent)


def test_a_number_where_a_float_is_expected_may_be_an_integer():
    body = json.loads(JobEvent(job_id="j", attempt=1, unit="u", event=JobEvent.HEARTBEAT).encode())
    assert JobEvent.decode(encoded({**body, "at": 1700000000})).at == 1700000000


# --- strict decoding: enums, shapes, bounds -----------------------------------------------------

def event_body(**changes) -> dict:
    body = json.loads(JobEvent(job_id="3f9a2c7d1e5b4a60", attempt=1, unit="unit-1", event=JobEvent.FINISHED,
                               state="succeeded", exit_code=0).encode())
    body.update(changes)
    return body


def test_a_finished_event_with_a_state_that_is_not_final_is_refused_at_decode():
    assert "state" in refuse(encoded(event_body(state="done")), JobEvent).message
    refuse(encoded(event_body(state="running")), JobEvent)


def test_a_state_on_an_event_other_than_finished_is_refused():
    refuse(encoded(event_body(event="heartbeat", state="failed")), JobEvent)


def test_an_unknown_event_kind_is_refused_naming_the_kinds():
    message = refuse(encoded(event_body(event="exploded")), JobEvent).message
    assert "heartbeat" in message and "finished" in message


def test_decoded_kinds_and_states_are_enums():
    event = JobEvent.decode(encoded(event_body()))
    assert event.event is EventKind.FINISHED and event.state is JobState.SUCCEEDED


def test_what_the_unit_sends_when_a_job_ends_decodes():
    details = {"env_seconds": 0.4, "env_cached": True, "run_seconds": 12.5, "total_seconds": 13.0, "active_s": 12.9,
               "progress": None, "message": "", "log_bytes": 1234, "limits": {"memory_mb": 512},
               "log_incomplete": "No space left on device"}
    event = JobEvent(job_id="j1", attempt=1, unit="unit-1", event=JobEvent.FINISHED, state="failed", exit_code=1,
                     error="code.py exited with code 1.", details=details)
    assert JobEvent.decode(event.encode()) == event


@pytest.mark.parametrize("kind, details", [
    ("heartbeat", {"paused": "yes"}),
    ("heartbeat", {"active_s": -1}),
    ("heartbeat", {"progress": 1.5}),
    ("progress", {"message": "m" * 5000}),
    ("heartbeat", {"env_seconds": 1.0}),  # a finished event's detail
    ("finished", {"limits": {"memory_mb": "512"}}),
    ("finished", {"log_bytes": 1.5}),
    ("finished", {"shell": "rm -rf /"}),
    ("lost", {"paused": True}),
])
def test_details_outside_their_kinds_shape_are_refused(kind, details):
    state = "failed" if kind == "finished" else None
    refuse(encoded(event_body(event=kind, state=state, details=details)), JobEvent)


def test_an_error_over_the_bound_is_refused_at_decode_and_cut_when_an_event_is_made():
    refuse(encoded(event_body(error="E" * (MAX_ERROR_BYTES + 1))), JobEvent)
    made = JobEvent(job_id="j", attempt=1, unit="u", event=JobEvent.FINISHED, state="failed",
                    error="code.py exited with code 1.\n" + "E" * (150 * 2**20))
    assert len(made.error.encode()) <= MAX_ERROR_BYTES and made.error.startswith("code.py exited")
    assert JobEvent.decode(made.encode()) == made


def test_a_message_larger_than_the_bound_is_refused_before_it_is_parsed():
    assert "larger" in refuse(b" " * (MAX_MESSAGE_BYTES + 1)).message


@pytest.mark.parametrize("field, value", [
    ("job_id", "x" * 101), ("job_id", "../etc"), ("job_id", ""), ("attempt", -1), ("unit", "unit 1"),
    ("at", float("nan")), ("at", float("inf")), ("exit_code", 2**40),
])
def test_event_fields_out_of_bounds_are_refused(field, value):
    refuse(json.dumps(event_body(**{field: value})).encode(), JobEvent)


@pytest.mark.parametrize("field, value", [
    ("upload", "/etc/passwd"), ("upload", "jobs/../../private/nias.db"), ("sha256", "0" * 63),
    ("priority", 11), ("timeout_s", 0), ("limits", {"memory_mb": -1}), ("limits", {"Memory MB": 1}),
    ("size", -5),
])
def test_job_message_fields_out_of_bounds_are_refused(field, value):
    refuse(encoded(job_body(**{field: value})))


def test_a_control_message_with_an_unknown_action_is_refused():
    body = json.loads(ControlMessage(job_id="j", attempt=1, action=ControlMessage.CANCEL).encode())
    refuse(encoded({**body, "action": "explode"}), ControlMessage)
    assert ControlMessage.decode(encoded(body)).action is ControlAction.CANCEL


def test_a_unit_status_with_an_unknown_state_is_refused():
    body = json.loads(UnitStatus(unit="unit-1", state="idle").encode())
    refuse(encoded({**body, "state": "asleep"}), UnitStatus)


# --- signatures ---------------------------------------------------------------------------------

TOKEN = "internal-token"


def keys(unit: str) -> bytes:
    return unit_key(TOKEN, unit)


def test_a_signed_event_verifies_under_its_units_key():
    event = JobEvent(job_id="j1", attempt=2, unit="unit-1", event=JobEvent.HEARTBEAT, details={"paused": False})
    assert decode_event(event.encode(key=keys("unit-1")), key_for=keys) == event


def test_an_unsigned_event_is_refused_when_a_signature_is_required():
    event = JobEvent(job_id="j1", attempt=2, unit="unit-1", event=JobEvent.HEARTBEAT)
    with pytest.raises(BadSignature) as caught:
        decode_event(event.encode(), key_for=keys)
    assert "not signed" in caught.value.message


@pytest.mark.parametrize("change", [{"attempt": 3}, {"job_id": "j2"}, {"unit": "unit-2"}, {"state": "failed"},
                                    {"error": "forged"}])
def test_a_signed_event_changed_after_signing_is_refused(change):
    body = json.loads(JobEvent(job_id="j1", attempt=2, unit="unit-1", event=JobEvent.FINISHED, state="succeeded",
                               exit_code=0).encode(key=keys("unit-1")))
    with pytest.raises(BadSignature):
        decode_event(encoded({**body, **change}), key_for=keys)


def test_an_event_signed_with_another_units_key_is_refused():
    event = JobEvent(job_id="j1", attempt=2, unit="unit-1", event=JobEvent.LOST)
    with pytest.raises(BadSignature):
        decode_event(event.encode(key=keys("unit-2")), key_for=keys)
    with pytest.raises(BadSignature):
        decode_event(event.encode(key=unit_key("another-token", "unit-1")), key_for=keys)


def test_a_unit_status_is_signed_too():
    status = UnitStatus(unit="unit-1", state="busy", job_id="j1", at=5.0)
    assert decode_event(status.encode(key=keys("unit-1")), key_for=keys) == status
    with pytest.raises(BadSignature):
        decode_event(status.encode(), key_for=keys)


def test_each_unit_has_its_own_key_derived_from_the_internal_token():
    assert unit_key(TOKEN, "unit-1") != unit_key(TOKEN, "unit-2") != unit_key("other", "unit-2")
    assert unit_key(TOKEN, "unit-1") == unit_key(TOKEN, "unit-1")
