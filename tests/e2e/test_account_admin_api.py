"""The account, admin and job-management endpoints over HTTP: what they do, and the error contract
(`{"error": {"code", "message", ...}}` with a 4xx) for what they refuse."""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.e2e.conftest import STACK_ENV
from tests.support.projects import zip_entries
from tests.support.stack import LocalStack, wait_until


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A stack of this module's own: its tests demote admins and disable accounts."""
    with LocalStack(tmp_path_factory.mktemp("accounts-stack"), units=1, **STACK_ENV) as stack:
        yield stack


def error_of(answer: requests.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] and error["message"]
    return error


def new_user(stack, role: str = "user") -> tuple[dict, str]:
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    answer = stack.http.post(f"{stack.url}/api/users", json={"email": email, "password": password, "role": role},
                             timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json(), password


def token_for(stack, email: str, password: str, **body) -> requests.Response:
    session = requests.Session()
    assert session.post(f"{stack.url}/api/auth/login", json={"email": email, "password": password}, timeout=10).ok
    csrf = session.get(f"{stack.url}/api/me", timeout=10).json()["csrf_token"]
    return session.post(f"{stack.url}/api/tokens", json=body, headers={"X-CSRF-Token": csrf}, timeout=10)


def test_a_token_needs_a_name_and_may_expire(stack):
    user, password = new_user(stack)
    assert error_of(token_for(stack, user["email"], password, name="  "), 400)["field"] == "name"
    assert error_of(token_for(stack, user["email"], password, name="x", expires_days=0), 400)["field"] == "expires_days"
    made = token_for(stack, user["email"], password, name="laptop", expires_days=30)
    assert made.status_code == 201 and made.json()["expires_at"].startswith("20")
    answer = requests.get(f"{stack.url}/api/me", headers={"Authorization": f"Bearer {made.json()['token']}"}, timeout=10)
    assert answer.ok and answer.json()["email"] == user["email"]


def test_an_admin_disables_enables_resets_and_promotes_a_user(stack):
    user, password = new_user(stack)
    token = token_for(stack, user["email"], password, name="script").json()["token"]
    as_user = {"Authorization": f"Bearer {token}"}
    answer = stack.http.patch(f"{stack.url}/api/users/{user['id']}", json={"disabled": True}, timeout=10)
    assert answer.ok and answer.json()["disabled"] is True
    assert error_of(requests.get(f"{stack.url}/api/me", headers=as_user, timeout=10), 401)
    refused = requests.post(f"{stack.url}/api/auth/login", json={"email": user["email"], "password": password}, timeout=10)
    assert error_of(refused, 401)["code"] == "account_disabled"
    assert stack.http.patch(f"{stack.url}/api/users/{user['id']}", json={"disabled": False}, timeout=10).ok
    assert requests.get(f"{stack.url}/api/me", headers=as_user, timeout=10).ok

    reset = stack.http.post(f"{stack.url}/api/users/{user['id']}/password", timeout=10)
    assert reset.ok
    assert requests.post(f"{stack.url}/api/auth/login", json={"email": user["email"], "password": reset.json()["password"]},
                         timeout=10).ok
    assert error_of(requests.patch(f"{stack.url}/api/users/{user['id']}", json={"role": "admin"}, headers=as_user,
                                   timeout=10), 403)
    promoted = stack.http.patch(f"{stack.url}/api/users/{user['id']}", json={"role": "admin"}, timeout=10)
    assert promoted.ok and promoted.json()["role"] == "admin"
    assert error_of(stack.http.patch(f"{stack.url}/api/users/{user['id']}", json={"role": "root"}, timeout=10),
                    400)["field"] == "role"
    assert error_of(stack.http.patch(f"{stack.url}/api/users/nobody", json={"role": "user"}, timeout=10),
                    404)["code"] == "user_not_found"
    assert stack.http.patch(f"{stack.url}/api/users/{user['id']}", json={"role": "user"}, timeout=10).ok


def test_the_last_admin_who_can_sign_in_is_never_demoted(stack):
    me = stack.http.get(f"{stack.url}/api/me", timeout=10).json()
    others = [u for u in stack.http.get(f"{stack.url}/api/users", timeout=10).json()["users"]
              if u["role"] == "admin" and not u["disabled"] and u["id"] != me["id"]]
    for other in others:  # left over from other tests: made users again
        stack.http.patch(f"{stack.url}/api/users/{other['id']}", json={"role": "user"}, timeout=10)
    assert error_of(stack.http.patch(f"{stack.url}/api/users/{me['id']}", json={"role": "user"}, timeout=10),
                    409)["code"] == "last_admin"
    assert error_of(stack.http.patch(f"{stack.url}/api/users/{me['id']}", json={"disabled": True}, timeout=10),
                    409)["code"] in ("own_account", "last_admin")


def test_drain_dead_letters_storage_and_webhooks_refuse_what_they_cannot_do(stack):
    assert error_of(stack.http.put(f"{stack.url}/api/admin/units/no-such-unit/drain", json={"drain": True},
                                   timeout=10), 404)["code"] == "unit_not_found"
    assert error_of(stack.http.put(f"{stack.url}/api/admin/units/unit-1/drain", json={"drain": "yes"}, timeout=10),
                    400)["field"] == "drain"
    assert error_of(stack.http.post(f"{stack.url}/api/admin/dead-letters/discard", json={}, timeout=10), 400)
    assert stack.http.post(f"{stack.url}/api/admin/dead-letters/discard", json={"message_ids": ["none-such"]},
                           timeout=10).json() == {"discarded": 0}
    storage = stack.http.get(f"{stack.url}/api/admin/storage", timeout=10).json()
    assert {"uploads", "results", "logs", "environments", "retention_days"} <= set(storage)
    refused = stack.http.put(f"{stack.url}/api/me/webhook", json={"url": "http://10.0.0.1/hook"}, timeout=10)
    assert error_of(refused, 400)["code"] == "webhook_refused" and refused.json()["error"]["field"] == "url"
    saved = stack.http.put(f"{stack.url}/api/me/webhook", json={"url": "http://127.0.0.1:9/hook"}, timeout=10).json()
    assert saved["url"] == "http://127.0.0.1:9/hook" and len(saved["secret"]) == 64
    again = stack.http.put(f"{stack.url}/api/me/webhook", json={"url": "http://127.0.0.1:10/hook"}, timeout=10).json()
    assert again["secret"] == saved["secret"]
    assert stack.http.delete(f"{stack.url}/api/me/webhook", timeout=10).status_code == 204


def test_job_notes_deletes_sorting_dates_and_run_again_name_their_bad_fields(stack, tmp_path):
    job = stack.client.submit(zip_entries(tmp_path / "a.zip", {"code.py": "import time\ntime.sleep(30)\n"}),
                              name=f"api {uuid.uuid4().hex[:6]}")
    wait_until(lambda: stack.client.job(job["id"])["state"] == "running", timeout_s=60, message="the job runs")
    try:
        assert error_of(stack.http.put(f"{stack.url}/api/jobs/{job['id']}/note", json={"note": "x" * 201}, timeout=10),
                        400)["field"] == "note"
        assert stack.http.put(f"{stack.url}/api/jobs/{job['id']}/note", json={"note": "first try"},
                              timeout=10).json()["note"] == "first try"
        assert error_of(stack.http.delete(f"{stack.url}/api/jobs/{job['id']}", timeout=10), 409)
        assert error_of(stack.http.get(f"{stack.url}/api/jobs", params={"sort": "colour"}, timeout=10), 400)
        assert error_of(stack.http.get(f"{stack.url}/api/jobs", params={"since": "yesterday"}, timeout=10),
                        400)["field"] == "since"
        later = stack.http.get(f"{stack.url}/api/jobs", params={"since": "2999-01-01"}, timeout=10).json()
        assert later["total"] == 0
    finally:
        stack.client.set_state(job["id"], "cancelled")
    stack.client.wait(job["id"], timeout_s=60)
    bad = stack.http.post(f"{stack.url}/api/jobs/{job['id']}/rerun",
                          json={"name": "", "priority": 12, "timeout_s": 0, "limits": {"memory_mb": 0}}, timeout=10)
    assert set(error_of(bad, 400)["fields"]) == {"name", "priority", "timeout_s", "memory_mb"}
    again = stack.http.post(f"{stack.url}/api/jobs/{job['id']}/rerun",
                            json={"name": "api (run 2)", "priority": 3, "timeout_s": 20, "limits": {"memory_mb": 256}},
                            timeout=10)
    assert again.status_code == 201, again.text
    rerun = again.json()
    assert (rerun["name"], rerun["priority"], rerun["timeout_s"], rerun["limits"]) == ("api (run 2)", 3, 20,
                                                                                        {"memory_mb": 256})
    stack.client.set_state(rerun["id"], "cancelled")
    finished = stack.client.wait(rerun["id"], timeout_s=60)
    wait_until(lambda: stack.client.job(rerun["id"])["result_pending"] is False, timeout_s=60)
    assert stack.http.delete(f"{stack.url}/api/jobs/{finished['id']}", timeout=10).status_code == 204
    assert error_of(stack.http.get(f"{stack.url}/api/jobs/{finished['id']}", timeout=10), 404)
