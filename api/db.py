"""The API's connection pool and the per-request connection dependency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from runtime.settings import Settings

# How long a request waits for a free connection before it gets 503.
POOL_WAIT_S = 10.0


def _configure(conn: psycopg.Connection) -> None:
    # Times leave the database in UTC, whatever the server's default time zone is.
    conn.execute("SET TIME ZONE 'UTC'")


def open_pool(settings: Settings) -> ConnectionPool:
    """A pool of autocommit connections: every write runs in an explicit ``conn.transaction()``,
    so it is committed before the response is sent, not when the dependency is torn down."""
    pool: ConnectionPool = ConnectionPool(
        settings.api_url,  # the API's least-privilege role when configured, else database_url
        min_size=1,
        max_size=max(1, settings.api_db_pool_max),
        kwargs={"autocommit": True, "connect_timeout": 5},
        configure=_configure,
        check=ConnectionPool.check_connection,  # a server restart must not break the next request
        open=False,
        name="cargotrace-api",
    )
    # Not waiting: the API starts (and /health reports the database down) while it is unreachable.
    pool.open(wait=False)
    return pool


def pool_of(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def db_connection(request: Request) -> Iterator[psycopg.Connection]:
    # PoolTimeout is an OperationalError: the app's handler answers 503 db_unavailable.
    with pool_of(request).connection(timeout=POOL_WAIT_S) as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(db_connection)]
AppSettings = Annotated[Settings, Depends(settings_of)]
