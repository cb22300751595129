"""After-sales tickets: listing, opening by a person, status and notes, and the linked return movements.

Ingest opens the automatic ones (``cause`` set, once per shipment and cause); this module never
sets ``cause``, so a person's ticket can never block or duplicate an automatic one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg.rows import dict_row

from api.errors import ConflictError, InvalidReferenceError
from api.pagination import MAX_LIMIT, Key
from api.schemas.tickets import TicketIn
from api.store.filters import Where
from api.store.records import Row, integrity_errors_translated

# The life of a ticket. Work may skip in_progress (a quick fix), and anything may be closed (a
# duplicate, a customer who withdrew), but a closed ticket is history: new work is a new ticket.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "open": frozenset({"in_progress", "resolved", "closed"}),
    "in_progress": frozenset({"resolved", "closed"}),
    "resolved": frozenset({"closed"}),
    "closed": frozenset(),
}

# One note entry, stamped by the database clock like updated_at; jsonb_strip_nulls drops the
# status key of a plain note.
_NOTE = "jsonb_strip_nulls(jsonb_build_object('at', now(), 'by', %(by)s::text, 'text', %(text)s::text, " \
        "'status', %(status)s::text))"


@dataclass(frozen=True)
class TicketFilter:
    shipment: str | None = None
    status: str | None = None
    type: str | None = None


def list_tickets(conn: psycopg.Connection, where_: TicketFilter, after: Key | None, limit: int) -> list[Row]:
    """Newest first by opening time, then id."""
    w = Where()
    w.when(where_.shipment, "shipment = %(shipment)s", "shipment")
    w.when(where_.status, "status = %(status)s", "status")
    w.when(where_.type, "type = %(type)s", "type")
    if after is not None:
        w.add("(opened_at, id) < (%(a_ts)s, %(a_id)s)", a_ts=after[0], a_id=after[1])
    query = f"SELECT * FROM tickets {w.sql()} ORDER BY opened_at DESC, id DESC LIMIT %(limit)s"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()


def get_ticket(conn: psycopg.Connection, ticket_id: int) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM tickets WHERE id = %s", (ticket_id,)).fetchone()


def movements_for(conn: psycopg.Connection, rma: str | None) -> list[Row]:
    """The ledger movements a return with this RMA caused, oldest first (a return reads as a story).

    Capped at one page of the ledger; ``GET /movements?ref=`` pages through more.
    """
    if rma is None:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM movements WHERE ref = %s ORDER BY ts, id LIMIT %s",
                           (rma, MAX_LIMIT)).fetchall()


def _shipment_of_alarm(conn: psycopg.Connection, alarm_id: int, shipment: str | None) -> str | None:
    """The ticket's shipment given its alarm: the alarm's own shipment when the body names none."""
    row = conn.execute("SELECT shipment FROM alarms WHERE id = %s", (alarm_id,)).fetchone()
    if row is None:
        raise InvalidReferenceError(f"alarm_id: alarm {alarm_id} does not exist")
    alarm_shipment = row[0]
    if shipment is not None and alarm_shipment is not None and alarm_shipment != shipment:
        raise InvalidReferenceError(f"alarm_id: alarm {alarm_id} belongs to shipment {alarm_shipment!r}, "
                                    f"not {shipment!r}")
    return shipment if shipment is not None else alarm_shipment


def create_ticket(conn: psycopg.Connection, body: TicketIn, by: str) -> Row:
    with conn.transaction():
        shipment = body.shipment
        if shipment is not None and conn.execute("SELECT 1 FROM shipments WHERE ref = %s",
                                                 (shipment,)).fetchone() is None:
            raise InvalidReferenceError(f"shipment: shipment {shipment!r} does not exist")
        if body.alarm_id is not None:
            shipment = _shipment_of_alarm(conn, body.alarm_id, shipment)
        if body.rma is not None:
            taken = conn.execute("SELECT id FROM tickets WHERE rma = %s", (body.rma,)).fetchone()
            if taken is not None:
                raise ConflictError(f"rma: {body.rma!r} already belongs to ticket {taken[0]}")
        params = {"type": body.type, "summary": body.summary, "shipment": shipment, "alarm_id": body.alarm_id,
                  "rma": body.rma, "by": by, "text": body.note, "status": None}
        notes = f"CASE WHEN %(text)s::text IS NULL THEN '[]'::jsonb ELSE jsonb_build_array({_NOTE}) END"
        # The explicit checks above give the good messages; this catches a concurrent duplicate rma.
        with integrity_errors_translated("ticket"), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("INSERT INTO tickets (type, summary, shipment, alarm_id, rma, notes) "
                              f"VALUES (%(type)s, %(summary)s, %(shipment)s, %(alarm_id)s, %(rma)s, {notes}) "
                              "RETURNING *", params).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


def update_ticket(conn: psycopg.Connection, ticket_id: int, status: str | None, note: str | None,
                  by: str) -> Row | None:
    """Move the status and/or add a note, recording who and when; None if there is no such ticket.

    Setting the status a ticket already has is a no-op for the status (a retried request), so only
    a real change is recorded in the notes; an illegal move is 409.
    """
    with conn.transaction():
        row = conn.execute("SELECT status FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,)).fetchone()
        if row is None:
            return None
        current = str(row[0])
        change = status if status is not None and status != current else None
        if change is not None and change not in TRANSITIONS[current]:
            allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (a closed ticket stays closed)"
            raise ConflictError(f"ticket {ticket_id} is {current}; it cannot become {change} (allowed: {allowed})")
        if change is None and note is None:
            return get_ticket(conn, ticket_id)
        text = note if note is not None else f"status changed from {current} to {change}"
        with conn.cursor(row_factory=dict_row) as cur:
            updated = cur.execute(
                f"UPDATE tickets SET status = coalesce(%(status)s, status), notes = notes || {_NOTE}, "
                "updated_at = now() WHERE id = %(id)s RETURNING *",
                {"status": change, "by": by, "text": text, "id": ticket_id}).fetchone()
    return updated
