"""`nias`: submit and follow jobs from a terminal.

Where and who: `--url` / `--token`, else NIAS_URL / NIAS_TOKEN, else the config file that
`nias login` writes (nias/cli_config.py). Exit codes: nias/cli_common.py `Exit`.
"""
from __future__ import annotations

import socket

import click
from click.shell_completion import get_completion_class

from nias.cli_common import Session, call, open_session
from nias.cli_config import DEFAULT_URL, save_config
from nias.cli_jobs import COMMANDS
from nias.client import NiasClient

SHELLS = ("bash", "zsh", "fish")


@click.group()
@click.option("--url", envvar="NIAS_URL", help=f"the server (default: the config file's, else {DEFAULT_URL})")
@click.option("--token", envvar="NIAS_TOKEN", help="an API token (default: the config file's)")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Talk to a NIAS server."""
    ctx.obj = open_session(url, token)


@main.command()
@click.option("--email", help="sign in with this account's e-mail and password to make a token")
@click.option("--password", help="asked for when not given")
@click.option("--with-token", "given_token", metavar="TOKEN",
              help="keep this API token instead (from the Account page)")
@click.pass_obj
def login(session: Session, email: str | None, given_token: str | None, password: str | None) -> None:
    """Save the server's URL and an API token in the config file, so other commands need neither."""
    token = given_token
    if token is None:
        email = email or click.prompt("E-mail")
        password = password or click.prompt("Password", hide_input=True)
        name = f"nias CLI on {socket.gethostname()}"
        token = call(lambda: NiasClient(session.url).create_token_with_password(email, password, name))
    me = call(lambda: NiasClient(session.url, token=token).me())
    path = save_config(session.url, token)
    click.echo(f"Signed in to {session.url} as {me['email']}; the token is saved in {path}.")


@main.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the script that completes commands, options and job ids in SHELL.

    For bash, add `eval "$(nias completion bash)"` to ~/.bashrc."""
    completer = get_completion_class(shell)(main, {}, "nias", "_NIAS_COMPLETE")
    click.echo(completer.source())


for command in COMMANDS:
    main.add_command(command)
