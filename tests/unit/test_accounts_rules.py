"""Account rules that need no server: what a password, an e-mail and a role may be."""
from __future__ import annotations

import hashlib

import pytest
from werkzeug.security import check_password_hash

from backend import accounts
from nias.errors import BadRequest


class MemoryStore:
    """Just enough of the store for create_user."""

    def __init__(self):
        self.users: dict[str, dict] = {}

    def find_user(self, email):
        return next((u for u in self.users.values() if u["email"] == email), None)

    def insert_user(self, **values):
        self.users[values["id"]] = values
        return values


@pytest.mark.parametrize("email,password,role,says", [("not-an-email", "long enough pw", "user", "e-mail"),
                                                      ("a@b.c", "short", "user", "password"),
                                                      ("a@b.c", "long enough pw", "superuser", "role")])
def test_a_bad_email_short_password_or_unknown_role_is_refused(email, password, role, says):
    store = MemoryStore()
    with pytest.raises(BadRequest, match=says):
        accounts.create_user(store, email, password, role)
    assert store.users == {}


def test_a_password_is_stored_as_a_salted_scrypt_hash_never_in_clear():
    store = MemoryStore()
    one = accounts.create_user(store, "One@Lab.example", "same password", "user")
    two = accounts.create_user(store, "two@lab.example", "same password", "user")
    assert one["email"] == "one@lab.example"
    assert one["password_hash"].startswith("scrypt:") and "same password" not in one["password_hash"]
    assert one["password_hash"] != two["password_hash"]
    assert check_password_hash(one["password_hash"], "same password")
    assert not check_password_hash(one["password_hash"], "other password")


class TokenStore:
    """Just enough of the store for create_token: what would be written."""

    def __init__(self):
        self.rows: list[dict] = []

    def insert_token(self, **values):
        self.rows.append(values)


def test_tokens_are_kept_only_as_digests():
    store = TokenStore()
    made = accounts.create_token(store, {"id": "user-1"}, "laptop")
    [row] = store.rows
    assert made["token"].startswith("nias_") and made["token"] not in row.values()
    assert row["token_hash"] == hashlib.sha256(made["token"].encode()).hexdigest()
