"""`nias-admin`: manage accounts from the server's shell (the first admin, invitations, users, sessions)."""
from __future__ import annotations

import click

from nias.errors import NiasError
from nias.settings import load_settings

from backend import accounts, sessions
from backend.store import open_store


def _store():
    settings = load_settings()
    settings.private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return open_store(settings.store_url)


@click.group()
def main() -> None:
    """Manage NIAS accounts (reads DATABASE_URL / NIAS_DATA_DIR like the backend)."""


@main.command("create-user")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=click.Choice(accounts.ROLES), default="user", show_default=True)
def create_user(email: str, password: str, role: str) -> None:
    """Create an account (use --role admin for the first admin)."""
    try:
        user = accounts.create_user(_store(), email, password, role)
    except NiasError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created {user['role']} {user['email']} ({user['id']})")


@main.command("list-users")
def list_users() -> None:
    for user in _store().list_users():
        click.echo(f"{user['id']}  {user['role']:5}  {user['email']}")


def _user(store, email: str) -> dict:
    user = store.find_user(email.strip().lower())
    if user is None:
        raise click.ClickException(f"no account for {email}")
    return user


@main.command("set-password")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def set_password(email: str, password: str) -> None:
    """Give an account a new password and end all its browser sessions."""
    store = _store()
    user = _user(store, email)
    try:
        accounts.set_password(store, user, password)
    except NiasError as exc:
        raise click.ClickException(exc.message) from None
    ended = sessions.end_user_sessions(store, user["id"])
    click.echo(f"password changed for {user['email']}; {ended} session(s) ended")


@main.command("end-sessions")
@click.option("--email", required=True)
def end_sessions(email: str) -> None:
    """Sign an account out of every browser (its API tokens stay)."""
    store = _store()
    user = _user(store, email)
    click.echo(f"{sessions.end_user_sessions(store, user['id'])} session(s) of {user['email']} ended")


@main.command("create-token")
@click.option("--email", required=True)
@click.option("--name", default="cli", show_default=True)
def create_token(email: str, name: str) -> None:
    """Issue an API token for an account (shown once)."""
    store = _store()
    click.echo(accounts.create_token(store, _user(store, email), name)["token"])


@main.command("create-invitation")
@click.option("--admin-email", required=True, help="the admin the invitation is issued by")
def create_invitation(admin_email: str) -> None:
    store = _store()
    admin = store.find_user(admin_email.strip().lower())
    if admin is None or admin["role"] != "admin":
        raise click.ClickException(f"{admin_email} is not an admin")
    click.echo(accounts.create_invitation(store, admin))
