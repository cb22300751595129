"""Returns (RMA) in the database: create, decide, receive return scans against the lines, inspect
(postings through the ledger seam), refund and replacement records, close. Decisions are core's
(``core.rma``); refusals come back as ``WorkflowError``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.errors import InvalidReferenceError
from api.pagination import MAX_LIMIT
from api.store.records import Row, integrity_errors_translated
from api.store.repairs import delivered_at
from api.store.service_ledger import post
from core.rma import (
    DISPOSITION_TARGET,
    InspectLine,
    Received,
    Refund,
    RmaLine,
    check_close,
    check_decision,
    check_receipt,
    check_refund,
    plan_inspection,
    status_after_receipt,
)

RETURN_STEPS = ("receiving",)
RETURN_DISPOSITIONS = ("returned", "expired")


def _site_location(conn: psycopg.Connection, site: str, type_: str) -> str | None:
    row = conn.execute("SELECT code FROM locations WHERE site = %s AND type = %s ORDER BY code LIMIT 1",
                       (site, type_)).fetchone()
    return None if row is None else str(row[0])


def _returns_location(conn: psycopg.Connection, given: str | None, shipment: str | None, customer: str) -> str:
    if given is not None:
        row = conn.execute("SELECT type FROM locations WHERE code = %s", (given,)).fetchone()
        if row is None or row[0] != "returns":
            raise InvalidReferenceError(f"returns_location: {given!r} is not a location of type returns")
        return given
    site_row = None
    if shipment is not None:
        site_row = conn.execute("SELECT l.site FROM shipments s JOIN locations l ON l.code = s.origin "
                                "WHERE s.ref = %s", (shipment,)).fetchone()
    if site_row is None:
        site_row = conn.execute("SELECT site FROM locations WHERE code = %s", (customer,)).fetchone()
    found = None if site_row is None else _site_location(conn, site_row[0], "returns")
    if found is None:
        raise InvalidReferenceError("returns_location: no returns location at the site; name one")
    return found


def create_rma(conn: psycopg.Connection, body: Any, by: str) -> Row:
    with conn.transaction():
        cust = conn.execute("SELECT type FROM locations WHERE code = %s", (body.customer,)).fetchone()
        if cust is None or cust[0] != "customer":
            raise InvalidReferenceError(f"customer: {body.customer!r} is not a location of type customer")
        if body.shipment is not None and conn.execute("SELECT 1 FROM shipments WHERE ref = %s",
                                                      (body.shipment,)).fetchone() is None:
            raise InvalidReferenceError(f"shipment: shipment {body.shipment!r} does not exist")
        if body.ticket is not None and conn.execute("SELECT 1 FROM tickets WHERE id = %s",
                                                    (body.ticket,)).fetchone() is None:
            raise InvalidReferenceError(f"ticket: ticket {body.ticket} does not exist")
        returns = _returns_location(conn, body.returns_location, body.shipment, body.customer)
        with integrity_errors_translated("rma"), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "INSERT INTO rmas (ref, customer, order_ref, shipment, returns_location, ticket_id, created_by) "
                "VALUES (coalesce(%s, 'RMA-' || nextval('rmas_id_seq')), %s, %s, %s, %s, %s, %s) RETURNING *",
                (body.ref, body.customer, body.order, body.shipment, returns, body.ticket, by)).fetchone()
            assert row is not None
            cur.executemany("INSERT INTO rma_lines (rma_id, n, sku, qty, serial, lot, reason) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [(row["id"], n, ln.sku, ln.qty, ln.serial, ln.lot, ln.reason)
                             for n, ln in enumerate(body.lines)])
        if body.ticket is not None:
            conn.execute("UPDATE tickets SET rma = %s, updated_at = now() WHERE id = %s AND rma IS NULL",
                         (row["ref"], body.ticket))
    return row


def _lock(conn: psycopg.Connection, ref: str) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM rmas WHERE ref = %s FOR UPDATE", (ref,)).fetchone()


def _set(conn: psycopg.Connection, rma_id: int, **values: Any) -> None:
    sets = ", ".join(f"{k} = %({k})s" for k in values)
    conn.execute(f"UPDATE rmas SET {sets}, updated_at = now() WHERE id = %(id)s", {**values, "id": rma_id})


def decide(conn: psycopg.Connection, ref: str, approve: bool, reason: str | None, by: str) -> Row | None:
    with conn.transaction():
        rma = _lock(conn, ref)
        if rma is None:
            return None
        check_decision(ref, rma["status"])
        _set(conn, rma["id"], status="approved" if approve else "rejected", decision_reason=reason, decided_by=by)
    return get_rma(conn, ref)


def _lines(conn: psycopg.Connection, rma_id: int) -> list[RmaLine]:
    rows = conn.execute("SELECT sku, qty, serial, lot, reason FROM rma_lines WHERE rma_id = %s ORDER BY n",
                        (rma_id,)).fetchall()
    return [RmaLine(r[0], Decimal(r[1]), r[2], r[3], r[4]) for r in rows]


def _received(conn: psycopg.Connection, rma_id: int) -> list[Received]:
    rows = conn.execute("SELECT m.sku, m.qty, m.serial, m.lot FROM rma_receipts r JOIN movements m "
                        "ON m.id = r.movement_id WHERE r.rma_id = %s ORDER BY m.ts, m.id", (rma_id,)).fetchall()
    return [Received(r[0], Decimal(r[1]), r[2], r[3]) for r in rows]


def _inspected(conn: psycopg.Connection, rma_id: int) -> list[InspectLine]:
    rows = conn.execute("SELECT m.sku, m.qty, m.serial, m.lot, i.disposition FROM rma_inspections i "
                        "JOIN movements m ON m.id = i.movement_id WHERE i.rma_id = %s", (rma_id,)).fetchall()
    return [InspectLine(r[0], Decimal(r[1]), r[2], r[3], r[4]) for r in rows]


def receive_returns(conn: psycopg.Connection, ref: str | None = None) -> int:
    """Match return movements carrying an RMA's ref (return scans) against its lines, once each;
    an unexpected item raises a ``receipt_exception`` alarm (the goods moved anyway: the scan is
    the truth). A return that arrives while its RMA awaits the decision waits for it (goods often
    reach the dock before the paperwork). Returns how many movements were matched."""
    pending = conn.execute(
        "SELECT m.id, r.ref FROM movements m JOIN rmas r ON r.ref = m.ref "
        "WHERE r.status <> 'requested' AND m.biz_step = ANY(%s) AND m.disposition = ANY(%s) AND m.reverses IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM rma_receipts x WHERE x.movement_id = m.id) "
        "AND (%s::text IS NULL OR r.ref = %s) ORDER BY m.ts, m.id LIMIT 1000",
        (list(RETURN_STEPS), list(RETURN_DISPOSITIONS), ref, ref)).fetchall()
    for movement_id, rma_ref in pending:
        with conn.transaction():
            rma = _lock(conn, rma_ref)
            assert rma is not None
            if conn.execute("SELECT 1 FROM rma_receipts WHERE movement_id = %s", (movement_id,)).fetchone():
                continue  # another process matched it meanwhile
            m = conn.execute("SELECT sku, qty, serial, lot, ts FROM movements WHERE id = %s",
                             (movement_id,)).fetchone()
            assert m is not None
            item = Received(m[0], Decimal(m[1]), m[2], m[3])
            outcome = check_receipt(rma_ref, rma["status"], _lines(conn, rma["id"]), _received(conn, rma["id"]), item)
            alarm_id = None
            if outcome.exception is not None:
                row = conn.execute(
                    "INSERT INTO alarms (type, severity, state, subject, started_at, sku, lot, location, message) "
                    "VALUES ('receipt_exception', 'warning', 'active', %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (type, subject) WHERE state = 'active' DO NOTHING RETURNING id",
                    (f"rma:{rma_ref}:{movement_id}", m[4], m[0], m[3], rma["returns_location"],
                     outcome.exception)).fetchone()
                alarm_id = None if row is None else row[0]
            conn.execute("INSERT INTO rma_receipts (movement_id, rma_id, line, exception, alarm_id) "
                         "VALUES (%s, %s, %s, %s, %s)", (movement_id, rma["id"], outcome.line, outcome.exception,
                                                         alarm_id))
            after = status_after_receipt(rma["status"])
            if after != rma["status"]:
                _set(conn, rma["id"], status=after)
    return len(pending)


def _targets(conn: psycopg.Connection, returns_location: str) -> dict[str, str]:
    site = conn.execute("SELECT site FROM locations WHERE code = %s", (returns_location,)).fetchone()
    assert site is not None  # a foreign key
    out: dict[str, str] = {}
    for disposition, type_ in DISPOSITION_TARGET.items():
        code = _site_location(conn, site[0], type_)
        if code is not None:
            out[disposition] = code
    return out


def inspect(conn: psycopg.Connection, ref: str, lines: list[InspectLine], by: str) -> Row | None:
    receive_returns(conn, ref)  # a return scan just committed counts, whether or not the loop ran yet
    with conn.transaction():
        rma = _lock(conn, ref)
        if rma is None:
            return None
        plan = plan_inspection(ref, rma["status"], rma["returns_location"], _targets(conn, rma["returns_location"]),
                               _received(conn, rma["id"]), _inspected(conn, rma["id"]), lines, datetime.now(UTC))
        ids = post(conn, plan.postings, f"rma-inspect:{ref}")
        conn.cursor().executemany(
            "INSERT INTO rma_inspections (movement_id, rma_id, disposition, inspected_by) VALUES (%s, %s, %s, %s)",
            [(i, rma["id"], ln.disposition, by) for i, ln in zip(ids, lines, strict=True)])
        if plan.complete:
            _set(conn, rma["id"], status="inspected")
    return get_rma(conn, ref)


def record_refund(conn: psycopg.Connection, ref: str, refund: Refund | None, replacement: str | None) -> Row | None:
    with conn.transaction():
        rma = _lock(conn, ref)
        if rma is None:
            return None
        if refund is not None:
            check_refund(ref, rma["status"], refund)
            _set(conn, rma["id"], refund=Jsonb({"amount": str(refund.amount), "currency": refund.currency,
                                                "status": refund.status}))
        if replacement is not None:
            _set(conn, rma["id"], replacement_order=replacement)
    return get_rma(conn, ref)


def close(conn: psycopg.Connection, ref: str) -> Row | None:
    with conn.transaction():
        rma = _lock(conn, ref)
        if rma is None:
            return None
        check_close(ref, rma["status"])
        _set(conn, rma["id"], status="closed")
    return get_rma(conn, ref)


def get_rma(conn: psycopg.Connection, ref: str) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        rma = cur.execute("SELECT * FROM rmas WHERE ref = %s", (ref,)).fetchone()
        if rma is None:
            return None
        rma["lines"] = cur.execute("SELECT sku, qty, serial, lot, reason FROM rma_lines WHERE rma_id = %s "
                                   "ORDER BY n", (rma["id"],)).fetchall()
        for line in rma["lines"]:  # the serial's delivery: what its warranty and the return are measured from
            line["delivered_at"] = None if line["serial"] is None else delivered_at(conn, line["sku"], line["serial"])
        rma["receipts"] = cur.execute(
            "SELECT m.id AS movement_id, m.ts, m.sku, m.qty, m.serial, m.lot, r.line, r.exception, r.alarm_id "
            "FROM rma_receipts r JOIN movements m ON m.id = r.movement_id WHERE r.rma_id = %s ORDER BY m.ts, m.id",
            (rma["id"],)).fetchall()
        rma["inspections"] = cur.execute(
            "SELECT m.id AS movement_id, m.ts, m.sku, m.qty, m.serial, m.lot, i.disposition, m.to_location, "
            "i.inspected_by FROM rma_inspections i JOIN movements m ON m.id = i.movement_id "
            "WHERE i.rma_id = %s ORDER BY m.id", (rma["id"],)).fetchall()
    return rma


def list_rmas(conn: psycopg.Connection, status: str | None, customer: str | None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT ref FROM rmas WHERE (%(s)s::text IS NULL OR status = %(s)s) AND "
                           "(%(c)s::text IS NULL OR customer = %(c)s) ORDER BY id DESC LIMIT %(n)s",
                           {"s": status, "c": customer, "n": MAX_LIMIT}).fetchall()
    return [r for r in (get_rma(conn, row["ref"]) for row in rows) if r is not None]
