"""Who is asking: a session cookie (the pages) or an API token (scripts, the CLI).

Every `/api/` request needs one, except signing in, registering, the upload limits and
`GET /api/session` (whether the asker is signed in, which the pages ask before anything else). A request signed in by
cookie that changes anything must carry the session's CSRF token in `X-CSRF-Token`; requests
with a bearer token carry no ambient credential and need none. Sessions live in the job store
(`backend.sessions`): the cookie holds only a random id, worthless once the session has ended.
"""
from __future__ import annotations

import hmac

from flask import Flask, Response, current_app, g, request

from nias.errors import JobNotFound

from backend import accounts, sessions
from backend.accounts import AuthenticationFailed, Forbidden

OPEN_PATHS = ("/api/auth/login", "/api/auth/register", "/api/limits", "/api/session", "/api/openapi.json")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_CLEAR = ""  # `g.new_cookie` value that removes the session cookie


class CsrfFailed(Forbidden):
    """Raised when a cookie-authenticated change lacks the session's CSRF token."""

    code = "csrf_failed"


def sign_in(user: dict) -> str:
    """Start a browser session (ending the one this browser had); returns its CSRF token."""
    nias = g.nias
    if g.get("session_id"):
        sessions.end_session(nias.store, g.session_id)
    g.session_id = sessions.start_session(nias.store, nias.settings, user)
    g.new_cookie = g.session_id
    return csrf_token()


def sign_out() -> None:
    """End this browser's session: its cookie no longer signs anyone in, here or anywhere."""
    if g.get("session_id"):
        sessions.end_session(g.nias.store, g.session_id)
    g.session_id = None
    g.new_cookie = _CLEAR


def current_session_id() -> str | None:
    """The id of the session the request came with (None for API tokens)."""
    return g.get("session_id")


def csrf_token() -> str | None:
    session_id = current_session_id()
    return sessions.csrf_token(current_app.secret_key, session_id) if session_id else None


def _identify():
    store = g.nias.store
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        g.via_token = True
        return accounts.user_for_token(store, header[len("Bearer "):].strip())
    g.via_token = False
    sent = request.cookies.get(sessions.COOKIE_NAME)
    if not sent:
        return None
    user = sessions.user_for_session(store, sent)
    if user is None:
        g.new_cookie = _CLEAR  # ended or expired: the browser may as well forget it
        return None
    g.session_id = sent
    return user


def _write_cookie(response: Response) -> Response:
    new_cookie = g.get("new_cookie")
    if new_cookie is None:
        return response
    settings = g.nias.settings
    if new_cookie == _CLEAR:
        response.delete_cookie(sessions.COOKIE_NAME, path="/", httponly=True, samesite="Lax",
                               secure=bool(settings.cookie_secure))
    else:
        response.set_cookie(sessions.COOKIE_NAME, new_cookie, max_age=sessions.lifetime_s(settings), path="/",
                            httponly=True, samesite="Lax", secure=bool(settings.cookie_secure))
    return response


def install_auth(app: Flask) -> None:
    @app.before_request
    def _authenticate():
        g.nias = app.extensions["nias"]
        g.user = None
        g.session_id = None
        if not request.path.startswith("/api/"):
            return None
        g.user = _identify()
        if request.path in OPEN_PATHS:
            return None
        if g.user is None:
            raise AuthenticationFailed("Sign in, or send an API token as 'Authorization: Bearer <token>'.")
        if request.method not in SAFE_METHODS and not g.via_token:
            sent = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(sent, csrf_token() or ""):
                raise CsrfFailed("This request lacks the page's CSRF token; reload the page and try again.")
        return None

    app.after_request(_write_cookie)


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
