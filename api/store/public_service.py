"""The customer's side of after-sales, by the shipment's public token: report a problem, see the
tickets' status, give feedback once resolved. Only what the customer may see leaves this module."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.service_config import TooManyRequestsError, service_settings
from api.store.records import Row
from api.store.tickets import entry
from core.service import check_feedback

PUBLIC_AUTHOR = "customer"
_PUBLIC_COLUMNS = "id, type, status, opened_at, summary, feedback_score IS NOT NULL AS feedback_given"


def public_tickets(conn: psycopg.Connection, shipment: str) -> list[Row]:
    """The shipment's tickets a customer may know of: the ones they opened and the exceptions
    (status only; an exception's summary is written for staff, so the customer sees its type)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_PUBLIC_COLUMNS}, channel FROM tickets WHERE shipment = %s "
                           "ORDER BY opened_at, id LIMIT 100", (shipment,)).fetchall()
    for r in rows:
        if r.pop("channel") != "public":
            r["summary"] = r["type"].replace("_", " ")
    return rows


def check_rate(conn: psycopg.Connection, shipment: str, now: datetime) -> None:
    limit = service_settings().public_issues_per_hour
    row = conn.execute("SELECT count(*) FROM tickets WHERE shipment = %s AND channel = 'public' "
                       "AND opened_at > %s", (shipment, now - timedelta(hours=1))).fetchone()
    if row is not None and row[0] >= limit:
        raise TooManyRequestsError(f"at most {limit} reports per hour for one shipment; please try again later",
                                   headers={"Retry-After": "3600"})


def feedback(conn: psycopg.Connection, shipment: str, ticket_id: int, score: int, comment: str | None) -> Row | None:
    """None when the ticket is not one of this shipment's (the customer cannot probe others)."""
    now = datetime.now(UTC)
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM tickets WHERE id = %s AND shipment = %s FOR UPDATE",
                              (ticket_id, shipment)).fetchone()
        if row is None:
            return None
        check_feedback(ticket_id, row["status"], row["feedback_score"] is not None, score)
        timeline = [*row["timeline"], entry(now, PUBLIC_AUTHOR, "note", f"feedback {score}/5"
                                            + (f": {comment}" if comment else ""))]
        conn.execute("UPDATE tickets SET feedback_score = %s, feedback_comment = %s, feedback_at = %s, "
                     "timeline = %s, updated_at = now() WHERE id = %s",
                     (score, comment, now, Jsonb(timeline), ticket_id))
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(f"SELECT {_PUBLIC_COLUMNS} FROM tickets WHERE id = %s", (ticket_id,)).fetchone()
