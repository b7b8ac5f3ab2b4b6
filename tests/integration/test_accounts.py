"""Accounts on the real job store (SQLite and PostgreSQL): the three registration modes, and the
first admin made at start-up."""
from __future__ import annotations

import logging
import re

import pytest

from backend import accounts
from backend.accounts import AuthenticationFailed, Forbidden


def test_open_registration_makes_an_account_that_can_sign_in_without_an_invitation(store, make_settings):
    settings = make_settings(registration="open")
    user = accounts.register(store, settings, "ada@lab.example", "long enough pw", None)
    assert user["role"] == "user"
    assert accounts.authenticate(store, "ada@lab.example", "long enough pw")["id"] == user["id"]


def test_closed_registration_refuses_every_newcomer_and_stores_nothing(store, make_settings):
    settings = make_settings(registration="closed")
    with pytest.raises(Forbidden, match="closed"):
        accounts.register(store, settings, "ada@lab.example", "long enough pw", None)
    assert store.find_user("ada@lab.example") is None


def test_invitation_registration_refuses_a_newcomer_without_a_code(store, make_settings):
    settings = make_settings(registration="invite")
    with pytest.raises(Forbidden, match="invitation"):
        accounts.register(store, settings, "ada@lab.example", "long enough pw", None)
    assert store.find_user("ada@lab.example") is None


def test_with_no_admin_one_is_made_and_the_log_says_how_to_sign_in(store, make_settings, caplog):
    settings = make_settings(admin_email="boss@lab.example", admin_password="")
    with caplog.at_level(logging.WARNING, logger="backend.accounts"):
        accounts.ensure_admin(store, settings)
    said = " ".join(record.getMessage() for record in caplog.records)
    found = re.search(r"Sign in at (\S+) with the password (\S+)", said)
    assert found and found.group(1).endswith("/signin.html"), said
    admin = accounts.authenticate(store, "boss@lab.example", found.group(2))
    assert admin["role"] == "admin"
    caplog.clear()
    accounts.ensure_admin(store, settings)  # the next start makes no second admin and says nothing
    assert store.count_admins() == 1 and not caplog.records


def test_the_admin_password_and_token_from_the_environment_are_the_ones_that_work(store, make_settings):
    settings = make_settings(admin_email="boss@lab.example", admin_password="chosen by the admin",
                             admin_token="nias_chosen_token_for_automation")
    accounts.ensure_admin(store, settings)
    admin = accounts.authenticate(store, "boss@lab.example", "chosen by the admin")
    assert accounts.user_for_token(store, "nias_chosen_token_for_automation")["id"] == admin["id"]
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate(store, "boss@lab.example", "a guess")
