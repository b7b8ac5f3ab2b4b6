"""Fixtures for tests against real services: the job store on SQLite and PostgreSQL, and RabbitMQ.

Nothing here skips: a service that is down makes the tests that need it fail, naming it.
"""
from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator

import pika
import pika.exceptions
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.store import Store
from nias.amqp import Topology
from nias.settings import Settings, load_settings

POSTGRES_URL = os.environ.get("NIAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("NIAS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
INTERNAL_TOKEN = "integration-internal-token"


def _sqlite_store(tmp_path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'nias.db'}")
    store.create_schema()
    yield store
    store.engine.dispose()


def _postgres_store() -> Iterator[Store]:
    """A store in a schema of its own, dropped afterwards, so tests never see each other's rows."""
    schema = f"nias_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is needed for these tests and is unreachable: {exc}")
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    store = Store(url.render_as_string(hide_password=False))
    try:
        store.create_schema()
        yield store
    finally:
        store.engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[Store]:
    """An empty job store, once on SQLite (a file of its own) and once on PostgreSQL."""
    if request.param == "sqlite":
        yield from _sqlite_store(tmp_path)
    else:
        yield from _postgres_store()


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    yield from _sqlite_store(tmp_path)


@pytest.fixture
def make_settings(tmp_path) -> Callable[..., Settings]:
    """Settings with the data dir in the test's tmp folder; keyword arguments override fields."""

    def build(**overrides) -> Settings:
        return load_settings({}, data_dir=tmp_path / "data", **overrides)

    return build


@pytest.fixture
def queue_prefix() -> str:
    return f"nias-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def amqp_settings(make_settings, queue_prefix) -> Settings:
    return make_settings(amqp_url=AMQP_URL, queue_prefix=queue_prefix, amqp_heartbeat_s=10,
                         internal_token=INTERNAL_TOKEN)


@pytest.fixture
def broker(queue_prefix) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel on the real RabbitMQ with this test's queues declared; they are deleted afterwards."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as exc:
        pytest.fail(f"RabbitMQ at {AMQP_URL} is needed for these tests and is unreachable: {exc!r}")
    topology = Topology(queue_prefix)
    channel = connection.channel()
    topology.declare(channel)
    yield channel
    if not channel.is_open:
        channel = connection.channel()
    topology.delete(channel)
    connection.close()


@pytest.fixture
def open_channel(broker) -> Callable[[], pika.adapters.blocking_connection.BlockingChannel]:
    """Fresh channels on the test's connection, for checks that make the broker close a channel."""
    return lambda: broker.connection.channel()
