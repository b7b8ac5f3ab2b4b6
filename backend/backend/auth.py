"""Who is asking: a session cookie (the pages) or an API token (scripts, the CLI).

Every `/api/` request needs one, except signing in and registering. A request signed in by
cookie that changes anything must carry the session's CSRF token in `X-CSRF-Token`; requests
with a bearer token carry no ambient credential and need none.
"""
from __future__ import annotations

import hmac
import secrets

from flask import Flask, g, request, session

from nias.errors import JobNotFound

from backend import accounts
from backend.accounts import AuthenticationFailed, Forbidden

OPEN_PATHS = ("/api/auth/login", "/api/auth/register", "/api/limits")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class CsrfFailed(Forbidden):
    """Raised when a cookie-authenticated change lacks the session's CSRF token."""

    code = "csrf_failed"


def sign_in(user: dict) -> str:
    """Start a browser session; returns its CSRF token."""
    session.clear()
    session["user_id"] = user["id"]
    session["csrf"] = secrets.token_urlsafe(24)
    session.permanent = True
    return session["csrf"]


def _identify():
    store = g.nias.store
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        g.via_token = True
        return accounts.user_for_token(store, header[len("Bearer "):].strip())
    g.via_token = False
    user_id = session.get("user_id")
    return store.get_user(user_id) if user_id else None


def install_auth(app: Flask) -> None:
    @app.before_request
    def _authenticate():
        g.nias = app.extensions["nias"]
        g.user = None
        if not request.path.startswith("/api/"):
            return None
        g.user = _identify()
        if request.path in OPEN_PATHS:
            return None
        if g.user is None:
            raise AuthenticationFailed("Sign in, or send an API token as 'Authorization: Bearer <token>'.")
        if request.method not in SAFE_METHODS and not g.via_token:
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent, session.get("csrf", "")):
                raise CsrfFailed("This request lacks the page's CSRF token; reload the page and try again.")
        return None


def current_user() -> dict:
    return g.user


def is_admin(user: dict | None = None) -> bool:
    user = user or g.user
    return bool(user) and user["role"] == "admin"


def require_admin() -> dict:
    if not is_admin():
        raise Forbidden("Only an admin may do this.")
    return g.user


def owner_filter() -> str | None:
    """Whose jobs a listing shows: the user's own, or everyone's for an admin (unless `?mine=1`)."""
    if is_admin() and request.args.get("mine") not in ("1", "true"):
        return None
    return g.user["id"]


def visible_job(job_id: str) -> dict:
    """The job, if the asker may see it; another user's job is answered like an unknown one (404)."""
    job = g.nias.store.get_job(job_id)
    if not is_admin() and job["owner_id"] != g.user["id"]:
        raise JobNotFound(f"No job has the id {job_id!r}.")
    return job
