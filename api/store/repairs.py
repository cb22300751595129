"""Repair orders: warranty from the serial's delivery, parts consumed through the ledger seam."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.errors import InvalidReferenceError
from api.store.records import Row, integrity_errors_translated
from api.store.service_ledger import post
from core.repairs import StockAt, check_repair_transition, plan_parts, warranty


def delivered_at(conn: psycopg.Connection, sku: str, serial: str) -> datetime | None:
    """Event time of the serial's latest delivery to a customer (not reversed)."""
    row = conn.execute(
        "SELECT max(m.ts) FROM movements m JOIN locations l ON l.code = m.to_location AND l.type = 'customer' "
        "WHERE m.sku = %s AND m.serial = %s AND m.reverses IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)", (sku, serial)).fetchone()
    return None if row is None else row[0]


def create_repair(conn: psycopg.Connection, body: Any, by: str) -> Row:
    with conn.transaction():
        ticket = conn.execute("SELECT site FROM tickets WHERE id = %s", (body.ticket,)).fetchone()
        if ticket is None:
            raise InvalidReferenceError(f"ticket: ticket {body.ticket} does not exist")
        item = conn.execute("SELECT warranty_months FROM items WHERE sku = %s", (body.sku,)).fetchone()
        if item is None:
            raise InvalidReferenceError(f"sku: item {body.sku!r} does not exist")
        site = body.site or ticket[0]
        if site is None:
            raise InvalidReferenceError("site: the ticket has no site; name the repair's site")
        delivered = delivered_at(conn, body.sku, body.serial)
        cover = warranty(delivered, item[0], datetime.now(UTC).date())
        with integrity_errors_translated("repair"), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "INSERT INTO repairs (ticket_id, sku, serial, fault, site, delivered_at, warranty_until, covered, "
                "created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (body.ticket, body.sku, body.serial, body.fault, site, delivered, cover.until, cover.covered, by),
            ).fetchone()
    assert row is not None
    out = get_repair(conn, row["id"])
    assert out is not None
    return out


def get_repair(conn: psycopg.Connection, repair_id: int) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM repairs WHERE id = %s", (repair_id,)).fetchone()
        if row is None:
            return None
        row["warranty"] = {"until": row["warranty_until"], "covered": row["covered"]}
        row["parts"] = [{"movement_id": m["id"], "ts": m["ts"].isoformat(), "sku": m["sku"], "qty": float(m["qty"]),
                         "lot": m["lot"], "from_location": m["from_location"], "to_location": m["to_location"]}
                        for m in cur.execute("SELECT * FROM movements WHERE ref = %s ORDER BY id",
                                             (f"REPAIR-{repair_id}",)).fetchall()]
    return row


def set_status(conn: psycopg.Connection, repair_id: int, status: str) -> Row | None:
    with conn.transaction():
        row = conn.execute("SELECT status FROM repairs WHERE id = %s FOR UPDATE", (repair_id,)).fetchone()
        if row is None:
            return None
        if row[0] != status:
            check_repair_transition(repair_id, row[0], status)
            conn.execute("UPDATE repairs SET status = %s, updated_at = now() WHERE id = %s", (status, repair_id))
    return get_repair(conn, repair_id)


def consume_part(conn: psycopg.Connection, repair_id: int, sku: str, qty: Decimal, lot: str | None,
                 from_location: str | None) -> Row | None:
    with conn.transaction():
        rep = conn.execute("SELECT status, site FROM repairs WHERE id = %s FOR UPDATE", (repair_id,)).fetchone()
        if rep is None:
            return None
        consumed = conn.execute("SELECT code FROM locations WHERE site = %s AND type = 'consumed' ORDER BY code "
                                "LIMIT 1", (rep[1],)).fetchone()
        if consumed is None:
            raise InvalidReferenceError(f"site {rep[1]!r} has no location of type consumed for repair parts")
        rows = conn.execute(
            "SELECT b.location, nullif(b.lot, ''), b.qty FROM balances b JOIN locations l ON l.code = b.location "
            "WHERE b.sku = %s AND l.site = %s AND b.qty > 0 AND "
            "(CASE WHEN %s::text IS NULL THEN l.type = 'internal' ELSE l.code = %s END)",
            (sku, rep[1], from_location, from_location)).fetchall()
        stock = [StockAt(r[0], r[1], Decimal(r[2])) for r in rows]
        postings = plan_parts(repair_id, rep[0], sku, qty, lot, stock, consumed[0], f"REPAIR-{repair_id}",
                              datetime.now(UTC))
        post(conn, postings, f"repair-parts:{repair_id}")
        conn.execute("UPDATE repairs SET updated_at = now() WHERE id = %s", (repair_id,))
    return get_repair(conn, repair_id)
