"""A fresh, migrated TimescaleDB database for the test session (real PostgreSQL, never a mock)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.db import StoreError, connect, migrate
from ingest.db_roles import drop_service_roles

DEFAULT_TEST_URL = "postgresql://cargotrace:cargotrace@127.0.0.1:5432/cargotrace_test"
_KEEP = {"schema_migrations"}


def recreate_database(url: str) -> None:
    name = str(conninfo_to_dict(url)["dbname"])
    try:
        with connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Roles are global to the server: an earlier run's service roles (their passwords were in
        # that run's state directory, now gone) would make `cargotrace up`/`ingest` refuse to start.
        drop_service_roles(url)
    except StoreError as exc:
        pytest.fail(f"integration tests need PostgreSQL with TimescaleDB (run `make setup`): {exc}")


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("CARGOTRACE_TEST_DATABASE_URL", DEFAULT_TEST_URL)
    recreate_database(url)
    migrate(url)
    return url


def truncate_all(conn: psycopg.Connection) -> None:
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") if r[0] not in _KEEP]
    if tables:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in tables)))


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to an emptied test database."""
    with connect(database_url, autocommit=True) as conn:
        truncate_all(conn)
        yield conn
