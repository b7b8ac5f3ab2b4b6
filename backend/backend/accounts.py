"""Users, passwords, API tokens and invitations.

Passwords are stored as scrypt hashes (Werkzeug's default); API tokens and invitation codes
are shown once and stored only as SHA-256 digests.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time

from werkzeug.security import check_password_hash, generate_password_hash

from nias.errors import BadRequest, Conflict, NiasError
from nias.settings import Settings

from backend.store import Store

logger = logging.getLogger(__name__)

ROLES = ("user", "admin")
MIN_PASSWORD = 8
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
TOKEN_PREFIX = "nias_"


class AuthenticationFailed(NiasError):
    """Raised when credentials are missing or wrong."""

    code = "unauthenticated"
    status = 401


class Forbidden(NiasError):
    """Raised when a signed-in user asks for what only an admin may do."""

    code = "forbidden"
    status = 403


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def public_user(user: dict) -> dict:
    return {"id": user["id"], "email": user["email"], "role": user["role"], "disabled": bool(user.get("disabled_at"))}


def check_new_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise BadRequest(f"The password must have at least {MIN_PASSWORD} characters.")
    return password


def create_user(store: Store, email: str, password: str, role: str = "user", user_id: str | None = None) -> dict:
    email = (email or "").strip().lower()
    if not EMAIL.match(email):
        raise BadRequest("Give a valid e-mail address.")
    check_new_password(password)
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}.")
    if store.find_user(email):
        raise Conflict("An account with this e-mail address exists already.", code="email_taken")
    user = store.insert_user(id=user_id or secrets.token_hex(8), email=email, password_hash=generate_password_hash(password),
                             role=role, created_at=time.time())
    logger.info("User %s: created (%s)", user["id"], role)
    return user


def authenticate(store: Store, email: str, password: str) -> dict:
    user = store.find_user((email or "").strip().lower())
    if user is None or not isinstance(password, str) or not check_password_hash(user["password_hash"], password):
        raise AuthenticationFailed("Wrong e-mail address or password.")
    if user.get("disabled_at"):
        raise AuthenticationFailed("This account is disabled; ask an admin to enable it again.", code="account_disabled")
    return user


def set_password(store: Store, user: dict, new: object) -> None:
    """Give a user a new password (the caller ends their other sessions)."""
    store.set_password_hash(user["id"], generate_password_hash(check_new_password(new)))
    logger.info("User %s: password changed", user["id"])


def change_password(store: Store, user: dict, current: object, new: object) -> None:
    """A user's own change: the current password must be right, as at sign-in."""
    if not isinstance(current, str) or not check_password_hash(user["password_hash"], current):
        raise Forbidden("The current password is not right; the password was not changed.",
                        code="wrong_password")
    set_password(store, user, new)


MAX_TOKEN_DAYS = 3650


def create_token(store: Store, user: dict, name: object, secret: str | None = None,
                 expires_days: object = None) -> dict:
    """A named API token, valid until revoked or for `expires_days` days."""
    name = name.strip() if isinstance(name, str) else ""
    if not 0 < len(name) <= 100:
        raise BadRequest("Give the token a name of 1 to 100 characters (where it is used: \"laptop CLI\").",
                         code="bad_token_name", field="name")
    if expires_days is not None and (not isinstance(expires_days, int) or isinstance(expires_days, bool)
                                     or not 1 <= expires_days <= MAX_TOKEN_DAYS):
        raise BadRequest(f"expires_days must be a whole number of days from 1 to {MAX_TOKEN_DAYS}, or absent.",
                         code="bad_expiry", field="expires_days")
    token = secret or TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = secrets.token_hex(8)
    now = time.time()
    expires_at = now + expires_days * 86400 if expires_days else None
    store.insert_token(id=token_id, user_id=user["id"], name=name, token_hash=digest(token), created_at=now,
                       expires_at=expires_at)
    return {"id": token_id, "name": name, "token": token, "expires_at": expires_at}


def user_for_token(store: Store, token: str) -> dict:
    user = store.user_for_token(digest(token))
    if user is None:
        raise AuthenticationFailed("This API token is not valid (revoked, expired, its account disabled, or never issued).")
    return user


def change_account(store: Store, admin: dict, user_id: str, *, role: object = None, disabled: object = None) -> dict:
    """An admin's change to an account: its role, or disabled (signed out everywhere) and enabled again.
    The last admin who can sign in is never demoted or disabled, nor do admins disable themselves."""
    user = store.get_user(user_id)
    if user is None:
        raise NiasError("No user has this id.", code="user_not_found", status=404)
    values: dict = {}
    if role is not None:
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}.", field="role")
        values["role"] = role
    if disabled is not None:
        if not isinstance(disabled, bool):
            raise BadRequest("disabled must be true or false.", field="disabled")
        if disabled and user_id == admin["id"]:
            raise Conflict("You cannot disable your own account.", code="own_account")
        values["disabled_at"] = (user.get("disabled_at") or time.time()) if disabled else None
    losing_admin = user["role"] == "admin" and not user.get("disabled_at") and (
        values.get("role", "admin") != "admin" or values.get("disabled_at"))
    if losing_admin and store.count_admins() <= 1:
        raise Conflict("This is the last admin who can sign in; make another admin first.", code="last_admin")
    if values:
        store.update_user(user_id, **values)
        logger.info("User %s: changed by %s (%s)", user_id, admin["id"], ", ".join(sorted(values)))
    return store.get_user(user_id)


def reset_password(store: Store, user_id: str) -> str:
    """A new random password for a user (shown once to the admin); their sessions end."""
    user = store.get_user(user_id)
    if user is None:
        raise NiasError("No user has this id.", code="user_not_found", status=404)
    password = secrets.token_urlsafe(12)
    set_password(store, user, password)
    return password


def create_invitation(store: Store, admin: dict) -> str:
    code = secrets.token_urlsafe(12)
    store.insert_invitation(digest(code), admin["id"])
    return code


def register(store: Store, settings: Settings, email: str, password: str, invitation: str | None) -> dict:
    """Open registration, by invitation, or closed (`NIAS_REGISTRATION`)."""
    if settings.registration == "closed":
        raise Forbidden("Registration is closed here; ask an admin for an account.")
    user_id = secrets.token_hex(8)
    if settings.registration == "invite":
        if not invitation:
            raise Forbidden("Registration here needs an invitation code from an admin.")
        if store.find_user((email or "").strip().lower()):
            raise Conflict("An account with this e-mail address exists already.", code="email_taken")
        if not store.use_invitation(digest(invitation), user_id):
            raise Forbidden("This invitation code is not valid or has been used.")
    return create_user(store, email, password, user_id=user_id)


def ensure_admin(store: Store, settings: Settings) -> None:
    """When no admin exists, create one (from NIAS_ADMIN_* or with a fresh password) and say how to sign in."""
    admin = store.find_user(settings.admin_email.strip().lower())
    if store.count_admins() == 0 and admin is None:
        password = settings.admin_password or secrets.token_urlsafe(12)
        admin = create_user(store, settings.admin_email, password, "admin")
        if not settings.admin_password:
            logger.warning("No admin existed: created %s. Sign in at http://%s:%s/signin.html with the password "
                           "%s (then change it, or set NIAS_ADMIN_PASSWORD)", admin["email"], settings.host,
                           settings.port, password)
    if settings.admin_token and admin is not None and store.user_for_token(digest(settings.admin_token)) is None:
        create_token(store, admin, "NIAS_ADMIN_TOKEN", secret=settings.admin_token)
