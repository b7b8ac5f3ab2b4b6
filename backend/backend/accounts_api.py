"""Accounts over the API: register, sign in and out, who am I, API tokens, users, invitations."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, session

from nias.errors import NiasError
from nias.web import read_json

from backend import accounts
from backend.auth import current_user, require_admin, sign_in
from backend.jobs_api import iso_time

bp = Blueprint("accounts", __name__, url_prefix="/api")


def _nias():
    return current_app.extensions["nias"]


def _me(user: dict) -> dict:
    return {**accounts.public_user(user), "csrf_token": session.get("csrf"),
            "registration": _nias().settings.registration}


@bp.post("/auth/register")
def register():
    body = read_json()
    nias = _nias()
    user = accounts.register(nias.store, nias.settings, body.get("email"), body.get("password"),
                             body.get("invitation"))
    sign_in(user)
    return jsonify(_me(user)), 201


@bp.post("/auth/login")
def login():
    body = read_json()
    user = accounts.authenticate(_nias().store, body.get("email"), body.get("password"))
    sign_in(user)
    return jsonify(_me(user))


@bp.post("/auth/logout")
def logout():
    session.clear()
    return Response(status=204)


@bp.get("/me")
def me():
    return jsonify(_me(current_user()))


@bp.get("/tokens")
def list_tokens():
    rows = _nias().store.list_tokens(current_user()["id"])
    return jsonify({"tokens": [{**row, "created_at": iso_time(row["created_at"]),
                                "last_used_at": iso_time(row["last_used_at"])} for row in rows]})


@bp.post("/tokens")
def create_token():
    token = accounts.create_token(_nias().store, current_user(), read_json().get("name", ""))
    return jsonify(token), 201


@bp.delete("/tokens/<token_id>")
def delete_token(token_id: str):
    if not _nias().store.delete_token(current_user()["id"], token_id):
        raise NiasError("You have no API token with this id.", code="token_not_found", status=404)
    return Response(status=204)


@bp.get("/users")
def list_users():
    require_admin()
    users = _nias().store.list_users()
    return jsonify({"users": [{**accounts.public_user(u), "created_at": iso_time(u["created_at"])} for u in users]})


@bp.post("/users")
def create_user():
    require_admin()
    body = read_json()
    user = accounts.create_user(_nias().store, body.get("email"), body.get("password"), body.get("role", "user"))
    return jsonify(accounts.public_user(user)), 201


@bp.post("/invitations")
def create_invitation():
    admin = require_admin()
    return jsonify({"invitation": accounts.create_invitation(_nias().store, admin)}), 201
