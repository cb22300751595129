"""Movements for the EPCIS export, in the order they were recorded (what an incremental
consumer polls by), with each item's GTIN and, for reversals, the movement they reverse."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import psycopg

from core.epcis import LedgerEntry

_COLUMNS = ("m.id, m.ts, m.recorded_at, m.sku, i.gtin, m.qty, m.from_location, m.to_location, m.lot, m.serial, "
            "m.expiry, m.biz_step, m.disposition, m.ref, m.source, m.device_id, m.reverses")


def _entry(r: tuple[object, ...]) -> LedgerEntry:
    gtin = r[4].strip() if isinstance(r[4], str) else None
    return LedgerEntry(r[0], r[1], r[2], r[3], gtin, Decimal(r[5]), r[6], r[7], r[8], r[9], r[10], r[11],  # type: ignore[arg-type]
                       r[12], r[13], r[14], r[15], r[16])  # type: ignore[arg-type]


def recorded_since(conn: psycopg.Connection, since: datetime | None, after_id: int | None,
                   limit: int) -> list[LedgerEntry]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM movements m LEFT JOIN items i ON i.sku = m.sku "
        "WHERE (%(since)s::timestamptz IS NULL OR m.recorded_at >= %(since)s) "
        "AND (%(after)s::bigint IS NULL OR m.id > %(after)s) ORDER BY m.id LIMIT %(limit)s",
        {"since": since, "after": after_id, "limit": limit}).fetchall()
    return [_entry(r) for r in rows]


def by_ids(conn: psycopg.Connection, ids: list[int]) -> dict[int, LedgerEntry]:
    if not ids:
        return {}
    rows = conn.execute(f"SELECT {_COLUMNS} FROM movements m LEFT JOIN items i ON i.sku = m.sku "
                        "WHERE m.id = ANY(%s)", (ids,)).fetchall()
    return {int(r[0]): _entry(r) for r in rows}


def corrections_of(conn: psycopg.Connection, reversed_ids: list[int]) -> dict[int, list[int]]:
    """For each reversed count adjustment, the adjustment that replaced it (its corrective event)."""
    if not reversed_ids:
        return {}
    rows = conn.execute(
        "SELECT o.id, n.id FROM movements o JOIN movements n ON n.device_id = o.device_id AND n.msg_id = o.msg_id "
        "AND n.line > o.line AND n.source = o.source WHERE o.id = ANY(%s)", (reversed_ids,)).fetchall()
    out: dict[int, list[int]] = {}
    for original, corrective in rows:
        out.setdefault(original, []).append(corrective)
    return out
