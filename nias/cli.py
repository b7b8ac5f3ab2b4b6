"""`nias`: submit and follow jobs from a terminal. NIAS_URL and NIAS_TOKEN say where and who."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from nias.client import NiasClient
from nias.errors import NiasError


def _client(ctx: click.Context) -> NiasClient:
    return ctx.obj


@click.group()
@click.option("--url", envvar="NIAS_URL", default="http://127.0.0.1:8080", show_default=True)
@click.option("--token", envvar="NIAS_TOKEN", help="an API token from your account page")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Talk to a NIAS server."""
    ctx.obj = NiasClient(url, token=token)


def _run(action):
    try:
        return action()
    except NiasError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name")
@click.option("--priority", type=click.IntRange(0, 9))
@click.option("--timeout", "timeout_s", type=int)
@click.option("--pool", default=None, help="the pool of units to run it on (default: the default pool)")
@click.option("--wait", is_flag=True, help="wait for the job to end and exit with its outcome")
@click.pass_context
def submit(ctx, project: Path, name, priority, timeout_s, pool, wait: bool) -> None:
    """Upload PROJECT (a .zip) as a new job."""
    client = _client(ctx)
    job = _run(lambda: client.submit(project, name=name, priority=priority, timeout_s=timeout_s, pool=pool))
    click.echo(f"{job['id']}  {job['state']}  {job['name']}" + (f"  (pool {job['pool']})" if pool else ""))
    if job.get("waiting_for"):
        click.echo(f"  {job['waiting_for']}")
    if wait:
        _finish(client, job["id"])


def _finish(client: NiasClient, job_id: str) -> None:
    job = _run(lambda: client.wait(job_id, timeout_s=7 * 24 * 3600))
    click.echo(f"{job['id']}  {job['state']}" + (f"  {job['error']}" if job["error"] else ""))
    sys.exit(0 if job["state"] == "succeeded" else 1)


@main.command()
@click.argument("job_id")
@click.pass_context
def wait(ctx, job_id: str) -> None:
    """Wait until JOB_ID ends; exit 0 if it succeeded."""
    _finish(_client(ctx), job_id)


@main.command("list")
@click.option("--state")
@click.pass_context
def list_jobs(ctx, state) -> None:
    """Your most recent jobs."""
    for job in _run(lambda: _client(ctx).jobs(state=state, per_page=50))["jobs"]:
        click.echo(f"{job['id']}  {job['state']:9}  {job['created_at'][:19]}  {job['name']}")


@main.command()
@click.argument("job_id")
@click.pass_context
def log(ctx, job_id: str) -> None:
    """Print the job's output so far."""
    click.echo(_run(lambda: _client(ctx).log(job_id)), nl=False)


@main.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def download(ctx, job_id: str, output: Path | None) -> None:
    """Save the job's zipped output/ folder."""
    target = output or Path(f"{job_id}-result.zip")
    _run(lambda: _client(ctx).result(job_id, target))
    click.echo(str(target))


@main.command()
@click.argument("job_id")
@click.argument("state", type=click.Choice(["paused", "running", "cancelled"]))
@click.pass_context
def control(ctx, job_id: str, state: str) -> None:
    """Pause, resume (running) or cancel a job."""
    client = _client(ctx)
    job = _run(lambda: client.set_state(job_id, state))
    click.echo(f"{job['id']}  {job['state']}")
