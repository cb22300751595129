"""Stock balances and the movement ledger, read for the ERP endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from api.pagination import Key
from api.store.filters import Where
from api.store.records import Row


@dataclass(frozen=True)
class StockFilter:
    sku: str | None = None
    location: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class MovementFilter:
    sku: str | None = None
    location: str | None = None  # matches either side of the movement
    ref: str | None = None
    since: datetime | None = None  # event time, inclusive
    until: datetime | None = None  # event time, exclusive


def list_stock(conn: psycopg.Connection, where_: StockFilter, after: Key | None, limit: int) -> list[Row]:
    """Non-zero balances in (sku, location, lot) order; lot '' (untracked) comes back as None."""
    w = Where()
    w.add("b.qty <> 0")
    w.when(where_.sku, "b.sku = %(sku)s", "sku")
    w.when(where_.location, "b.location = %(location)s", "location")
    w.when(where_.site, "l.site = %(site)s", "site")
    if after is not None:
        w.add("(b.sku, b.location, b.lot) > (%(a_sku)s, %(a_location)s, %(a_lot)s)",
              a_sku=after[0], a_location=after[1], a_lot=after[2])
    # reserved: stock held for released orders (CONTRACT 3.2); available never goes below zero.
    query = ("SELECT b.sku, b.location, b.lot AS lot_key, nullif(b.lot, '') AS lot, b.qty, b.expiry, "
             "coalesce(r.reserved, 0) AS reserved, greatest(b.qty - coalesce(r.reserved, 0), 0) AS available "
             "FROM balances b LEFT JOIN locations l ON l.code = b.location "
             "LEFT JOIN LATERAL (SELECT sum(qty) AS reserved FROM reservations x WHERE x.sku = b.sku "
             "AND x.location = b.location AND x.lot = b.lot) r ON true "
             f"{w.sql()} ORDER BY b.sku, b.location, b.lot LIMIT %(limit)s")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()


def list_movements(conn: psycopg.Connection, where_: MovementFilter, after: Key | None, limit: int) -> list[Row]:
    """The ledger newest first (event time, then id): a stable order for keyset pages."""
    w = Where()
    w.when(where_.sku, "sku = %(sku)s", "sku")
    w.when(where_.location, "(from_location = %(location)s OR to_location = %(location)s)", "location")
    w.when(where_.ref, "ref = %(ref)s", "ref")
    w.when(where_.since, "ts >= %(since)s", "since")
    w.when(where_.until, "ts < %(until)s", "until")
    if after is not None:
        w.add("(ts, id) < (%(a_ts)s, %(a_id)s)", a_ts=after[0], a_id=after[1])
    query = f"SELECT * FROM movements {w.sql()} ORDER BY ts DESC, id DESC LIMIT %(limit)s"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()
