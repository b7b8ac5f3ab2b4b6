"""`nias` commands about jobs: submit and run, follow, list, control, and the server's status."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from nias.cli_common import PARAM, POOL, SWEEP, WAIT, Exit, assignments, call, client_of, open_session
from nias.client import NiasClient
from nias.job_log import parse_line, plain_text
from nias.params import split_sweep_values
from nias.project_zip import zip_folder
from nias.states import is_final

WAIT_FOREVER_S = 7 * 24 * 3600
FOLLOW_POLL_S = 1.0


def complete_job_id(ctx: click.Context, _param, incomplete: str) -> list[CompletionItem]:
    """The ids of your latest jobs that start with what was typed (nothing when the server is out of reach)."""
    try:
        given = ctx.find_root().params  # completion parses the options but runs no command
        jobs = open_session(given.get("url"), given.get("token")).client.jobs(per_page=50)["jobs"]
    except Exception:  # noqa: BLE001 - completion must never break the shell
        return []
    return [CompletionItem(job["id"], help=f"{job['state']} {job['name']}") for job in jobs
            if job["id"].startswith(incomplete)]


JOB_ID = click.argument("job_id", shell_complete=complete_job_id)


def finish(client: NiasClient, job_id: str) -> None:
    job = call(lambda: client.wait(job_id, timeout_s=WAIT_FOREVER_S))
    click.echo(f"{job['id']}  {job['state']}" + (f"  {job['error']}" if job["error"] else ""))
    sys.exit(Exit.OK if job["state"] == "succeeded" else Exit.JOB_DID_NOT_SUCCEED)


def submitted(client: NiasClient, answer: dict, wait: bool) -> None:
    """Print the job or the sweep just queued; with --wait, follow it to the end."""
    if "jobs" not in answer:
        click.echo(f"{answer['id']}  {answer['state']}  {answer['name']}  (pool {answer.get('pool')})")
        if answer.get("waiting_for"):
            click.echo(f"  {answer['waiting_for']}")
        if wait:
            finish(client, answer["id"])
        return
    click.echo(f"sweep {answer['id']}  {answer['total']} jobs  {answer['name']}")
    for job in answer["jobs"]:
        click.echo(f"{job['id']}  {job['state']}  {json.dumps(job['params'], sort_keys=True)}")
    if wait:
        sweep = call(lambda: client.wait_sweep(answer["id"], timeout_s=WAIT_FOREVER_S))
        for job in sweep["jobs"]:
            click.echo(f"{job['id']}  {job['state']}  {json.dumps(job['metrics'], sort_keys=True)}")
        sys.exit(Exit.OK if all(job["state"] == "succeeded" for job in sweep["jobs"]) else Exit.JOB_DID_NOT_SUCCEED)


def upload(client: NiasClient, zipped: Path, name: str | None, **fields) -> dict:
    """Send the zip with a progress bar on stderr (drawn when stderr is a terminal)."""
    with click.progressbar(length=zipped.stat().st_size, label="Uploading", file=sys.stderr,
                           show_pos=False, show_percent=True) as bar:
        return call(lambda: client.submit(zipped, name=name, on_progress=bar.update, **fields))


@click.command()
@click.argument("project", type=click.Path(exists=True, path_type=Path), required=False)
@click.option("--git", "git_url", metavar="URL", help="take the project from this git repository instead")
@click.option("--ref", help="with --git: the branch, tag or commit (default: the repository's HEAD)")
@click.option("--path", "git_path", help="with --git: the subfolder that is the project's root")
@click.option("--name", help="the job's name (default: the zip's or the folder's name)")
@click.option("--priority", type=click.IntRange(0, 9))
@click.option("--timeout", "timeout_s", type=int)
@click.option("--fresh-env", is_flag=True, help="build the environment anew with the newest versions")
@click.option("--data", "datasets", multiple=True, metavar="NAME",
              help="a data set the job reads at data/NAME/ (repeatable; owner-email/NAME for a shared one)")
@PARAM
@SWEEP
@POOL
@WAIT
@click.pass_context
def submit(ctx, project: Path | None, git_url, ref, git_path, name, priority, timeout_s, fresh_env, datasets, params,
           sweeps, pool, wait: bool) -> None:
    """Upload PROJECT (a .zip, or a folder zipped on the fly without what its .niasignore names) as a new job,
    or as a sweep of jobs; or, with --git, have the server fetch the project from a git repository."""
    client = client_of(ctx)
    values, grid = assignments(params, "--param"), assignments(sweeps, "--sweep", split_sweep_values)
    fields = dict(priority=priority, timeout_s=timeout_s, params=values or None, sweep=grid or None, pool=pool,
                  fresh_env=1 if fresh_env else None, datasets=list(datasets) or None)
    if (project is None) == (git_url is None):
        raise click.UsageError("Give either a PROJECT (a zip or a folder) or --git URL.")
    if git_url is None and (ref or git_path):
        raise click.UsageError("--ref and --path go with --git.")
    if git_url is not None:
        return submitted(client, call(lambda: client.submit_git(git_url, ref=ref, path=git_path, name=name,
                                                                **fields)), wait)
    if not project.is_dir():
        return submitted(client, upload(client, project, name, **fields), wait)
    with tempfile.TemporaryDirectory(prefix="nias-") as scratch:
        zipped = Path(scratch) / f"{project.resolve().name}.zip"
        try:
            _zip, links = zip_folder(project, zipped)
        except Exception as exc:  # noqa: BLE001 - named for the user, with the usage exit code
            raise click.UsageError(getattr(exc, "message", str(exc))) from None
        for link in links:
            click.echo(f"left out {link}: links are not sent", err=True)
        answer = upload(client, zipped, name or project.resolve().name, **fields)
    submitted(client, answer, wait)


@click.command("commands")
@click.pass_context
def list_commands(ctx) -> None:
    """The commands this server offers, with their parameters."""
    listing = call(lambda: client_of(ctx).commands())
    for command in listing["commands"]:
        click.echo(f"{command['name']}  {command['title']}")
        if command["description"]:
            click.echo(f"    {command['description']}")
        for parameter in command["parameters"]:
            bounds = "".join(f" {key}={parameter[key]}" for key in ("default", "min", "max", "choices")
                             if key in parameter)
            required = " required" if parameter["required"] else ""
            click.echo(f"    --param {parameter['name']}=<{parameter['type']}>{required}{bounds}  {parameter['help']}")
    for broken in listing.get("broken", []):
        click.echo(f"broken: {broken['folder']}  {broken['reason']}")


@click.command()
@click.argument("command")
@click.option("--name")
@click.option("--priority", type=click.IntRange(0, 9))
@PARAM
@SWEEP
@POOL
@WAIT
@click.pass_context
def run(ctx, command: str, name, priority, params, sweeps, pool, wait: bool) -> None:
    """Queue a job from one of the server's COMMANDs (see `nias commands`)."""
    client = client_of(ctx)
    values, grid = assignments(params, "--param"), assignments(sweeps, "--sweep", split_sweep_values)
    answer = call(lambda: client.run_command(command, params=values, sweep=grid or None, name=name,
                                             priority=priority, pool=pool))
    submitted(client, answer, wait)


@click.command()
@JOB_ID
@click.pass_context
def wait(ctx, job_id: str) -> None:
    """Wait until JOB_ID ends; exit 0 if it succeeded, 1 if not."""
    finish(client_of(ctx), job_id)


def job_table(jobs: list[dict]) -> list[str]:
    rows = [("ID", "STATE", "CREATED", "POOL", "NAME")]
    rows += [(job["id"], job["state"], job["created_at"][:19].replace("T", " "), job["pool"], job["name"])
             for job in jobs]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return ["  ".join(value.ljust(width) for value, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]


@click.command("list")
@click.option("--state", type=click.Choice(["queued", "running", "paused", "succeeded", "failed", "cancelled"]))
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="jobs per page")
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="the API's answer as JSON, for scripts")
@click.pass_context
def list_jobs(ctx, state, limit: int, page: int, as_json: bool) -> None:
    """Your most recent jobs, newest first (an admin's: everyone's)."""
    answer = call(lambda: client_of(ctx).jobs(state=state, page=page, per_page=limit))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for line in job_table(answer["jobs"]):
        click.echo(line)
    shown = len(answer["jobs"])
    if answer["total"] > (page - 1) * limit + shown:
        click.echo(f"({shown} of {answer['total']}; --page {page + 1} for more)", err=True)


class LogPrinter:
    """Prints a log's lines as they arrive (a line cut between two reads waits for its end): as a
    terminal shows them, or as stored (`raw`)."""

    def __init__(self, raw: bool = False, times: bool = False):
        self.raw, self.times, self._rest = raw, times, ""

    def feed(self, chunk: bytes, final: bool = False) -> None:
        text = self._rest + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._rest = "" if final else lines.pop()
        for line in lines:
            if not line and final:
                continue
            shown = line if self.raw else plain_text(parse_line(line), times=self.times)
            if shown is not None:
                click.echo(shown)


def follow_log(client: NiasClient, job_id: str, printer: LogPrinter) -> dict:
    """Print the log as it grows until the job has ended and all of it is out; returns the ended job."""
    offset = 0
    while True:
        job = call(lambda: client.job(job_id))
        chunk, offset = call(lambda: client.log_from(job_id, offset))
        if chunk:
            printer.feed(chunk)
        if is_final(job["state"]) and not job.get("result_pending") and not chunk:
            printer.feed(b"", final=True)
            return job
        if not chunk:
            time.sleep(FOLLOW_POLL_S)


@click.command()
@JOB_ID
@click.option("-f", "--follow", is_flag=True, help="go on printing as the job writes; exit with its outcome")
@click.option("-t", "--times", is_flag=True, help="each line's UTC time first")
@click.option("--raw", is_flag=True, help="the log as stored: times, [out]/[err]/[nias] and bars' passing states")
@click.pass_context
def logs(ctx, job_id: str, follow: bool, times: bool, raw: bool) -> None:
    """Print the job's output (stdout and stderr) so far, or follow it to the end."""
    client = client_of(ctx)
    printer = LogPrinter(raw=raw, times=times)
    if not follow:
        printer.feed(call(lambda: client.log(job_id)).encode(), final=True)
        return
    job = follow_log(client, job_id, printer)
    click.echo(f"{job['id']}  {job['state']}" + (f"  {job['error']}" if job["error"] else ""), err=True)
    sys.exit(Exit.OK if job["state"] == "succeeded" else Exit.JOB_DID_NOT_SUCCEED)


@click.command()
@JOB_ID
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def download(ctx, job_id: str, output: Path | None) -> None:
    """Save the job's zipped output/ folder."""
    target = output or Path(f"{job_id}-result.zip")
    call(lambda: client_of(ctx).result(job_id, target))
    click.echo(str(target))


def state_command(name: str, target: str, summary: str) -> click.Command:
    @click.command(name, help=summary)
    @JOB_ID
    @click.pass_context
    def change(ctx, job_id: str) -> None:
        job = call(lambda: client_of(ctx).set_state(job_id, target))
        click.echo(f"{job['id']}  {job['state']}")
    return change


cancel = state_command("cancel", "cancelled", "Cancel a job; what it wrote to output/ so far is kept.")
pause = state_command("pause", "paused", "Pause a running job (its processes are frozen).")
resume = state_command("resume", "running", "Resume a paused job.")


@click.command(hidden=True)
@JOB_ID
@click.argument("state", type=click.Choice(["paused", "running", "cancelled"]))
@click.pass_context
def control(ctx, job_id: str, state: str) -> None:
    """Pause, resume (running) or cancel a job (`nias pause|resume|cancel` say it shorter)."""
    job = call(lambda: client_of(ctx).set_state(job_id, state))
    click.echo(f"{job['id']}  {job['state']}")


@click.command()
@JOB_ID
@PARAM
@WAIT
@click.option("--exact", is_flag=True, help="install exactly the package versions the job ran with, not the newest")
@click.pass_context
def rerun(ctx, job_id: str, params, wait: bool, exact: bool) -> None:
    """Run an ended job again from its upload (with other parameters, given --param)."""
    client = client_of(ctx)
    values = assignments(params, "--param")
    submitted(client, call(lambda: client.rerun(job_id, params=values or None, exact=exact)), wait)


@click.command()
@JOB_ID
@click.argument("priority", type=click.IntRange(0, 9))
@click.pass_context
def priority(ctx, job_id: str, priority: int) -> None:
    """Give a queued job another PRIORITY (0 to 9; higher runs first)."""
    job = call(lambda: client_of(ctx).set_priority(job_id, priority))
    click.echo(f"{job['id']}  {job['state']}  priority {job['priority']}  position {job['queue_position']}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the API's answer as JSON, for scripts")
@click.pass_context
def status(ctx, as_json: bool) -> None:
    """The queue (jobs per state, per pool) and the processing units."""
    summary = call(lambda: client_of(ctx).summary())
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo("jobs:  " + "  ".join(f"{state} {count}" for state, count in summary["counts"].items()))
    for pool in summary["pools"]:
        online = f"{pool['online']} of {len(pool['units'])} units online"
        click.echo(f"pool {pool['name']}: {pool['queued']} queued, {online}")
    rows = [("UNIT", "STATE", "POOLS", "JOB")] + [
        (unit["name"], unit["state"], ",".join(unit["pools"]), unit["job_id"] or "-") for unit in summary["units"]]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        click.echo("  ".join(value.ljust(width) for value, width in zip(row[:3], widths)) + "  " + row[3])
    if summary.get("sandbox_warning"):
        click.echo(f"warning: {summary['sandbox_warning']}", err=True)


log = click.Command("log", callback=logs.callback, params=logs.params, help=logs.help, hidden=True)  # its older name

COMMANDS = (submit, list_commands, run, wait, list_jobs, logs, log, download, cancel, pause, resume, control, rerun,
            priority, status)
