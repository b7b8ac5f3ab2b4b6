"""One typed settings object, read from the environment once at each entry point.

Every variable is documented in `.env.example` and docs/configuration.md. Services take the
fields they need from the same object, so a variable means the same everywhere.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from nias.errors import ConfigurationError

DEFAULT_POOL = "default"
POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def parse_pools(raw: str, variable: str) -> tuple[str, ...]:
    """`gpu, cluster` -> ("gpu", "cluster"); a malformed or empty list fails naming `variable`."""
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    bad = [name for name in names if not POOL_NAME.fullmatch(name)]
    if bad or not names:
        raise ConfigurationError(f"{variable} must list pool names of lowercase letters, digits, _ and - "
                                 f"(at most 32), separated by commas, not {raw!r}")
    return names


def _default_job_python() -> str:
    # Debian's interpreter starts in ~13 ms, the pyenv shim in ~170 ms: jobs use the fastest real path.
    for candidate in ("/usr/bin/python3",):
        if os.path.exists(candidate):
            return candidate
    return os.path.realpath(sys.executable)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("shared-volume")
    database_url: str = ""
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    amqp_heartbeat_s: int = 60
    queue_prefix: str = "nias"
    host: str = "127.0.0.1"
    port: int = 8080
    producer_url: str = "http://127.0.0.1:8081"
    backend_url: str = "http://127.0.0.1:8080"
    unit_url: str = "http://127.0.0.1:8090"
    unit_name: str = "unit-1"
    pools: str = DEFAULT_POOL  # the pools that exist (NIAS_POOLS); a job names one of them
    unit_pools: str = DEFAULT_POOL  # the pools this unit serves (NIAS_UNIT_POOLS)
    instance_id: str = ""  # named in /healthz, so a launcher knows its own child's answer
    no_install: int = 0  # 1: `make up` installs nothing, it names what to install and stops
    work_dir: Path | None = None
    env_dir: Path | None = None
    dataset_cache_dir: Path | None = None  # where a unit keeps the data sets it fetched (default under its work dir)
    dataset_cache_mb: int = 20_480
    job_python: str = dataclasses.field(default_factory=_default_job_python)
    uv_path: str = ""
    max_upload_mb: int = 200
    max_files: int = 10_000
    max_unpacked_mb: int = 2_048
    max_ratio: int = 200
    max_result_mb: int = 1_024
    max_result_files: int = 10_000
    max_log_mb: int = 100
    job_timeout_s: int = 3_600
    job_retries: int = 2
    lease_s: int = 60
    kill_grace_s: float = 5.0
    stop_grace_s: float = 20.0
    read_timeout_s: float = 60.0
    result_delivery_s: float = 900.0  # how long a unit keeps offering a finished job's result to the backend
    upload_timeout_s: float = 900.0
    header_timeout_s: float = 10.0  # a connection's whole request head must arrive within this
    max_uploads_per_user: int = 2  # uploads of one user being received at once; more answer 429
    max_uploads: int = 32  # uploads being received at once in all (half the backend's threads)
    max_streams_per_user: int = 4  # open event streams of one user; more answer 429
    max_streams: int = 256  # open event streams in all
    sandbox: str = "bwrap"  # required by default: a unit without bubblewrap refuses to start
    job_uid: int = 0
    job_uid_range: str = "61000-61999"  # LOW-HIGH: each running job takes a uid of its own from it
    job_network: int = 0
    build_sdists: int = 0  # 1: requirements may be built from source (their build code runs as the unit)
    job_memory_mb: int = 8_192
    job_cpus: float = 0.0  # CPUs a job's processes may use together (its cgroup's quota); 0: no limit
    job_cpu_s: int = 0
    job_processes: int = 256
    job_open_files: int = 1_024
    job_file_mb: int = 2_048
    job_tmp_mb: int = 512
    internal_token: str = ""
    secret_key: str = ""
    registration: str = "invite"
    webhook_allow_networks: str = ""  # networks webhooks may call besides public ones, e.g. "10.0.0.0/8,127.0.0.1/32"
    admin_email: str = "admin@localhost"
    admin_password: str = ""
    admin_token: str = ""
    cookie_secure: int = 0
    session_days: float = 14.0
    max_pause_s: int = 3_600
    redispatch_s: int = 120  # a queued job whose message is nowhere for this long is published again; 0: never
    redispatch_limit: int = 3  # re-publications of one job before it fails as undeliverable
    max_queued_per_user: int = 100
    max_storage_mb_per_user: int = 20_480
    max_sweep_jobs: int = 1_000  # jobs one sweep may make
    git_hosts: str = ""  # hosts jobs may be fetched from as git repositories; empty: no git jobs
    git_http_hosts: str = ""  # of those, the ones reached over plain http
    git_tokens: str = ""  # host=user:token,... sent to that host only
    git_timeout_s: float = 120.0  # a git fetch and pack in all
    env_max_age_days: float = 7.0  # an environment of unpinned requirements older than this is built again
    commands_dir: Path | None = None  # the admin's commands; default <data>/commands
    retention_days: float = 30.0  # 0 keeps results for ever
    log_level: str = "INFO"
    executor: str = "local"  # how a unit runs jobs: "local" (on its own host) or "slurm" (sbatch on a cluster)
    slurm_max_jobs: int = 4  # batch jobs a Slurm unit holds at once
    slurm_work_dir: Path | None = None  # a folder the compute nodes see: projects, environments, batch output
    slurm_partition: str = ""  # one partition for every pool, or pool=partition pairs; empty: the cluster's default
    slurm_account: str = ""
    slurm_options: str = ""  # more sbatch options, as on a command line
    job_gpus: int = 0  # GPUs each job of a Slurm unit asks for (--gres=gpu:N)
    slurm_lease_s: int = 600  # how long a batch job's attempt is held without a heartbeat (its unit restarting)

    @property
    def pool_names(self) -> tuple[str, ...]:
        return parse_pools(self.pools, "NIAS_POOLS")

    @property
    def unit_pool_names(self) -> tuple[str, ...]:
        return parse_pools(self.unit_pools, "NIAS_UNIT_POOLS")

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def unit_work_dir(self) -> Path:
        if self.work_dir is None and self.executor == "slurm" and self.slurm_work_dir is not None:
            return self.slurm_work_dir / self.unit_name  # the compute nodes must see the staged project
        return self.work_dir or self.data_dir / "work" / self.unit_name

    @property
    def dataset_cache_folder(self) -> Path:
        return self.dataset_cache_dir or self.unit_work_dir / "datasets"

    @property
    def environments_dir(self) -> Path:
        if self.env_dir is None and self.executor == "slurm" and self.slurm_work_dir is not None:
            return self.slurm_work_dir / "envs"  # built on the login node, run on the compute nodes
        return self.env_dir or self.data_dir / "envs"

    @property
    def unit_capacity(self) -> int:
        """Jobs this unit runs at once: one on its own host, up to NIAS_SLURM_MAX_JOBS on a cluster."""
        return max(self.slurm_max_jobs, 1) if self.executor == "slurm" else 1

    def slurm_partition_for(self, pool: str) -> str:
        """The partition a pool's jobs go to: `NIAS_SLURM_PARTITION=batch` or `cluster=batch,gpu=gpu`."""
        raw = self.slurm_partition.strip()
        if "=" not in raw:
            return raw
        pairs = dict(item.strip().split("=", 1) for item in raw.split(",") if "=" in item)
        return pairs.get(pool, "").strip()

    @property
    def commands_folder(self) -> Path:
        return self.commands_dir or self.data_dir / "commands"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.private_dir / 'nias.db').resolve()}"

    @property
    def private_dir(self) -> Path:
        """The backend's own folder (the SQLite store, the session key): no job may enter."""
        return self.data_dir / "private"

    @property
    def uv(self) -> str:
        found = self.uv_path or shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
        return found

    @property
    def job_uids(self) -> range:
        """NIAS_JOB_UID_RANGE as a range of uids; a malformed one fails naming the variable."""
        low, dash, high = self.job_uid_range.partition("-")
        if not (dash and low.strip().isdigit() and high.strip().isdigit()):
            raise ConfigurationError(
                f"NIAS_JOB_UID_RANGE must be LOW-HIGH, e.g. 61000-61999, not {self.job_uid_range!r}")
        first, last = int(low), int(high)
        if not 0 < first <= last < 2**32 - 1:
            raise ConfigurationError(f"NIAS_JOB_UID_RANGE must run from 1 up to at most 4294967294, low to high, "
                                     f"not {self.job_uid_range!r}")
        return range(first, last + 1)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * 1024 * 1024

    @property
    def max_result_bytes(self) -> int:
        return self.max_result_mb * 1024 * 1024

    @property
    def max_log_bytes(self) -> int:
        return self.max_log_mb * 1024 * 1024

    def __repr__(self) -> str:  # never print secrets into a log
        hidden = {"internal_token", "secret_key", "admin_password", "admin_token", "amqp_url", "database_url",
                  "git_tokens"}
        shown = ", ".join(f"{f.name}={'***' if f.name in hidden else getattr(self, f.name)!r}"
                          for f in dataclasses.fields(self))
        return f"Settings({shown})"


# Environment variable -> field name. One table, so `.env.example` and this file agree.
ENVIRONMENT = {
    "NIAS_DATA_DIR": "data_dir",
    "DATABASE_URL": "database_url",
    "NIAS_AMQP_URL": "amqp_url",
    "NIAS_AMQP_HEARTBEAT_S": "amqp_heartbeat_s",
    "NIAS_QUEUE_PREFIX": "queue_prefix",
    "NIAS_HOST": "host",
    "NIAS_PORT": "port",
    "NIAS_PRODUCER_URL": "producer_url",
    "NIAS_BACKEND_URL": "backend_url",
    "NIAS_UNIT_URL": "unit_url",
    "NIAS_UNIT_NAME": "unit_name",
    "NIAS_POOLS": "pools",
    "NIAS_UNIT_POOLS": "unit_pools",
    "NIAS_INSTANCE_ID": "instance_id",
    "NIAS_NO_INSTALL": "no_install",
    "NIAS_WORK_DIR": "work_dir",
    "NIAS_ENV_DIR": "env_dir",
    "NIAS_DATASET_CACHE_DIR": "dataset_cache_dir",
    "NIAS_DATASET_CACHE_MB": "dataset_cache_mb",
    "NIAS_JOB_PYTHON": "job_python",
    "NIAS_UV": "uv_path",
    "NIAS_MAX_UPLOAD_MB": "max_upload_mb",
    "NIAS_MAX_FILES": "max_files",
    "NIAS_MAX_UNPACKED_MB": "max_unpacked_mb",
    "NIAS_MAX_RATIO": "max_ratio",
    "NIAS_MAX_RESULT_MB": "max_result_mb",
    "NIAS_MAX_RESULT_FILES": "max_result_files",
    "NIAS_REDISPATCH_S": "redispatch_s",
    "NIAS_REDISPATCH_LIMIT": "redispatch_limit",
    "NIAS_MAX_LOG_MB": "max_log_mb",
    "NIAS_JOB_TIMEOUT_S": "job_timeout_s",
    "NIAS_JOB_RETRIES": "job_retries",
    "NIAS_LEASE_S": "lease_s",
    "NIAS_KILL_GRACE_S": "kill_grace_s",
    "NIAS_STOP_GRACE_S": "stop_grace_s",
    "NIAS_READ_TIMEOUT_S": "read_timeout_s",
    "NIAS_RESULT_DELIVERY_S": "result_delivery_s",
    "NIAS_UPLOAD_TIMEOUT_S": "upload_timeout_s",
    "NIAS_HEADER_TIMEOUT_S": "header_timeout_s",
    "NIAS_MAX_UPLOADS_PER_USER": "max_uploads_per_user",
    "NIAS_MAX_UPLOADS": "max_uploads",
    "NIAS_MAX_STREAMS_PER_USER": "max_streams_per_user",
    "NIAS_MAX_STREAMS": "max_streams",
    "NIAS_SANDBOX": "sandbox",
    "NIAS_JOB_CPUS": "job_cpus",
    "NIAS_JOB_UID": "job_uid",
    "NIAS_JOB_UID_RANGE": "job_uid_range",
    "NIAS_JOB_NETWORK": "job_network",
    "NIAS_BUILD_SDISTS": "build_sdists",
    "NIAS_JOB_MEMORY_MB": "job_memory_mb",
    "NIAS_JOB_CPU_S": "job_cpu_s",
    "NIAS_JOB_PROCESSES": "job_processes",
    "NIAS_JOB_OPEN_FILES": "job_open_files",
    "NIAS_JOB_FILE_MB": "job_file_mb",
    "NIAS_JOB_TMP_MB": "job_tmp_mb",
    "NIAS_INTERNAL_TOKEN": "internal_token",
    "NIAS_SECRET_KEY": "secret_key",
    "NIAS_REGISTRATION": "registration",
    "NIAS_WEBHOOK_ALLOW_NETWORKS": "webhook_allow_networks",
    "NIAS_ADMIN_EMAIL": "admin_email",
    "NIAS_ADMIN_PASSWORD": "admin_password",
    "NIAS_ADMIN_TOKEN": "admin_token",
    "NIAS_COOKIE_SECURE": "cookie_secure",
    "NIAS_SESSION_DAYS": "session_days",
    "NIAS_MAX_PAUSE_S": "max_pause_s",
    "NIAS_MAX_QUEUED_PER_USER": "max_queued_per_user",
    "NIAS_MAX_STORAGE_MB_PER_USER": "max_storage_mb_per_user",
    "NIAS_RETENTION_DAYS": "retention_days",
    "NIAS_MAX_SWEEP_JOBS": "max_sweep_jobs",
    "NIAS_GIT_HOSTS": "git_hosts",
    "NIAS_GIT_HTTP_HOSTS": "git_http_hosts",
    "NIAS_GIT_TOKENS": "git_tokens",
    "NIAS_GIT_TIMEOUT_S": "git_timeout_s",
    "NIAS_ENV_MAX_AGE_DAYS": "env_max_age_days",
    "NIAS_COMMANDS_DIR": "commands_dir",
    "NIAS_LOG_LEVEL": "log_level",
    "NIAS_EXECUTOR": "executor",
    "NIAS_SLURM_MAX_JOBS": "slurm_max_jobs",
    "NIAS_SLURM_WORK_DIR": "slurm_work_dir",
    "NIAS_SLURM_PARTITION": "slurm_partition",
    "NIAS_SLURM_ACCOUNT": "slurm_account",
    "NIAS_SLURM_OPTIONS": "slurm_options",
    "NIAS_JOB_GPUS": "job_gpus",
    "NIAS_SLURM_LEASE_S": "slurm_lease_s",
}


def _convert(name: str, field: dataclasses.Field, raw: str) -> object:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            value: object = int(raw)
        elif kind == "float":
            value = float(raw)
        elif kind.startswith("Path"):
            value = Path(raw) if raw else None
        else:
            value = raw
    except ValueError:
        raise ConfigurationError(f"{name} must be a {kind}, got {raw!r}") from None
    if isinstance(value, (int, float)) and value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {raw!r}")
    return value


def require(settings: Settings, *names: str) -> None:
    """Fail at start-up, naming the variable, when a setting a service cannot run without is empty."""
    reverse = {attr: env for env, attr in ENVIRONMENT.items()}
    missing = [reverse[name] for name in names if not getattr(settings, name)]
    if missing:
        raise ConfigurationError(f"{', '.join(missing)} must be set (see .env.example)")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build the settings from the environment; a malformed variable fails with its name."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, object] = {}
    for name, attr in ENVIRONMENT.items():
        raw = environ.get(name)
        if raw is not None and raw != "":
            values[attr] = _convert(name, fields[attr], raw)
    values.update(overrides)
    settings = Settings(**values)
    if settings.data_dir is None:
        raise ConfigurationError("NIAS_DATA_DIR must name a folder")
    if settings.registration not in ("open", "invite", "closed"):
        raise ConfigurationError(f"NIAS_REGISTRATION must be open, invite or closed, not {settings.registration!r}")
    if settings.session_days <= 0:
        raise ConfigurationError(f"NIAS_SESSION_DAYS must be more than 0, got {settings.session_days!r}")
    if settings.header_timeout_s <= 0:  # 0 would close every connection before its first request
        raise ConfigurationError(f"NIAS_HEADER_TIMEOUT_S must be more than 0, got {settings.header_timeout_s!r}")
    if settings.executor not in ("local", "slurm"):
        raise ConfigurationError(f"NIAS_EXECUTOR must be local or slurm, not {settings.executor!r}")
    if settings.executor == "slurm" and settings.slurm_work_dir is None:
        raise ConfigurationError("NIAS_EXECUTOR=slurm needs NIAS_SLURM_WORK_DIR: a folder the compute nodes see")
    settings.pool_names, settings.unit_pool_names  # noqa: B018 - a malformed list fails at start, naming its variable
    return dataclasses.replace(settings, data_dir=Path(settings.data_dir).resolve())
