"""The facts the service report is computed from (``core.service_stats`` decides the figures)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import psycopg

from core.service_stats import ReturnFacts, TicketFacts


def ticket_facts(conn: psycopg.Connection, since: datetime | None, until: datetime | None,
                 site: str | None) -> list[TicketFacts]:
    rows = conn.execute(
        "SELECT type, status, opened_at, first_response_at, resolved_at, sla_breached, feedback_score "
        "FROM tickets WHERE (%(f)s::timestamptz IS NULL OR opened_at >= %(f)s) "
        "AND (%(t)s::timestamptz IS NULL OR opened_at < %(t)s) AND (%(s)s::text IS NULL OR site = %(s)s)",
        {"f": since, "t": until, "s": site}).fetchall()
    return [TicketFacts(*r) for r in rows]


def return_facts(conn: psycopg.Connection, since: datetime | None, until: datetime | None,
                 site: str | None) -> list[ReturnFacts]:
    rows = conn.execute(
        "SELECT l.sku, l.reason, l.qty FROM rmas r JOIN rma_lines l ON l.rma_id = r.id "
        "JOIN locations rl ON rl.code = r.returns_location "
        "WHERE (%(f)s::timestamptz IS NULL OR r.created_at >= %(f)s) "
        "AND (%(t)s::timestamptz IS NULL OR r.created_at < %(t)s) AND (%(s)s::text IS NULL OR rl.site = %(s)s) "
        "AND r.status <> 'rejected'", {"f": since, "t": until, "s": site}).fetchall()
    return [ReturnFacts(r[0], r[1], float(Decimal(r[2]))) for r in rows]
