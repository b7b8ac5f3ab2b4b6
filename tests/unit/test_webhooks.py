"""Webhook targets and signatures, the drain message and what a job ran with, as contracts."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from nias.errors import BadMessage
from nias.messages import ControlMessage, UnitDrain, decode_control
from nias.ran_with import Package, RanWith, check_ran_with
from nias.settings import load_settings

from backend.webhooks import WebhookRefused, check_target, sign


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/x",
                                 "http://192.168.0.9/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
                                 "ftp://example.org/x", "not a url"])
def test_a_webhook_to_loopback_private_link_local_or_no_http_address_is_refused(url):
    with pytest.raises(WebhookRefused) as refused:
        check_target(url, load_settings({}))
    assert refused.value.details["field"] == "url" and refused.value.status == 400


def test_a_network_the_admin_allows_may_be_called():
    settings = load_settings({"NIAS_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32, 10.0.0.0/8"})
    assert check_target("http://127.0.0.1:8000/hook", settings) == "http://127.0.0.1:8000/hook"
    with pytest.raises(WebhookRefused):
        check_target("http://192.168.1.1/hook", settings)


def test_the_signature_is_the_hmac_sha256_of_the_body_with_the_users_secret():
    body = b'{"event":"job.finished"}'
    assert sign("s3cret", body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()


def test_a_drain_and_a_job_control_are_told_apart_on_the_control_exchange():
    drain = decode_control(UnitDrain(unit="unit-2", drain=True).encode())
    assert drain == UnitDrain(unit="unit-2", drain=True)
    control = decode_control(ControlMessage(job_id="abc", attempt=1, action=ControlMessage.PAUSE).encode())
    assert isinstance(control, ControlMessage)
    with pytest.raises(BadMessage):
        decode_control(b'{"v": 1, "type": "drain", "unit": "../x", "drain": true}')


def test_what_a_job_ran_with_goes_through_its_json_form_and_refuses_what_is_not_a_plain_name():
    ran = RanWith("3.11.7", (Package("numpy", "2.1.0"), Package("scipy", "1.14.1")), "unit-1", "lab-box")
    assert RanWith.from_json(ran.to_json()) == ran
    assert check_ran_with({**ran.to_json(), "packages": [["numpy", "2.1.0; rm -rf /"]]})
    assert check_ran_with({**ran.to_json(), "extra": 1})
    assert check_ran_with({**ran.to_json(), "packages": [["p", "1"]] * 1001})
