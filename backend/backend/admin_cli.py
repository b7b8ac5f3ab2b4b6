"""`nias-admin`: manage accounts from the server's shell (the first admin, invitations, users)."""
from __future__ import annotations

import click

from nias.errors import NiasError
from nias.settings import load_settings

from backend import accounts
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


@main.command("create-token")
@click.option("--email", required=True)
@click.option("--name", default="cli", show_default=True)
def create_token(email: str, name: str) -> None:
    """Issue an API token for an account (shown once)."""
    store = _store()
    user = store.find_user(email.strip().lower())
    if user is None:
        raise click.ClickException(f"no account for {email}")
    click.echo(accounts.create_token(store, user, name)["token"])


@main.command("create-invitation")
@click.option("--admin-email", required=True, help="the admin the invitation is issued by")
def create_invitation(admin_email: str) -> None:
    store = _store()
    admin = store.find_user(admin_email.strip().lower())
    if admin is None or admin["role"] != "admin":
        raise click.ClickException(f"{admin_email} is not an admin")
    click.echo(accounts.create_invitation(store, admin))
