"""`nias`: submit and follow jobs from a terminal. NIAS_URL and NIAS_TOKEN say where and who."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from nias.client import NiasClient
from nias.errors import NiasError
from nias.params import parse_value, split_sweep_values


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


def _assignments(texts: tuple[str, ...], option: str, parse=parse_value) -> dict:
    """`--param name=value` (value as JSON when it parses, else text) or `--sweep name=v1,v2`."""
    values = {}
    for text in texts:
        name, equals, raw = text.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{text!r} is not name=value", param_hint=option)
        values[name.strip()] = parse(raw)
    return values


PARAM = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                     help="a parameter for code.py (repeatable); the value is read as JSON when it parses")
SWEEP = click.option("--sweep", "sweeps", multiple=True, metavar="NAME=V1,V2",
                     help="run one job per combination of these values (repeatable)")


def _submitted(client: NiasClient, answer: dict, wait: bool) -> None:
    """Print the job or the sweep just queued; with --wait, follow it to the end."""
    if "jobs" not in answer:
        click.echo(f"{answer['id']}  {answer['state']}  {answer['name']}  (pool {answer.get('pool')})")
        if answer.get("waiting_for"):
            click.echo(f"  {answer['waiting_for']}")
        if wait:
            _finish(client, answer["id"])
        return
    click.echo(f"sweep {answer['id']}  {answer['total']} jobs  {answer['name']}")
    for job in answer["jobs"]:
        click.echo(f"{job['id']}  {job['state']}  {json.dumps(job['params'], sort_keys=True)}")
    if wait:
        sweep = _run(lambda: client.wait_sweep(answer["id"], timeout_s=7 * 24 * 3600))
        for job in sweep["jobs"]:
            click.echo(f"{job['id']}  {job['state']}  {json.dumps(job['metrics'], sort_keys=True)}")
        sys.exit(0 if all(job["state"] == "succeeded" for job in sweep["jobs"]) else 1)


@main.command()
@click.argument("project", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name")
@click.option("--priority", type=click.IntRange(0, 9))
@click.option("--timeout", "timeout_s", type=int)
@PARAM
@SWEEP
@click.option("--pool", default=None, help="the pool of units to run it on (default: the default pool)")
@click.option("--wait", is_flag=True, help="wait for the job (or every job of the sweep) to end and exit with its outcome")
@click.pass_context
def submit(ctx, project: Path, name, priority, timeout_s, params, sweeps, pool, wait: bool) -> None:
    """Upload PROJECT (a .zip) as a new job, or as a sweep of jobs."""
    client = _client(ctx)
    values, grid = _assignments(params, "--param"), _assignments(sweeps, "--sweep", split_sweep_values)
    answer = _run(lambda: client.submit(project, name=name, priority=priority, timeout_s=timeout_s,
                                        params=values or None, sweep=grid or None, pool=pool))
    _submitted(client, answer, wait)


@main.command("commands")
@click.pass_context
def list_commands(ctx) -> None:
    """The commands this server offers, with their parameters."""
    listing = _run(lambda: _client(ctx).commands())
    for command in listing["commands"]:
        click.echo(f"{command['name']}  {command['title']}")
        if command["description"]:
            click.echo(f"    {command['description']}")
        for parameter in command["parameters"]:
            bounds = "".join(f" {key}={parameter[key]}" for key in ("default", "min", "max", "choices") if key in parameter)
            required = " required" if parameter["required"] else ""
            click.echo(f"    --param {parameter['name']}=<{parameter['type']}>{required}{bounds}  {parameter['help']}")
    for broken in listing.get("broken", []):
        click.echo(f"broken: {broken['folder']}  {broken['reason']}")


@main.command()
@click.argument("command")
@click.option("--name")
@click.option("--priority", type=click.IntRange(0, 9))
@PARAM
@SWEEP
@click.option("--pool", default=None, help="the pool of units to run it on (default: the default pool)")
@click.option("--wait", is_flag=True, help="wait for the job (or every job of the sweep) to end and exit with its outcome")
@click.pass_context
def run(ctx, command: str, name, priority, params, sweeps, pool, wait: bool) -> None:
    """Queue a job from one of the server's COMMANDs (see `nias commands`)."""
    client = _client(ctx)
    values, grid = _assignments(params, "--param"), _assignments(sweeps, "--sweep", split_sweep_values)
    answer = _run(lambda: client.run_command(command, params=values, sweep=grid or None, name=name,
                                             priority=priority, pool=pool))
    _submitted(client, answer, wait)


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
