"""Browser sessions on the real job store (SQLite and PostgreSQL), through the backend's app: a
session ends on sign-out, on a password change (the others), on expiry and when an admin ends it."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from backend.app import create_app
from backend.sessions import COOKIE_NAME
from backend.store import sessions as sessions_table

ADMIN = ("boss@lab.example", "the admin's password")
USER_PASSWORD = "a long enough password"


@pytest.fixture
def app(store, make_settings):
    settings = make_settings(database_url=store.url, internal_token="t", admin_email=ADMIN[0],
                             admin_password=ADMIN[1], session_days=2.0)
    return create_app(settings)


class Browser:
    """One browser: a test client with its own cookie, and the CSRF token the pages would send."""

    def __init__(self, app, email: str, password: str):
        self.client = app.test_client()
        answer = self.client.post("/api/auth/login", json={"email": email, "password": password})
        assert answer.status_code == 200, answer.get_json()
        self.csrf = answer.get_json()["csrf_token"]
        self.cookie = self.client.get_cookie(COOKIE_NAME).value

    def get(self, path: str):
        return self.client.get(path)

    def send(self, method: str, path: str, json: dict | None = None):
        return self.client.open(path, method=method, json=json, headers={"X-CSRF-Token": self.csrf})


def with_cookie(app, cookie: str, path: str = "/api/me"):
    """A request carrying a copied cookie, as a thief (or a forgotten tab) would send it."""
    thief = app.test_client()
    thief.set_cookie(COOKIE_NAME, cookie)
    return thief.get(path)


def new_user(app, admin: Browser) -> str:
    email = f"user{time.monotonic_ns()}@lab.example"
    created = admin.send("POST", "/api/users", {"email": email, "password": USER_PASSWORD})
    assert created.status_code == 201, created.get_json()
    return email


def test_the_cookie_holds_a_random_id_and_the_store_only_its_digest(app, store):
    browser = Browser(app, *ADMIN)
    with store.engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(sessions_table.select()).mappings()]
    assert len(rows) == 1 and len(browser.cookie) >= 40
    assert rows[0]["id_hash"] != browser.cookie and browser.cookie not in str(rows)
    assert rows[0]["expires_at"] - rows[0]["created_at"] == pytest.approx(2 * 24 * 3600)


def test_an_old_cookie_answers_401_after_sign_out(app):
    browser = Browser(app, *ADMIN)
    assert with_cookie(app, browser.cookie).status_code == 200
    assert browser.send("POST", "/api/auth/logout").status_code == 204
    refused = with_cookie(app, browser.cookie)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthenticated"


def test_a_password_change_ends_every_other_session_of_the_user(app):
    admin = Browser(app, *ADMIN)
    email = new_user(app, admin)
    laptop, phone = Browser(app, email, USER_PASSWORD), Browser(app, email, USER_PASSWORD)
    changed = laptop.send("POST", "/api/me/password", {"current": USER_PASSWORD, "new": "a new long password"})
    assert changed.status_code == 200 and changed.get_json() == {"other_sessions_ended": 1}
    assert with_cookie(app, phone.cookie).status_code == 401
    assert with_cookie(app, laptop.cookie).status_code == 200  # the session that changed it goes on
    assert with_cookie(app, admin.cookie).status_code == 200  # another user's is untouched
    assert Browser(app, email, "a new long password").csrf
    old = app.test_client().post("/api/auth/login", json={"email": email, "password": USER_PASSWORD})
    assert old.status_code == 401


def test_a_password_change_needs_the_current_password_and_a_valid_new_one(app):
    admin = Browser(app, *ADMIN)
    email = new_user(app, admin)
    laptop, phone = Browser(app, email, USER_PASSWORD), Browser(app, email, USER_PASSWORD)
    wrong = laptop.send("POST", "/api/me/password", {"current": "a guess at it", "new": "a new long password"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "wrong_password"
    short = laptop.send("POST", "/api/me/password", {"current": USER_PASSWORD, "new": "short"})
    assert short.status_code == 400
    forged = laptop.client.post("/api/me/password", json={"current": USER_PASSWORD, "new": "a new long password"})
    assert forged.status_code == 403 and forged.get_json()["error"]["code"] == "csrf_failed"
    assert with_cookie(app, phone.cookie).status_code == 200  # nothing changed, nothing ended


def test_an_expired_session_answers_401(app, store):
    browser = Browser(app, *ADMIN)
    with store.engine.begin() as conn:
        conn.execute(update(sessions_table).values(expires_at=time.time() - 1))
    refused = with_cookie(app, browser.cookie)
    assert refused.status_code == 401
    assert f"{COOKIE_NAME}=;" in refused.headers["Set-Cookie"]  # and the browser is told to forget it


def test_an_admin_ends_a_users_sessions_and_the_user_signs_in_again(app):
    admin = Browser(app, *ADMIN)
    email = new_user(app, admin)
    first, second = Browser(app, email, USER_PASSWORD), Browser(app, email, USER_PASSWORD)
    user_id = first.get("/api/me").get_json()["id"]
    listed = {u["id"]: u for u in admin.get("/api/users").get_json()["users"]}
    assert listed[user_id]["sessions"] == 2
    ended = admin.send("DELETE", f"/api/users/{user_id}/sessions")
    assert ended.status_code == 200 and ended.get_json() == {"ended": 2}
    assert with_cookie(app, first.cookie).status_code == 401
    assert with_cookie(app, second.cookie).status_code == 401
    assert with_cookie(app, admin.cookie).status_code == 200
    assert Browser(app, email, USER_PASSWORD).csrf  # the password still works


def test_only_an_admin_ends_sessions_and_only_of_a_user_who_exists(app):
    admin = Browser(app, *ADMIN)
    user = Browser(app, new_user(app, admin), USER_PASSWORD)
    admin_id = admin.get("/api/me").get_json()["id"]
    assert user.send("DELETE", f"/api/users/{admin_id}/sessions").status_code == 403
    missing = admin.send("DELETE", "/api/users/0123456789abcdef/sessions")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "user_not_found"
    assert with_cookie(app, admin.cookie).status_code == 200


def test_the_csrf_token_belongs_to_its_session(app):
    first, second = Browser(app, *ADMIN), Browser(app, *ADMIN)
    assert first.csrf != second.csrf
    crossed = first.client.post("/api/invitations", headers={"X-CSRF-Token": second.csrf})
    assert crossed.status_code == 403 and crossed.get_json()["error"]["code"] == "csrf_failed"
    assert first.send("POST", "/api/invitations").status_code == 201
