"""`nias.messages`: what travels over RabbitMQ, and how strictly it is decoded."""
from __future__ import annotations

import json

import pytest

from nias.errors import BadMessage
from nias.messages import ControlMessage, JobEvent, JobMessage, UnitStatus, decode_event


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
