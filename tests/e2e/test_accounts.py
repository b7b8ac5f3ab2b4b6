"""Accounts and isolation over the API: sign-in, tokens, CSRF, roles, ownership, internal endpoints."""
from __future__ import annotations

import uuid

import pytest
import requests

from nias.client import NiasClient
from tests.support.projects import zip_entries
from tests.support.stack import wait_until


def new_user(stack, role: str = "user") -> tuple[str, str]:
    email, password = f"{uuid.uuid4().hex[:8]}@lab.example", "a long enough password"
    created = stack.http.post(f"{stack.url}/api/users", json={"email": email, "password": password, "role": role},
                              timeout=10)
    assert created.status_code == 201, created.text
    return email, password


def signed_in(stack, email: str, password: str) -> tuple[requests.Session, str]:
    browser = requests.Session()
    answer = browser.post(f"{stack.url}/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert answer.status_code == 200, answer.text
    return browser, answer.json()["csrf_token"]


def token_for(stack, email: str, password: str) -> str:
    browser, csrf = signed_in(stack, email, password)
    answer = browser.post(f"{stack.url}/api/tokens", json={"name": "cli"}, headers={"X-CSRF-Token": csrf}, timeout=10)
    assert answer.status_code == 201
    return answer.json()["token"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/jobs/0123456789abcdef"), ("GET", "/api/me"),
    ("GET", "/api/events"), ("GET", "/api/summary"), ("PUT", "/api/jobs/0123456789abcdef/state"),
    ("GET", "/api/users"), ("POST", "/api/tokens"), ("GET", "/api/admin/dead-letters"),
])
def test_every_api_call_without_credentials_answers_401(stack, method, path):
    answer = requests.request(method, f"{stack.url}{path}", timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"


def test_a_wrong_password_is_refused_and_a_right_one_opens_a_session(stack):
    email, password = new_user(stack)
    wrong = requests.post(f"{stack.url}/api/auth/login", json={"email": email, "password": "nope nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"
    assert "nias_session" not in wrong.cookies
    browser = requests.Session()
    answer = browser.post(f"{stack.url}/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert answer.status_code == 200
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("nias_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = browser.get(f"{stack.url}/api/me", timeout=10).json()
    assert me["email"] == email and me["role"] == "user" and me["csrf_token"]
    assert browser.post(f"{stack.url}/api/auth/logout", headers={"X-CSRF-Token": me["csrf_token"]},
                        timeout=10).status_code == 204
    after = browser.get(f"{stack.url}/api/me", timeout=10)
    assert after.status_code == 401 and after.json()["error"]["code"] == "unauthenticated"


def with_cookie(stack, cookie: str) -> requests.Response:
    """`GET /api/me` with a copied session cookie, as a forgotten tab or a thief would send it."""
    return requests.get(f"{stack.url}/api/me", cookies={"nias_session": cookie}, timeout=10)


def test_after_sign_out_the_old_session_cookie_answers_401(stack):
    email, password = new_user(stack)
    browser, csrf = signed_in(stack, email, password)
    cookie = browser.cookies["nias_session"]
    before = with_cookie(stack, cookie)
    assert before.status_code == 200 and before.json()["email"] == email
    assert browser.post(f"{stack.url}/api/auth/logout", headers={"X-CSRF-Token": csrf}, timeout=10).status_code == 204
    assert with_cookie(stack, cookie).status_code == 401


def test_a_password_change_signs_out_the_accounts_other_browsers(stack):
    email, password = new_user(stack)
    (laptop, csrf), (phone, _) = signed_in(stack, email, password), signed_in(stack, email, password)
    changed = laptop.post(f"{stack.url}/api/me/password", json={"current": password, "new": "another long one"},
                          headers={"X-CSRF-Token": csrf}, timeout=10)
    assert changed.status_code == 200 and changed.json()["other_sessions_ended"] == 1
    assert phone.get(f"{stack.url}/api/me", timeout=10).status_code == 401
    still = laptop.get(f"{stack.url}/api/me", timeout=10)
    assert still.status_code == 200 and still.json()["email"] == email
    signed_in(stack, email, "another long one")


def test_an_admin_ends_every_session_of_a_user(stack):
    browser, _ = signed_in(stack, *new_user(stack))
    user_id = browser.get(f"{stack.url}/api/me", timeout=10).json()["id"]
    ended = stack.http.delete(f"{stack.url}/api/users/{user_id}/sessions", timeout=10)
    assert ended.status_code == 200 and ended.json()["ended"] == 1
    assert with_cookie(stack, browser.cookies["nias_session"]).status_code == 401


def test_a_change_made_with_the_session_cookie_needs_the_csrf_token(stack, tmp_path):
    browser, csrf = signed_in(stack, *new_user(stack))
    project = zip_entries(tmp_path / "p.zip", {"code.py": "pass"})
    with open(project, "rb") as handle:
        forged = browser.post(f"{stack.url}/api/jobs", files={"file": ("p.zip", handle)}, timeout=10)
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    with open(project, "rb") as handle:
        real = browser.post(f"{stack.url}/api/jobs", files={"file": ("p.zip", handle)},
                            headers={"X-CSRF-Token": csrf}, timeout=10)
    assert real.status_code == 201 and real.json()["state"] == "queued", real.text


def test_api_tokens_work_as_bearer_credentials_until_revoked(stack, tmp_path):
    email, password = new_user(stack)
    browser, csrf = signed_in(stack, email, password)
    created = browser.post(f"{stack.url}/api/tokens", json={"name": "laptop"}, headers={"X-CSRF-Token": csrf},
                           timeout=10).json()
    script = NiasClient(stack.url, token=created["token"])
    job = script.submit(zip_entries(tmp_path / "t.zip", {"code.py": "pass"}))
    assert script.wait(job["id"], timeout_s=60)["state"] == "succeeded"
    listed = browser.get(f"{stack.url}/api/tokens", timeout=10).json()["tokens"]
    assert [t["name"] for t in listed] == ["laptop"] and "token" not in listed[0]
    assert browser.delete(f"{stack.url}/api/tokens/{created['id']}", headers={"X-CSRF-Token": csrf},
                          timeout=10).status_code == 204
    refused = requests.get(f"{stack.url}/api/jobs", headers={"Authorization": f"Bearer {created['token']}"},
                           timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


def can_sign_in(stack, email: str, password: str) -> bool:
    answer = requests.post(f"{stack.url}/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def test_registration_needs_an_invitation_that_works_once(stack):
    uninvited = {"email": f"{uuid.uuid4().hex[:8]}@lab.example", "password": "long enough pw"}
    anonymous = requests.post(f"{stack.url}/api/auth/register", json=uninvited, timeout=10)
    assert anonymous.status_code == 403 and "invitation" in anonymous.json()["error"]["message"]
    assert not can_sign_in(stack, uninvited["email"], uninvited["password"])
    code = stack.http.post(f"{stack.url}/api/invitations", timeout=10).json()["invitation"]
    body = {"email": f"{uuid.uuid4().hex[:8]}@lab.example", "password": "long enough pw", "invitation": code}
    first = requests.post(f"{stack.url}/api/auth/register", json=body, timeout=10)
    assert first.status_code == 201 and first.json()["role"] == "user"
    assert can_sign_in(stack, body["email"], body["password"])
    again = requests.post(f"{stack.url}/api/auth/register", json={**body, "email": "y" + body["email"]}, timeout=10)
    assert again.status_code == 403 and "has been used" in again.json()["error"]["message"]
    assert not can_sign_in(stack, "y" + body["email"], body["password"])


def test_only_admins_manage_users_and_see_dead_letters(stack):
    email, password = new_user(stack)
    user = NiasClient(stack.url, token=token_for(stack, email, password))
    for method, path in (("GET", "/api/users"), ("POST", "/api/users"), ("POST", "/api/invitations"),
                         ("GET", "/api/admin/dead-letters")):
        answer = user.session.request(method, f"{stack.url}{path}", json={}, timeout=10)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", path
    listed = stack.http.get(f"{stack.url}/api/users", timeout=10).json()["users"]
    roles = {u["email"]: u["role"] for u in listed}
    assert roles[email] == "user" and "admin" in roles.values()


def test_another_users_job_is_invisible_on_every_endpoint(stack, tmp_path):
    alice = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
    bob = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
    job = alice.submit(zip_entries(tmp_path / "a.zip", {"code.py": "open('output/secret.txt','w').write('s')"}))
    alice.wait(job["id"], timeout_s=60)
    base = f"{stack.url}/api/jobs/{job['id']}"
    attempts = [("GET", base), ("GET", f"{base}/history"), ("GET", f"{base}/result"), ("GET", f"{base}/log"),
                ("GET", f"{base}/files"), ("GET", f"{base}/files/secret.txt"),
                ("PUT", f"{base}/state", {"state": "cancelled"}), ("PUT", f"{base}/priority", {"priority": 3}),
                ("POST", f"{base}/run-next", None), ("POST", f"{base}/rerun", None)]
    for method, url, *body in attempts:
        answer = bob.session.request(method, url, json=body[0] if body else None, timeout=10)
        assert answer.status_code == 404, (method, url, answer.status_code)
        assert answer.json()["error"]["code"] == "job_not_found"
    for user in (bob, alice):  # the events stream of one job: another user's, or an unknown id
        job_id = job["id"] if user is bob else "0123456789abcdef"
        with user.session.get(f"{stack.url}/api/events", params={"job": job_id}, stream=True, timeout=10) as answer:
            assert answer.status_code == 404, ("events", user is bob, answer.status_code)
            assert answer.json()["error"]["code"] == "job_not_found"
    assert job["id"] not in {j["id"] for j in bob.jobs(per_page=100)["jobs"]}
    assert job["id"] in {j["id"] for j in alice.jobs(per_page=100)["jobs"]}
    assert bob.session.get(f"{stack.url}/api/summary", timeout=10).json()["counts"]["succeeded"] == 0
    assert alice.session.get(f"{stack.url}/api/summary", timeout=10).json()["counts"]["succeeded"] == 1
    alice_id = alice.session.get(f"{stack.url}/api/me", timeout=10).json()["id"]
    assert job["owner"] == alice_id and stack.client.job(job["id"])["owner"] == alice_id  # the admin sees it


def test_the_admin_can_cancel_and_rerun_another_users_job(stack, tmp_path):
    alice = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
    job = alice.submit(zip_entries(tmp_path / "slow.zip", {"code.py": "import time\ntime.sleep(60)\n"}))
    wait_until(lambda: alice.job(job["id"])["state"] == "running", timeout_s=60, message="running")
    cancelled = stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"}, timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert alice.wait(job["id"], timeout_s=60)["state"] == "cancelled"
    rerun = stack.http.post(f"{stack.url}/api/jobs/{job['id']}/rerun", timeout=10)
    assert rerun.status_code == 201 and rerun.json()["rerun_of"] == job["id"]
    # the re-run stays its owner's: she sees it, as she saw the original
    assert rerun.json()["owner"] == job["owner"]
    assert alice.job(rerun.json()["id"])["rerun_of"] == job["id"]
    again = stack.http.put(f"{stack.url}/api/jobs/{rerun.json()['id']}/state", json={"state": "cancelled"},
                           timeout=10)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_internal_endpoints_refuse_requests_without_the_internal_credential(stack):
    producer = f"http://127.0.0.1:{stack.producer_port}"
    for url, method in ((f"{producer}/api/publish", "POST"), (f"{producer}/api/control", "POST"),
                        (f"{stack.unit_url(1)}/api/runs", "POST"), (f"{stack.unit_url(1)}/api/runs/current", "GET"),
                        (f"{stack.unit_url(1)}/api/control", "POST"),
                        (f"{stack.url}/internal/jobs/0123456789abcdef/claim", "POST")):
        answer = requests.request(method, url, data=b"{}", headers={"X-Nias-Internal-Token": "guess"}, timeout=10)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "internal_only", url


def test_the_units_name_the_job_they_run_only_to_its_owner_and_admins(stack, tmp_path):
    alice = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
    bob = NiasClient(stack.url, token=token_for(stack, *new_user(stack)))
    job = alice.submit(zip_entries(tmp_path / "slow.zip", {"code.py": "import time\ntime.sleep(30)\n"}))

    def running_ids(client: NiasClient, path: str) -> set[str]:
        units = client.session.get(f"{stack.url}{path}", timeout=10).json()["units"]
        return {unit["job_id"] for unit in units if unit["job_id"]}

    try:
        wait_until(lambda: job["id"] in running_ids(alice, "/api/summary"), timeout_s=60,
                   message="the owner sees which unit runs her job")
        assert job["id"] in running_ids(stack.client, "/api/units")
        for path in ("/api/summary", "/api/units"):
            assert job["id"] not in running_ids(bob, path), path
    finally:
        stack.http.put(f"{stack.url}/api/jobs/{job['id']}/state", json={"state": "cancelled"}, timeout=10)
