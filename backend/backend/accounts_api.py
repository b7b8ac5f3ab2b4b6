"""Accounts over the API: register, sign in and out, am I signed in, who am I, password, API tokens,
users, sessions, invitations."""
from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from nias.errors import NiasError

from backend import api_models as api
from backend.openapi import describe
from backend import accounts, sessions, webhooks
from backend.auth import csrf_token, current_session_id, current_user, require_admin, sign_in, sign_out
from backend.jobs_api import iso_time

bp = Blueprint("accounts", __name__, url_prefix="/api")


def _nias():
    return current_app.extensions["nias"]


def _me(user: dict) -> dict:
    return {**accounts.public_user(user), "csrf_token": csrf_token(),
            "registration": _nias().settings.registration}


@bp.post("/auth/register")
@describe("Register an account", {201: api.Me, **api.REFUSED}, body=api.Registration, public=True, tag="accounts")
def register():
    body = api.read_body(api.Registration)
    nias = _nias()
    user = accounts.register(nias.store, nias.settings, body.get("email"), body.get("password"),
                             body.get("invitation"))
    sign_in(user)
    return jsonify(_me(user)), 201


@bp.post("/auth/login")
@describe("Sign in (sets the session cookie)", {200: api.Me, **api.REFUSED}, body=api.Credentials, public=True,
          tag="accounts")
def login():
    body = api.read_body(api.Credentials)
    user = accounts.authenticate(_nias().store, body.get("email"), body.get("password"))
    sign_in(user)
    return jsonify(_me(user))


@bp.post("/auth/logout")
@describe("Sign out", {204: "signed out", **api.REFUSED}, tag="accounts")
def logout():
    sign_out()
    return Response(status=204)


@bp.get("/session")
@describe("Whether the asker is signed in", {200: api.SessionState, **api.REFUSED}, public=True, tag="accounts")
def session():
    """Whether the asker is signed in, answered 200 either way: a page asks this first, so a signed-out
    visit goes to the sign-in page without a request that answers 401."""
    user = current_user()
    if user is None:  # the sign-in page offers registration only where it is open (or by invitation link)
        return jsonify({"signed_in": False, "registration": _nias().settings.registration})
    return jsonify({"signed_in": True, "user": _me(user)})


@bp.get("/me")
@describe("Who am I", {200: api.Me, **api.REFUSED}, tag="accounts")
def me():
    return jsonify(_me(current_user()))


@bp.post("/me/password")
@describe("Change my password", {200: api.PasswordChanged, **api.REFUSED}, body=api.PasswordChange, tag="accounts")
def change_password():
    """`{"current", "new"}`: a new password; every other session of the account ends (API tokens stay)."""
    body = api.read_body(api.PasswordChange)
    nias = _nias()
    user = current_user()
    accounts.change_password(nias.store, user, body.get("current"), body.get("new"))
    ended = sessions.end_user_sessions(nias.store, user["id"], keep=current_session_id())
    return jsonify({"other_sessions_ended": ended})


@bp.get("/me/webhook")
@describe("My webhook", {200: api.Webhook, **api.REFUSED}, tag="accounts")
def get_webhook():
    user = current_user()
    return jsonify({"url": user.get("webhook_url"), "secret": user.get("webhook_secret")})


@bp.put("/me/webhook")
@describe("Set my webhook", {200: api.Webhook, **api.REFUSED}, body=api.WebhookTarget, tag="accounts")
def put_webhook():
    """`{"url": "https://..."}`: called with a job's JSON when one of your jobs ends; a secret that
    signs the calls is made the first time (and kept while the URL changes)."""
    nias = _nias()
    user = current_user()
    url = webhooks.check_target(api.read_body(api.WebhookTarget).get("url"), nias.settings)
    secret = user.get("webhook_secret") or webhooks.new_secret()
    nias.store.update_user(user["id"], webhook_url=url, webhook_secret=secret)
    return jsonify({"url": url, "secret": secret})


@bp.delete("/me/webhook")
@describe("Remove my webhook", {204: "removed", **api.REFUSED}, tag="accounts")
def delete_webhook():
    _nias().store.update_user(current_user()["id"], webhook_url=None, webhook_secret=None)
    return Response(status=204)


@bp.get("/tokens")
@describe("List my API tokens", {200: api.TokenList, **api.REFUSED}, tag="accounts")
def list_tokens():
    rows = _nias().store.list_tokens(current_user()["id"])
    return jsonify({"tokens": [{**row, "created_at": iso_time(row["created_at"]),
                                "last_used_at": iso_time(row["last_used_at"]),
                                "expires_at": iso_time(row["expires_at"])} for row in rows]})


@bp.post("/tokens")
@describe("Create an API token", {201: api.NewToken, **api.REFUSED}, body=api.TokenRequest, body_required=False,
          tag="accounts")
def create_token():
    """`{"name": "laptop CLI", "expires_days": 90}`: a name is required, an expiry optional."""
    body = api.read_body(api.TokenRequest)
    token = accounts.create_token(_nias().store, current_user(), body.get("name"),
                                  expires_days=body.get("expires_days"))
    return jsonify({**token, "expires_at": iso_time(token["expires_at"])}), 201


@bp.delete("/tokens/<token_id>")
@describe("Revoke one of my API tokens", {204: "revoked", **api.REFUSED}, tag="accounts")
def delete_token(token_id: str):
    if not _nias().store.delete_token(current_user()["id"], token_id):
        raise NiasError("You have no API token with this id.", code="token_not_found", status=404)
    return Response(status=204)


@bp.get("/users")
@describe("List the accounts (admins)", {200: api.UserList, **api.REFUSED}, tag="accounts")
def list_users():
    require_admin()
    store = _nias().store
    open_sessions = store.count_sessions(time.time())
    return jsonify({"users": [{**accounts.public_user(u), "created_at": iso_time(u["created_at"]),
                               "sessions": open_sessions.get(u["id"], 0)} for u in store.list_users()]})


@bp.post("/users")
@describe("Create an account (admins)", {201: api.User, **api.REFUSED}, body=api.NewUser, tag="accounts")
def create_user():
    require_admin()
    body = api.read_body(api.NewUser)
    user = accounts.create_user(_nias().store, body.get("email"), body.get("password"), body.get("role", "user"))
    return jsonify(accounts.public_user(user)), 201


@bp.patch("/users/<user_id>")
@describe("Change an account's role or disable it (admins)", {200: api.AccountUser, **api.REFUSED},
          body=api.AccountChange, tag="accounts")
def change_user(user_id: str):
    """Admins: `{"role": "admin" | "user"}` and/or `{"disabled": true | false}`; a disabled account is
    signed out everywhere and its API tokens answer 401 until it is enabled again."""
    admin = require_admin()
    body = api.read_body(api.AccountChange)
    store = _nias().store
    user = accounts.change_account(store, admin, user_id, role=body.get("role"), disabled=body.get("disabled"))
    if user.get("disabled_at"):
        sessions.end_user_sessions(store, user_id)
    return jsonify(accounts.public_user(user))


@bp.post("/users/<user_id>/password")
@describe("Give a user a new random password (admins)", {200: api.NewPassword, **api.REFUSED}, tag="accounts")
def reset_user_password(user_id: str):
    """Admins: a new random password for the user, shown once in the answer; their sessions end."""
    require_admin()
    store = _nias().store
    password = accounts.reset_password(store, user_id)
    return jsonify({"password": password, "sessions_ended": sessions.end_user_sessions(store, user_id)})


@bp.delete("/users/<user_id>/sessions")
@describe("Sign a user out everywhere (admins)", {200: api.SessionsEnded, **api.REFUSED}, tag="accounts")
def end_user_sessions(user_id: str):
    """Admins: sign a user out everywhere (their API tokens stay; revoke those on their side)."""
    require_admin()
    store = _nias().store
    if store.get_user(user_id) is None:
        raise NiasError("No user has this id.", code="user_not_found", status=404)
    return jsonify({"ended": sessions.end_user_sessions(store, user_id)})


@bp.post("/invitations")
@describe("Create an invitation (admins)", {201: api.Invitation, **api.REFUSED}, tag="accounts")
def create_invitation():
    admin = require_admin()
    return jsonify({"invitation": accounts.create_invitation(_nias().store, admin)}), 201
