"""Generic create-or-replace, get and list for master-data tables keyed by a code.

Table and column names come only from the ``Table`` constants of the store modules, never from
a request, so composing them into SQL is safe.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.errors import ConflictError, InvalidInputError, InvalidReferenceError

Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    columns: tuple[str, ...]  # replaced by PUT (the key and insert-only columns excluded)
    json_columns: frozenset[str] = field(default_factory=frozenset)


@contextmanager
def integrity_errors_translated(what: str) -> Iterator[None]:
    """Constraint violations that slipped past the explicit checks (a concurrent write) → 409/422."""
    try:
        yield
    except errors.ForeignKeyViolation as exc:
        raise InvalidReferenceError(f"{what}: {_detail(exc)}") from None
    except errors.UniqueViolation as exc:
        raise ConflictError(f"{what}: {_detail(exc)}") from None
    except (errors.CheckViolation, errors.NotNullViolation) as exc:
        raise InvalidInputError(f"{what}: {_detail(exc)}") from None


def _detail(exc: psycopg.Error) -> str:
    diag = exc.diag
    return str(diag.message_detail or diag.message_primary or exc).strip()


def _adapt(table: Table, values: Mapping[str, object]) -> dict[str, object]:
    return {k: Jsonb(v) if k in table.json_columns and v is not None else v for k, v in values.items()}


def upsert(conn: psycopg.Connection, table: Table, key: str, values: Mapping[str, object],
           insert_only: Mapping[str, object] | None = None) -> tuple[Row, bool]:
    """Create or replace one row; returns it and whether it was created.

    ``updated_at`` moves only when a value changed, so PUTting the same body twice gives the same
    object. ``insert_only`` columns (e.g. a generated token) are written on creation, then kept.
    """
    if set(values) != set(table.columns):
        raise ValueError(f"{table.name}: values for {sorted(values)}, expected {sorted(table.columns)}")
    extra = dict(insert_only or {})
    names = [table.key, *table.columns, *extra]
    params = {table.key: key, **_adapt(table, values), **extra}
    target = sql.Identifier(table.name)
    cols = [sql.Identifier(c) for c in table.columns]
    query = sql.SQL(
        "INSERT INTO {t} AS t ({names}) VALUES ({params}) ON CONFLICT ({key}) DO UPDATE SET {sets}, "
        "updated_at = CASE WHEN ({old}) IS DISTINCT FROM ({new}) THEN now() ELSE t.updated_at END "
        "RETURNING t.*, (xmax = 0) AS created"
    ).format(
        t=target,
        names=sql.SQL(", ").join(sql.Identifier(n) for n in names),
        params=sql.SQL(", ").join(sql.Placeholder(n) for n in names),
        key=sql.Identifier(table.key),
        sets=sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=c) for c in cols),
        old=sql.SQL(", ").join(sql.SQL("t.{c}").format(c=c) for c in cols),
        new=sql.SQL(", ").join(sql.SQL("excluded.{c}").format(c=c) for c in cols),
    )
    with integrity_errors_translated(f"{table.name} {key!r}"), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    assert row is not None  # an upsert always returns its row
    created = bool(row.pop("created"))
    return row, created


def fetch(conn: psycopg.Connection, table: Table, key: str) -> Row | None:
    query = sql.SQL("SELECT * FROM {t} WHERE {k} = %s").format(t=sql.Identifier(table.name),
                                                                k=sql.Identifier(table.key))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (key,)).fetchone()


def fetch_page(conn: psycopg.Connection, table: Table, after: str | None, limit: int) -> list[Row]:
    """Up to ``limit`` rows in key order, after the key ``after``."""
    query = sql.SQL("SELECT * FROM {t} WHERE %(after)s::text IS NULL OR {k} > %(after)s "
                    "ORDER BY {k} LIMIT %(limit)s").format(t=sql.Identifier(table.name),
                                                           k=sql.Identifier(table.key))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"after": after, "limit": limit}).fetchall()
