"""Browser sessions, kept in the job store so that they can end.

The cookie carries only a random session id; the store keeps its SHA-256 digest, the user, and
when it was made, last seen and expires (`NIAS_SESSION_DAYS` after sign-in). Signing out deletes
the row, so an old cookie is worth nothing afterwards; so does a password change (for every
other session of that user) and an admin ending a user's sessions. The page's CSRF token is an
HMAC of the session id under the server's secret key: it needs no storage and dies with the session.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time

from nias.settings import Settings

from backend.accounts import digest
from backend.store import Store

logger = logging.getLogger(__name__)

COOKIE_NAME = "nias_session"
DAY_S = 24 * 3600


def lifetime_s(settings: Settings) -> int:
    return max(int(settings.session_days * DAY_S), 1)


def start_session(store: Store, settings: Settings, user: dict, now: float | None = None) -> str:
    """A new session for `user`; returns its id (for the cookie only: the store keeps its digest)."""
    now = time.time() if now is None else now
    session_id = secrets.token_urlsafe(32)
    store.delete_expired_sessions(now)
    store.insert_session(id_hash=digest(session_id), user_id=user["id"], created_at=now, last_seen=now,
                         expires_at=now + lifetime_s(settings))
    logger.info("User %s: signed in (a new session)", user["id"])
    return session_id


def user_for_session(store: Store, session_id: str, now: float | None = None) -> dict | None:
    """The user a live session belongs to; None for an ended, expired or never issued one."""
    if not session_id:
        return None
    return store.user_for_session(digest(session_id), time.time() if now is None else now)


def end_session(store: Store, session_id: str) -> None:
    store.delete_session(digest(session_id))


def end_user_sessions(store: Store, user_id: str, keep: str | None = None) -> int:
    """End every session of a user except `keep` (a session id); returns how many ended."""
    ended = store.delete_user_sessions(user_id, keep=digest(keep) if keep else None)
    logger.info("User %s: %d session(s) ended", user_id, ended)
    return ended


def csrf_token(secret_key: str, session_id: str) -> str:
    return hmac.new(secret_key.encode(), b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()
