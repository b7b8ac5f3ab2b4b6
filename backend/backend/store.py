"""The job store: SQLite by default, PostgreSQL through DATABASE_URL (SQLAlchemy Core).

Only the backend opens it. Rows are read here; state is written only through
`backend.jobs.apply_transition`, which uses `update_job_if` for its compare-and-set.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from nias.errors import JobNotFound, ServiceUnavailable

logger = logging.getLogger(__name__)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False, index=True),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("exit_code", Integer),
    Column("error", Text),
    Column("unit", String(100)),
    Column("result_size", BigInteger),
    Column("log_size", BigInteger),  # bytes of the kept attempt's log, counted in the owner's storage
    Column("upload", String(300), nullable=False),
    Column("upload_sha256", String(64), nullable=False),
    Column("upload_size", BigInteger, nullable=False),
    Column("timeout_s", Integer),
    Column("attempt", Integer, nullable=False, default=0),
    Column("dispatch", Integer, nullable=False, default=1),
    Column("published", Integer, nullable=False, default=0),
    Column("lease_until", Float),
    Column("env_seconds", Float),
    Column("env_cached", Boolean),
    Column("env_built_at", Float),  # when the environment the job ran in was built
    Column("fresh_env", Integer, nullable=False, default=0),  # 1: the job asked for the newest versions
    Column("run_seconds", Float),
    Column("paused_at", Float),
    Column("paused_seconds", Float, nullable=False, default=0.0),
    Column("progress", Float),
    Column("progress_message", String(200)),
    Column("progress_active_s", Float),
    Column("rerun_of", String(32)),
    Column("queue_priority", Integer, nullable=False, default=0),  # priority of the current dispatch; 10 = run next
    Column("queued_at", Float),  # when the current dispatch was queued
    Column("owner_id", String(32), index=True),
    Column("expired_at", Float),  # when retention removed its files
    Column("limits", JSON(none_as_null=True)),  # the lower resource limits the job asked for, e.g. {"memory_mb": 64}
    Column("result_due", Float),
    Column("pool", String(32), nullable=False, default="default"),  # whose units run it (NIAS_POOLS)
    Column("redispatched", Integer),  # how often its message was found lost and published again  # cancelled while running: until when the attempt's kept result is awaited
    Column("params", JSON(none_as_null=True)),  # what code.py reads from params.json
    Column("command", String(100)),  # the command the job was made from, if any
    Column("command_digest", String(64)),  # the digest of that command's files when the job was made
    Column("source", JSON(none_as_null=True)),  # where the upload came from: {"git": {url, ref, path, commit}}
    Column("sweep_id", String(32), index=True),
    Column("upload_shared", Integer),  # 1: its upload is a link to another job's of the sweep, counted there
    Column("execution", JSON(none_as_null=True)),  # where the attempt runs: executor, Slurm job id, state, reason, node
    Column("ran_with", JSON(none_as_null=True)),  # nias.ran_with.RanWith.to_json(): Python, packages, unit, host
    Column("pins", JSON(none_as_null=True)),  # "re-run exactly": the name==version its environment is built from
    Column("note", String(200)),  # the owner's short note on the job
    Column("timeline", JSON(none_as_null=True)),  # nias.timeline: when the job passed each hop
    Column("published_at", Float),  # when the producer last confirmed its message (the `published` hop)
    Column("datasets", JSON(none_as_null=True)),  # the data sets it names: [{name, owner, sha256, size}], resolved at submit
)

sweeps = Table(
    "sweeps",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_id", String(32), index=True),
    Column("created_at", Float, nullable=False),
    Column("command", String(100)),
    Column("params", JSON(none_as_null=True)),  # the fixed parameters every job shares
    Column("sweep", JSON(none_as_null=True)),  # the grid or list as submitted
    Column("job_count", Integer, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(300), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("disabled_at", Float),  # set: the account may not sign in, its sessions and tokens answer 401
    Column("webhook_url", String(500)),  # called with a job's JSON when one of the user's jobs ends
    Column("webhook_secret", String(64)),  # signs those calls (HMAC-SHA256)
)

tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("expires_at", Float),  # None: until revoked
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the cookie's random session id
    Column("user_id", String(32), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

invitations = Table(
    "invitations",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("created_by", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("used_by", String(32)),
)

transitions = Table(
    "job_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("unit", String(100)),
    Column("reason", Text),
)

units = Table(
    "units",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("job_id", String(32)),
    Column("last_seen", Float, nullable=False),
    Column("sandbox", String(16)),  # how the unit runs jobs: "bwrap", or "none" (no mount namespace)
    Column("pools", JSON(none_as_null=True)),  # the pools it serves
    Column("host", String(255)),
    Column("cpus", Integer),
    Column("memory_mb", BigInteger),
    Column("gpus", JSON(none_as_null=True)),  # names, from nvidia-smi where there is one
    Column("python", String(64)),  # the version its jobs run on
    Column("executor", String(16)),  # "local", or "slurm": it submits its jobs to a cluster
    Column("pause_refusal", Text),  # why it cannot pause its jobs, if it cannot
    Column("draining", Integer),  # 1: an admin drained it; it finishes its job and takes no more
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("filename", String(200), nullable=False),  # as uploaded: a single file appears under this name
    Column("is_zip", Integer, nullable=False, default=0),  # 1: unpacked where a job sees it
    Column("created_at", Float, nullable=False),
)

dataset_shares = Table(
    "dataset_shares",
    metadata,
    Column("dataset_id", String(32), primary_key=True),
    Column("user_id", String(32), primary_key=True),
)


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Store:
    """A handle on the job store; thread-safe (one connection per operation)."""

    def __init__(self, url: str):
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.url = url
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _tune_sqlite)

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        self.add_missing_columns()

    def add_missing_columns(self) -> None:
        """A store made by an older NIAS lacks the columns added since: add them to its tables in place.

        `create_all` makes missing tables only. A new column must be nullable or have a plain default.
        """
        for table in metadata.sorted_tables:
            present = self._column_names(table)
            for column in table.columns:
                if column.name not in present:
                    self._add_column(table, column)

    def _column_names(self, table: Table) -> set[str]:
        return {column["name"] for column in inspect(self.engine).get_columns(table.name)}

    def _add_column(self, table: Table, column: Column) -> None:
        dialect = self.engine.dialect
        quote = dialect.identifier_preparer.quote
        ddl = f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column.type.compile(dialect)}"
        if not column.nullable:
            if column.default is None or not column.default.is_scalar:
                raise ServiceUnavailable(f"The job store lacks the column {table.name}.{column.name}, which "
                                         "cannot be added in place; migrate it by hand.")
            default = literal(column.default.arg).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            ddl += f" DEFAULT {default} NOT NULL"
        try:
            with self.engine.begin() as conn:
                conn.execute(text(ddl))
        except DBAPIError as exc:
            if column.name not in self._column_names(table):  # not merely another process adding it first
                raise ServiceUnavailable(f"The job store's column {table.name}.{column.name} could not be "
                                         f"added: {exc.orig}") from None
            return
        logger.info("Job store: added the column %s.%s", table.name, column.name)

    def ping(self) -> bool:
        """The store answers a read of the jobs table (a bare `SELECT 1` never touches SQLite's file)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(jobs.c.id).limit(1))
            return True
        except SQLAlchemyError:
            return False

    def insert_job(self, **values: Any) -> dict:
        values.setdefault("created_at", time.time())
        with self.engine.begin() as conn:
            conn.execute(insert(jobs).values(**values))
            conn.execute(
                insert(transitions).values(
                    job_id=values["id"], from_state=None, to_state=values["state"], at=values["created_at"]
                )
            )
        return self.get_job(values["id"])

    def insert_sweep(self, sweep: dict, job_rows: list[dict]) -> None:
        """A sweep and all its jobs, in one transaction: all of them are queued, or none."""
        with self.engine.begin() as conn:
            conn.execute(insert(sweeps).values(**sweep))
            for values in job_rows:
                conn.execute(insert(jobs).values(**values))
                conn.execute(insert(transitions).values(job_id=values["id"], from_state=None,
                                                        to_state=values["state"], at=values["created_at"]))

    def get_sweep(self, sweep_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sweeps).where(sweeps.c.id == sweep_id)).mappings().first()
        return dict(row) if row else None

    def list_sweeps(self, owner: str | None, limit: int = 20, offset: int = 0) -> tuple[list[dict], int]:
        conditions = [sweeps.c.owner_id == owner] if owner else []
        query = (select(sweeps).where(*conditions).order_by(sweeps.c.created_at.desc(), sweeps.c.id.desc())
                 .limit(limit).offset(offset))
        with self.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
            total = conn.execute(select(func.count()).select_from(sweeps).where(*conditions)).scalar_one()
        return rows, total

    def sweep_jobs(self, sweep_id: str) -> list[dict]:
        query = select(jobs).where(jobs.c.sweep_id == sweep_id).order_by(jobs.c.created_at, jobs.c.id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def get_job(self, job_id: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(f"No job has the id {job_id!r}.")
        return dict(row)

    SORTS = {"submitted": "created_at", "name": "name", "state": "state", "priority": "priority", "unit": "unit",
             "duration": "run_seconds"}

    def list_jobs(self, *, state: str | None = None, search: str | None = None, owner: str | None = None,
                  limit: int = 20, offset: int = 0, sweep: str | None = None, since: float | None = None,
                  until: float | None = None, sort: str = "submitted", descending: bool = True) -> tuple[list[dict], int]:
        """`sweep`: "none" leaves out the jobs of sweeps, a sweep's id keeps only its jobs; `since` and
        `until` bound the submission time; `sort` is a key of SORTS, newest first by default."""
        conditions = [jobs.c.owner_id == owner] if owner else []
        if since is not None:
            conditions.append(jobs.c.created_at >= since)
        if until is not None:
            conditions.append(jobs.c.created_at < until)
        if sweep:
            conditions.append(jobs.c.sweep_id.is_(None) if sweep == "none" else jobs.c.sweep_id == sweep)
        if state:
            conditions.append(jobs.c.state == state)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(func.lower(jobs.c.name).like(f"%{escaped.lower()}%", escape="\\"))
        query = select(jobs).where(*conditions)
        count = select(func.count()).select_from(jobs).where(*conditions)
        column = jobs.c[self.SORTS[sort]]
        order = [column.desc(), jobs.c.created_at.desc()] if descending else [column.asc(), jobs.c.created_at.asc()]
        query = query.order_by(*order, jobs.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
            total = conn.execute(count).scalar_one()
        return rows, total

    def delete_job(self, job_id: str) -> bool:
        """Remove a job's record and its history (its files are the caller's to remove)."""
        with self.engine.begin() as conn:
            conn.execute(transitions.delete().where(transitions.c.job_id == job_id))
            return conn.execute(jobs.delete().where(jobs.c.id == job_id)).rowcount == 1

    def queued_by_pool(self, owner: str | None = None) -> dict[str, int]:
        query = select(jobs.c.pool, func.count()).where(jobs.c.state == "queued").group_by(jobs.c.pool)
        if owner is not None:
            query = query.where(jobs.c.owner_id == owner)
        with self.engine.connect() as conn:
            return {pool: count for pool, count in conn.execute(query)}

    def count_by_state(self, owner: str | None = None) -> dict[str, int]:
        query = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        if owner:
            query = query.where(jobs.c.owner_id == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {state: n for state, n in rows}

    def storage_used(self, owner: str) -> int:
        """Bytes a user's kept uploads, results, logs and data sets take on the shared volume."""
        upload = case((jobs.c.upload_shared == 1, 0), else_=jobs.c.upload_size)  # a sweep's upload counts once
        used = func.coalesce(func.sum(upload + func.coalesce(jobs.c.result_size, 0)
                                      + func.coalesce(jobs.c.log_size, 0)), 0)
        with self.engine.connect() as conn:
            jobs_bytes = int(conn.execute(select(used).where(jobs.c.owner_id == owner, jobs.c.expired_at.is_(None)))
                             .scalar_one())
        return jobs_bytes + self.dataset_bytes(owner)

    def storage_by_kind(self) -> dict[str, int]:
        """Bytes of every kept upload, result and log (a sweep's shared upload counted once)."""
        upload = case((jobs.c.upload_shared == 1, 0), else_=jobs.c.upload_size)
        sums = [func.coalesce(func.sum(column), 0) for column in (upload, jobs.c.result_size, jobs.c.log_size)]
        with self.engine.connect() as conn:
            uploads, results, logs = conn.execute(select(*sums).where(jobs.c.expired_at.is_(None))).one()
        return {"uploads": int(uploads), "results": int(results), "logs": int(logs)}

    def jobs_to_expire(self, finished_before: float, limit: int = 200) -> list[dict]:
        query = (select(jobs).where(jobs.c.finished_at < finished_before, jobs.c.expired_at.is_(None))
                 .order_by(jobs.c.finished_at).limit(limit))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    # -- data sets ---------------------------------------------------------------------
    def insert_dataset(self, **values: Any) -> dict:
        with self.engine.begin() as conn:
            conn.execute(insert(datasets).values(**values))
        return self.get_dataset(values["owner_id"], values["name"])

    def get_dataset(self, owner_id: str, name: str) -> dict | None:
        query = select(datasets).where(datasets.c.owner_id == owner_id, datasets.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def visible_datasets(self, user_id: str) -> list[dict]:
        """A user's own data sets and those shared with them, each with its owner's email."""
        shared = select(dataset_shares.c.dataset_id).where(dataset_shares.c.user_id == user_id)
        query = (select(datasets, users.c.email.label("owner_email")).join(users, users.c.id == datasets.c.owner_id)
                 .where(or_(datasets.c.owner_id == user_id, datasets.c.id.in_(shared)))
                 .order_by(datasets.c.created_at, datasets.c.id))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def dataset_shared_with(self, dataset_id: str) -> list[str]:
        query = (select(users.c.email).join(dataset_shares, dataset_shares.c.user_id == users.c.id)
                 .where(dataset_shares.c.dataset_id == dataset_id).order_by(users.c.email))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def share_dataset(self, dataset_id: str, user_id: str) -> None:
        with self.engine.begin() as conn:
            present = conn.execute(select(dataset_shares.c.user_id).where(
                dataset_shares.c.dataset_id == dataset_id, dataset_shares.c.user_id == user_id)).first()
            if present is None:
                conn.execute(insert(dataset_shares).values(dataset_id=dataset_id, user_id=user_id))

    def delete_dataset(self, dataset_id: str) -> int:
        """Remove a data set's record and shares; returns how many data sets still refer to its digest."""
        with self.engine.begin() as conn:
            sha256 = conn.execute(select(datasets.c.sha256).where(datasets.c.id == dataset_id)).scalar_one()
            conn.execute(delete(dataset_shares).where(dataset_shares.c.dataset_id == dataset_id))
            conn.execute(delete(datasets).where(datasets.c.id == dataset_id))
            return conn.execute(select(func.count()).select_from(datasets)
                                .where(datasets.c.sha256 == sha256)).scalar_one()

    def dataset_bytes(self, owner: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(datasets.c.size), 0))
                                    .where(datasets.c.owner_id == owner)).scalar_one())

    # -- accounts ----------------------------------------------------------------------
    def insert_user(self, **values: Any) -> dict:
        with self.engine.begin() as conn:
            conn.execute(insert(users).values(**values))
        return self.get_user(values["id"])

    def get_user(self, user_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
        return dict(row) if row else None

    def find_user(self, email: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.email == email)).mappings().first()
        return dict(row) if row else None

    def list_users(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(select(users).order_by(users.c.created_at)).mappings()]

    def count_admins(self) -> int:
        """Admins who can sign in."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(users).where(
                users.c.role == "admin", users.c.disabled_at.is_(None))).scalar_one()

    def update_user(self, user_id: str, **values: Any) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(users).where(users.c.id == user_id).values(**values)).rowcount == 1

    def insert_token(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(tokens).values(**values))

    def user_for_token(self, token_hash: str) -> dict | None:
        """The enabled user of a token that has not expired."""
        now = time.time()
        query = select(users).join(tokens, tokens.c.user_id == users.c.id).where(
            tokens.c.token_hash == token_hash, users.c.disabled_at.is_(None),
            or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now))
        with self.engine.begin() as conn:
            row = conn.execute(query).mappings().first()
            if row is not None:
                conn.execute(update(tokens).where(tokens.c.token_hash == token_hash).values(last_used_at=time.time()))
        return dict(row) if row else None

    def list_tokens(self, user_id: str) -> list[dict]:
        query = select(tokens.c.id, tokens.c.name, tokens.c.created_at, tokens.c.last_used_at, tokens.c.expires_at).where(
            tokens.c.user_id == user_id).order_by(tokens.c.created_at)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def delete_token(self, user_id: str, token_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(tokens).where(tokens.c.id == token_id, tokens.c.user_id == user_id)).rowcount == 1

    def insert_session(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(sessions).values(**values))

    def user_for_session(self, id_hash: str, now: float, touch_after_s: float = 60.0) -> dict | None:
        """The user of a session that has not expired; its `last_seen` is moved on now and then."""
        query = (select(users).join(sessions, sessions.c.user_id == users.c.id)
                 .where(sessions.c.id_hash == id_hash, sessions.c.expires_at > now, users.c.disabled_at.is_(None)))
        with self.engine.begin() as conn:
            row = conn.execute(query).mappings().first()
            if row is not None:
                conn.execute(update(sessions).where(sessions.c.id_hash == id_hash,
                                                    sessions.c.last_seen < now - touch_after_s)
                             .values(last_seen=now))
        return dict(row) if row else None

    def delete_session(self, id_hash: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash)).rowcount == 1

    def delete_user_sessions(self, user_id: str, keep: str | None = None) -> int:
        """End every session of a user (but `keep`, a session id digest); returns how many ended."""
        conditions = [sessions.c.user_id == user_id]
        if keep:
            conditions.append(sessions.c.id_hash != keep)
        with self.engine.begin() as conn:
            return conn.execute(delete(sessions).where(*conditions)).rowcount

    def delete_expired_sessions(self, now: float) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(sessions).where(sessions.c.expires_at <= now)).rowcount

    def count_sessions(self, now: float) -> dict[str, int]:
        """Open sessions per user id."""
        query = (select(sessions.c.user_id, func.count()).where(sessions.c.expires_at > now)
                 .group_by(sessions.c.user_id))
        with self.engine.connect() as conn:
            return {user_id: n for user_id, n in conn.execute(query).all()}

    def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(users).where(users.c.id == user_id)
                                .values(password_hash=password_hash)).rowcount == 1

    def insert_invitation(self, code_hash: str, created_by: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(invitations).values(code_hash=code_hash, created_by=created_by, created_at=time.time()))

    def use_invitation(self, code_hash: str, user_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(invitations).where(invitations.c.code_hash == code_hash,
                                                          invitations.c.used_by.is_(None))
                                .values(used_by=user_id)).rowcount == 1

    def history(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(transitions).where(transitions.c.job_id == job_id).order_by(transitions.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    def jobs_to_publish(self, limit: int = 100) -> list[dict]:
        query = (
            select(jobs)
            .where(jobs.c.state == "queued", jobs.c.published != jobs.c.dispatch)
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def published_waiting_since(self, before: float, limit: int = 100) -> list[dict]:
        """Queued jobs whose current message was published and has waited since before `before`."""
        query = (select(jobs).where(jobs.c.state == "queued", jobs.c.published == jobs.c.dispatch,
                                    jobs.c.queued_at < before).order_by(jobs.c.queued_at).limit(limit))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def mark_published(self, job_id: str, dispatch: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(published=dispatch, published_at=time.time()))

    def expired_leases(self, now: float) -> list[dict]:
        query = select(jobs).where(jobs.c.state.in_(("running", "paused")), jobs.c.lease_until < now)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def overdue_results(self, now: float) -> list[dict]:
        """Cancelled jobs still awaiting their attempt's kept result past its lease."""
        query = select(jobs).where(jobs.c.result_due.is_not(None), jobs.c.result_due < now)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def paused_since_before(self, moment: float) -> list[dict]:
        query = select(jobs).where(jobs.c.state == "paused", jobs.c.paused_at < moment)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def extend_leases(self, until: float) -> None:
        """Give every running job a fresh lease (used at start-up, before heartbeats catch up)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs).where(jobs.c.state.in_(("running", "paused"))).values(lease_until=until)
            )

    def renew_lease(self, job_id: str, attempt: int, until: float) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.attempt == attempt, jobs.c.state.in_(("running", "paused")))
                .values(lease_until=until)
            )
        return result.rowcount == 1

    def record_unit(self, name: str, state: str, job_id: str | None, seen: float, sandbox: str | None = None,
                    **about: Any) -> None:
        """A unit's presence; `about` holds what it says of itself (pools, host, cpus, memory_mb, gpus, python)."""
        values = {"state": state, "job_id": job_id, "last_seen": seen, "sandbox": sandbox, **about}
        with self.engine.begin() as conn:
            changed = conn.execute(update(units).where(units.c.name == name).values(**values)).rowcount
            if not changed:
                conn.execute(insert(units).values(name=name, **values))

    def set_unit_draining(self, name: str, draining: bool) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(units).where(units.c.name == name)
                                .values(draining=1 if draining else None)).rowcount == 1

    def get_unit(self, name: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(units).where(units.c.name == name)).mappings().first()
        return dict(row) if row else None

    def list_units(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(select(units).order_by(units.c.name)).mappings()]

    def update_job_fields(self, job_id: str, guard: dict[str, Any], values: dict[str, Any]) -> bool:
        """Update non-state fields (progress, result details, queue order) if `guard` still holds."""
        if "state" in values:
            raise ValueError("state changes go through backend.jobs.apply_transition")
        conditions = [jobs.c.id == job_id] + [jobs.c[name] == value for name, value in guard.items()]
        with self.engine.begin() as conn:
            return conn.execute(update(jobs).where(*conditions).values(**values)).rowcount == 1

    def queue_position(self, job: dict) -> int:
        """1 for the job that runs next; counts queued jobs ahead by priority, then by queueing time."""
        ahead = or_(
            jobs.c.queue_priority > job["queue_priority"],
            and_(jobs.c.queue_priority == job["queue_priority"], jobs.c.queued_at < job["queued_at"]),
        )
        query = select(func.count()).select_from(jobs).where(jobs.c.state == "queued", jobs.c.pool == job["pool"],
                                                             jobs.c.id != job["id"], ahead)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one() + 1

    def update_job_if(self, job_id: str, guard: dict[str, Any], values: dict[str, Any], record: dict) -> bool:
        """Compare-and-set: update the job only if every `guard` column still holds; log the transition."""
        conditions = [jobs.c.id == job_id] + [jobs.c[name] == value for name, value in guard.items()]
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(*conditions).values(**values))
            if result.rowcount != 1:
                return False
            conn.execute(insert(transitions).values(job_id=job_id, **record))
        return True


def open_store(url: str) -> Store:
    store = Store(url)
    try:
        store.create_schema()
    except OperationalError as exc:
        raise ServiceUnavailable(f"The job store at {store.engine.url!r} cannot be opened: {exc.orig}") from None
    database = store.engine.url.database
    if store.engine.url.get_backend_name() == "sqlite" and database and os.path.exists(database):
        os.chmod(database, 0o600)  # the store is the backend's alone
    return store
