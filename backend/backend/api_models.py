"""The public API's requests and answers as pydantic models: the OpenAPI document's schemas.

Answers list the fields every client may rely on; objects may carry more (a new field is not a
breaking change), so none forbids extra ones.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nias.errors import BadRequest
from nias.states import JobState
from nias.timeline import Hop
from nias.web import read_json

from backend.openapi import Answer

Timestamp = str  # ISO 8601 with milliseconds and offset: 2026-01-31T12:00:00.000+00:00
JobStateName = Literal[tuple(state.value for state in JobState)]  # type: ignore[valid-type]
Params = dict[str, Any]


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ErrorDetail(Model):
    code: str = Field(description="a stable word for the kind of error, e.g. not_a_zip, job_not_found")
    message: str = Field(description="a sentence for people")


class ErrorBody(Model):
    """The request was refused (the code and message say why)."""

    error: ErrorDetail


# ---- jobs


class JobLinks(Model):
    self: str
    result: str
    log: str


class Job(Model):
    """The job."""

    id: str
    name: str
    state: JobStateName
    priority: int
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration_s: float | None
    exit_code: int | None
    error: str | None
    unit: str | None
    attempts: int
    result_size: int | None
    log_size: int | None
    upload_size: int | None
    timeout_s: int | None
    env_seconds: float | None
    env_cached: bool | None
    env_built_at: Timestamp | None = Field(None, description="when the job's environment was built")
    fresh_env: bool = Field(False, description="the job asked for its environment built anew with the newest versions")
    exact: bool = Field(False, description="a re-run whose environment is built from the packages its original ran with")
    provenance: "Provenance | None" = Field(None, description="what exactly it ran: GET /api/jobs/<id>/provenance")
    run_seconds: float | None
    progress: float | None
    progress_message: str | None
    elapsed_s: float | None
    eta_s: float | None = Field(None, description="absent while there is no rate of progress to go by")
    limits: dict[str, int] = Field(description="the lower limits the job asked for")
    run_limits: dict[str, int | None] = Field(description="the limits it runs under")
    rerun_of: str | None
    params: Params
    command: str | None
    command_digest: str | None
    source: dict | None = Field(None, description='where the project came from: {"git": {"url", "ref", "path", "commit"}}')
    sweep_id: str | None
    owner: str | None
    expired_at: Timestamp | None
    result_pending: bool
    pause_deadline: Timestamp | None
    queue_position: int | None
    pool: str
    waiting_for: str | None
    run_next: bool
    links: JobLinks


class JobPage(Model):
    """A page of jobs, newest first."""

    jobs: list[Job]
    total: int
    page: int
    per_page: int


class Transition(Model):
    from_: JobStateName | None = Field(alias="from")
    to: JobStateName
    at: Timestamp
    attempt: int | None
    unit: str | None
    reason: str | None


class History(Model):
    """Every state change of the job, oldest first."""

    transitions: list[Transition]


class Timing(Model):
    hop: Literal[tuple(hop.value for hop in Hop)]  # type: ignore[valid-type]
    at: str  # ISO 8601 with microseconds, by the clock of the service that marked it
    ms: float | None  # milliseconds since the hop before it; None for the first


class Timings(Model):
    """When the job's current attempt passed each hop (nias.timeline), in their order."""

    job_id: str
    attempt: int
    hops: list[Timing]
    total_ms: float | None  # from the first hop marked to the last


class Check(Model):
    check: str
    ok: bool


class DryRunReport(Model):
    """What a dry run found: each check and whether all passed."""

    ok: bool
    checks: list[Check]


class JobQuery(Model):
    wait_s: int | None = Field(None, ge=0, le=60, description="hold the answer until the state changes")
    state: JobStateName | None = Field(None, description="the state the caller last saw (with wait_s)")
    until: Literal["final"] | None = Field(None, description="with wait_s: hold the answer until the job has ended")


class JobListQuery(Model):
    page: int | None = Field(None, ge=1, le=1_000_000)
    per_page: int | None = Field(None, ge=1, le=100)
    state: JobStateName | None = None
    q: str | None = Field(None, description="the name contains this")
    sweep: str | None = Field(None, description="a sweep's id for its jobs only; none leaves out sweeps' jobs")
    mine: Literal["1", "true"] | None = Field(None, description="an admin's own jobs only")


class SubmitQuery(Model):
    dry_run: Literal["true", "false", "1", "0"] | None = Field(None, description="check the upload; queue nothing")


class Upload(Model):
    """A project upload (multipart/form-data)."""

    file: bytes | None = Field(None, json_schema_extra={"format": "binary", "contentMediaType": "application/zip"},
                               description="the project zip; or, instead, git")
    git: str | None = Field(None, description='a JSON object {"url", "ref", "path"}: the project is fetched from '
                                              'that git repository (hosts in NIAS_GIT_HOSTS) instead of a zip')
    name: str | None = None
    priority: int | None = Field(None, ge=0, le=9)
    timeout_s: int | None = Field(None, ge=1)
    params: str | None = Field(None, description="a JSON object of parameters")
    sweep: str | None = Field(None, description="a JSON sweep: names to lists of values, or a list of points")
    pool: str | None = None
    fresh_env: bool | None = Field(None, description="build the environment anew with the newest versions")
    datasets: str | None = Field(None, description='a JSON list of data set names: ["eeg"], or "owner-email/eeg" '
                                                   'for one shared with me')
    memory_mb: int | None = Field(None, ge=1)
    cpu_s: int | None = Field(None, ge=1)
    processes: int | None = Field(None, ge=1)
    open_files: int | None = Field(None, ge=1)
    file_mb: int | None = Field(None, ge=1)


class DatasetUpload(Model):
    """A data set upload (multipart/form-data)."""

    file: bytes | None = Field(None, json_schema_extra={"format": "binary"},
                               description="the data: a .zip (unpacked for jobs) or any single file")
    name: str | None = Field(None, description="lowercase letters, digits, '-', '_', '.'")


class Dataset(Model):
    name: str
    owner: str = Field(description="the owner's email")
    size: int
    sha256: str
    filename: str
    is_zip: bool
    created_at: str
    jobs_using: int = Field(description="how many of my jobs name it")
    shared_with: list[str] = Field(description="emails it is shared with (the owner's view only)")


class DatasetList(Model):
    datasets: list[Dataset]


class DatasetShare(Model):
    email: str


class LogQuery(Model):
    offset: int | None = Field(None, ge=0, description="return only what came after this byte")


class StateChange(Model):
    """Pause, resume or cancel."""

    state: Literal["paused", "running", "cancelled"]


class PriorityChange(Model):
    priority: int = Field(ge=0, le=9)


class RerunBody(Model):
    params: Params | None = None
    exact: bool | None = Field(None, description="build the new job's environment from the packages the original "
                                                 "ran with, pinned (name==version), not the newest")
    fresh_env: bool | None = Field(None, description="build the new job's environment anew with the newest versions")


class CommandOrigin(Model):
    name: str
    digest: str | None


class GitOrigin(Model):
    url: str
    commit: str | None


class Provenance(Model):
    """A record of exactly what the job ran (nias/provenance.py); also `.nias/provenance.json` in its result."""

    upload_sha256: str = Field(description="sha256 of the uploaded project zip")
    datasets: list[dict] = Field(description="the data sets the job read, each with its sha256")
    command: CommandOrigin | None = Field(description="the command the job was made from, and its digest")
    git: GitOrigin | None = Field(description="the git repository and commit the project came from")
    unit: str | None
    host: str | None
    executor: str | None = Field(description="local or slurm")
    python: str | None
    packages: list[list[str]] | None = Field(description="[name, version] of every package in its environment; "
                                                         "null until the environment was built")


class ResultFile(Model):
    name: str
    size: int
    type: str


class FileList(Model):
    """The result's files (paths relative to output/)."""

    files: list[ResultFile]
    total: int
    offset: int


class FileListQuery(Model):
    offset: int | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=1, le=10_000)


class FileQuery(Model):
    max_bytes: int | None = Field(None, ge=1, description="send only the file's start (X-Truncated: true)")
    download: Literal["1", "true", "yes"] | None = Field(None, description="as an attachment")


class EventsQuery(Model):
    job: str | None = Field(None, description="follow this job only")


# ---- sweeps and commands


class Sweep(Model):
    """The sweep, with its jobs."""

    id: str
    name: str
    owner: str | None
    command: str | None
    created_at: Timestamp
    params: Params
    sweep: Any
    varied: list[str]
    metric_names: list[str]
    total: int
    counts: dict[str, int]
    jobs: list[dict[str, Any]] = Field(description="each job as GET /api/jobs/{id} shows it, with its metrics")
    links: dict[str, str]


class SweepRow(Model):
    id: str
    name: str
    total: int
    counts: dict[str, int]


class SweepPage(Model):
    """A page of sweeps, newest first."""

    sweeps: list[SweepRow]
    total: int
    page: int
    per_page: int


class PageQuery(Model):
    page: int | None = Field(None, ge=1, le=1_000_000)
    per_page: int | None = Field(None, ge=1, le=100)


class CommandParameter(Model):
    name: str
    type: str
    required: bool
    help: str


class Command(Model):
    """The command and its parameters."""

    name: str
    title: str
    description: str
    digest: str
    parameters: list[CommandParameter]
    links: dict[str, str]


class BrokenCommand(Model):
    folder: str
    reason: str


class CommandList(Model):
    """The usable commands; for an admin the broken ones too."""

    commands: list[Command]
    broken: list[BrokenCommand] | None = None


class CommandRun(Model):
    """Queue a job (or a sweep) from a command."""

    params: Params | None = None
    sweep: Any = None
    name: str | None = None
    priority: int | None = Field(None, ge=0, le=9)
    timeout_s: int | None = Field(None, ge=1)
    pool: str | None = None


# ---- accounts


class Me(Model):
    """The signed-in user."""

    id: str
    email: str
    role: Literal["admin", "user"]
    csrf_token: str | None
    registration: str


class SessionState(Model):
    """Whether the asker is signed in."""

    signed_in: bool
    user: Me | None = None


class Credentials(Model):
    email: str
    password: str


class Registration(Model):
    email: str
    password: str
    invitation: str | None = None


class PasswordChange(Model):
    current: str
    new: str


class PasswordChanged(Model):
    """The password changed; the account's other sessions ended."""

    other_sessions_ended: int


class TokenRow(Model):
    id: str
    name: str
    created_at: Timestamp
    last_used_at: Timestamp | None


class TokenList(Model):
    """Your API tokens (never their secret)."""

    tokens: list[TokenRow]


class TokenRequest(Model):
    name: str | None = Field(None, description="what the token is for, e.g. laptop CLI (required: 400 bad_token_name)")
    expires_days: int | None = Field(None, ge=1, le=3650, description="days until it stops working; none: never")


class NewToken(Model):
    """The new token: its secret is shown this once."""

    id: str
    name: str
    token: str
    expires_at: Timestamp | None = None


class Webhook(Model):
    """Your webhook: called with a job's JSON when one of your jobs ends, signed with `secret`."""

    url: str | None
    secret: str | None


class WebhookTarget(Model):
    url: str = Field(description="an https:// (or http://) address NIAS may call")


class NoteChange(Model):
    note: str = Field(max_length=200, description="at most 200 characters; empty removes the note")


class DrainChange(Model):
    drain: bool = Field(description="true: finish the current job and take no more; false: take jobs again")


class DrainedUnit(Model):
    """The unit, with `drain` (`draining`, `drained` or null) and whether the drain message was sent."""

    name: str
    drain: Literal["draining", "drained"] | None = None
    sent: bool


class DeadLetterDiscard(Model):
    message_ids: list[str] | None = None
    all: bool | None = None


class Discarded(Model):
    """How many dead letters went."""

    discarded: int


class Storage(Model):
    """Bytes the data volume holds by kind, and how long results are kept."""

    environments: int | None
    environments_dir: str
    retention_days: float


class User(Model):
    """The user."""

    id: str
    email: str
    role: Literal["admin", "user"]


class AccountChange(Model):
    role: Literal["admin", "user"] | None = None
    disabled: bool | None = None


class AccountUser(User):
    """The account as it now is."""

    disabled: bool = False


class NewPassword(Model):
    """A new random password, shown this once; the user's sessions ended."""

    password: str
    sessions_ended: int


class UserRow(User):
    created_at: Timestamp
    sessions: int


class UserList(Model):
    """Every account."""

    users: list[UserRow]


class NewUser(Model):
    email: str
    password: str
    role: Literal["admin", "user"] | None = None


class SessionsEnded(Model):
    """How many of the user's sessions ended."""

    ended: int


class Invitation(Model):
    """A one-time invitation code for registering."""

    invitation: str


# ---- the server


class Unit(Model):
    name: str
    state: Literal["idle", "busy", "offline"]
    job_id: str | None
    last_seen: Timestamp | None
    sandbox: str | None
    pools: list[str]


class UnitList(Model):
    """Every processing unit's state."""

    units: list[Unit]


class Pool(Model):
    name: str
    declared: bool
    queued: int
    units: list[str]
    online: int


class Summary(Model):
    """Jobs per state, the units and the pools."""

    counts: dict[str, int]
    units: list[Unit]
    pools: list[Pool]
    sandbox_warning: str | None


class Limits(Model):
    """The upload limits."""

    max_upload_mb: int
    max_files: int
    max_unpacked_mb: int
    job_timeout_s: int


class DeadLetter(Model):
    body: str
    size: int
    message_id: str | None
    reason: str | None
    queue: str | None
    dead_lettered_at: Timestamp | None


class DeadLetters(Model):
    """The dead-lettered messages (peeked at, not removed)."""

    queue: str
    count: int
    messages: list[DeadLetter]


class DeadLetterQuery(Model):
    limit: int | None = Field(None, ge=1, le=500)


REFUSED = {"4XX": ErrorBody}  # every refusal has the error shape; each view names its successes
UNAVAILABLE = {503: Answer("a service it needs (the broker) is unavailable", model=ErrorBody)}
ZIP = Answer("a zip file", media="application/zip", schema={"type": "string", "contentMediaType": "application/zip"})
EVENT_STREAM = Answer("a stream of `event: job` messages", media="text/event-stream", schema={"type": "string"})
LOG_TEXT = Answer("stdout and stderr so far", media="text/plain", schema={"type": "string"},
                  headers={"X-Log-Size": "the log's size when asked: where to ask on from"})
RESULT_FILE = Answer("the file, typed by its name", media="*/*", schema={})
OPENAPI_DOCUMENT = Answer("the OpenAPI document", schema={"type": "object"})


def read_body(model: type[Model]) -> dict:
    """The request's JSON object, checked against `model` (types, bounds, required fields); a 400 names the first
    field that breaks it. Returns the object as sent, for the view's own rules."""
    body = read_json()
    try:
        model.model_validate(body)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "body"
        raise BadRequest(f"{field}: {problem['msg']}.", field=field) from None
    return body
