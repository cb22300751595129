"""After-sales tickets: listing, opening, the workflow (status, notes, assignment) and the SLA sweep.

The decisions are core's (``core.service``, ``core.sla``); this module loads a ticket under a row
lock, asks core, and writes the answer with a timeline entry naming the author. Ingest opens the
automatic ones (``cause`` set, once per shipment and cause) without dues or assignee; the service
loop takes them in (``intake``) like any other ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.errors import ConflictError, InvalidInputError, InvalidReferenceError
from api.pagination import MAX_LIMIT, Key
from api.schemas.tickets import TicketIn, TicketPatch
from api.service_config import service_settings, sla_targets
from api.store.filters import Where
from api.store.records import Row, integrity_errors_translated
from core.service import (
    AssignmentRule,
    TimelineEntry,
    check_transition,
    escalation_target,
    first_response_at,
    next_agent,
    resolved_at,
    rule_for,
)
from core.sla import Dues as SlaDues
from core.sla import TicketClock, breaches, dues


@dataclass(frozen=True)
class TicketFilter:
    shipment: str | None = None
    status: str | None = None
    type: str | None = None
    assignee: str | None = None


def list_tickets(conn: psycopg.Connection, where_: TicketFilter, after: Key | None, limit: int) -> list[Row]:
    """Newest first by opening time, then id."""
    w = Where()
    w.when(where_.shipment, "shipment = %(shipment)s", "shipment")
    w.when(where_.status, "status = %(status)s", "status")
    w.when(where_.type, "type = %(type)s", "type")
    w.when(where_.assignee, "assignee = %(assignee)s", "assignee")
    if after is not None:
        w.add("(opened_at, id) < (%(a_ts)s, %(a_id)s)", a_ts=after[0], a_id=after[1])
    query = f"SELECT * FROM tickets {w.sql()} ORDER BY opened_at DESC, id DESC LIMIT %(limit)s"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()


def get_ticket(conn: psycopg.Connection, ticket_id: int, lock: bool = False) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM tickets WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                           (ticket_id,)).fetchone()


def movements_for(conn: psycopg.Connection, rma: str | None) -> list[Row]:
    """The ledger movements a return with this RMA caused, oldest first (capped at one page)."""
    if rma is None:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM movements WHERE ref = %s ORDER BY ts, id LIMIT %s",
                           (rma, MAX_LIMIT)).fetchall()


# --- timeline ------------------------------------------------------------------------------------


def entry(ts: datetime, author: str, kind: str, text: str, status: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": ts.astimezone(UTC).isoformat(), "author": author, "kind": kind, "text": text}
    if status is not None:
        out["status"] = status
    return out


def _timeline(raw: list[dict[str, Any]]) -> list[TimelineEntry]:
    return [TimelineEntry(datetime.fromisoformat(e["ts"]), e["author"], e["kind"], e["text"], e.get("status"))
            for e in raw]


def _event_time(ts: datetime | None, now: datetime) -> datetime:
    """A step's event time: as stated (a reply made on the phone, written up later), never the future."""
    if ts is None:
        return now
    if ts.tzinfo is None:  # RFC 3339 wants an offset; a time without one is read as UTC
        ts = ts.replace(tzinfo=UTC)
    if ts > now:
        raise InvalidInputError("ts: a ticket step cannot happen in the future")
    return ts


# --- assignment and SLA ---------------------------------------------------------------------------


def _rules(conn: psycopg.Connection, type_: str) -> list[AssignmentRule]:
    rows = conn.execute("SELECT type, site, agents, escalate_to FROM assignment_rules WHERE type = %s",
                        (type_,)).fetchall()
    return [AssignmentRule(r[0], r[1], tuple(r[2]), r[3]) for r in rows]


def _assign(conn: psycopg.Connection, type_: str, site: str | None) -> str | None:
    """The next agent of the rule for this type and site (round robin), recording the turn."""
    rule = rule_for(_rules(conn, type_), type_, site)
    if rule is None:
        return None
    last = conn.execute("SELECT last_assignee FROM assignment_rules WHERE type = %s AND site = %s FOR UPDATE",
                        (rule.type, rule.site)).fetchone()
    agent = next_agent(rule, None if last is None else last[0])
    conn.execute("UPDATE assignment_rules SET last_assignee = %s WHERE type = %s AND site = %s",
                 (agent, rule.type, rule.site))
    return agent


def _sla_fields(row: Row, timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """first_response_at and resolved_at re-derived from the timeline (event time); whether that
    breached a due time is the sweep's decision (it raises the alarm with it)."""
    tl = _timeline(timeline)
    system = service_settings().service_author
    return {"first_response_at": first_response_at(row["opened_at"], tl, system), "resolved_at": resolved_at(tl)}


def _write(conn: psycopg.Connection, ticket_id: int, changes: dict[str, Any]) -> Row:
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    params = {k: Jsonb(v) if k == "timeline" else v for k, v in changes.items()}
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"UPDATE tickets SET {sets}, updated_at = now() WHERE id = %(id)s RETURNING *",
                          {**params, "id": ticket_id}).fetchone()
    assert row is not None  # locked above
    return row


# --- operations ----------------------------------------------------------------------------------


def _shipment_facts(conn: psycopg.Connection, shipment: str) -> tuple[str, str | None]:
    """(customer, site of its origin) of a shipment; 422 when there is none."""
    row = conn.execute("SELECT s.customer, l.site FROM shipments s LEFT JOIN locations l ON l.code = s.origin "
                       "WHERE s.ref = %s", (shipment,)).fetchone()
    if row is None:
        raise InvalidReferenceError(f"shipment: shipment {shipment!r} does not exist")
    return row[0], row[1]


def _shipment_of_alarm(conn: psycopg.Connection, alarm_id: int, shipment: str | None) -> str | None:
    row = conn.execute("SELECT shipment FROM alarms WHERE id = %s", (alarm_id,)).fetchone()
    if row is None:
        raise InvalidReferenceError(f"alarm_id: alarm {alarm_id} does not exist")
    alarm_shipment = row[0]
    if shipment is not None and alarm_shipment is not None and alarm_shipment != shipment:
        raise InvalidReferenceError(f"alarm_id: alarm {alarm_id} belongs to shipment {alarm_shipment!r}, "
                                    f"not {shipment!r}")
    return shipment if shipment is not None else alarm_shipment


def create_ticket(conn: psycopg.Connection, body: TicketIn, by: str, channel: str = "staff",
                  contact: str | None = None) -> Row:
    """Open a ticket with its due times and (by the rules) its assignee; the opening is its first
    timeline entry, an assignment the second."""
    now = datetime.now(UTC)
    with conn.transaction():
        shipment = body.shipment
        if body.alarm_id is not None:
            shipment = _shipment_of_alarm(conn, body.alarm_id, shipment)
        customer, site = body.customer, body.site
        if shipment is not None:
            ship_customer, ship_site = _shipment_facts(conn, shipment)
            customer, site = customer or ship_customer, site or ship_site
        if body.rma is not None:
            taken = conn.execute("SELECT id FROM tickets WHERE rma = %s", (body.rma,)).fetchone()
            if taken is not None:
                raise ConflictError(f"rma: {body.rma!r} already belongs to ticket {taken[0]}")
        due = dues(sla_targets(), body.type, body.priority, now)
        timeline = [entry(now, by, "status", f"opened: {body.summary}", "open")]
        if body.note is not None:
            timeline.append(entry(now, by, "note", body.note))
        assignee = body.assignee or _assign(conn, body.type, site)
        if assignee is not None:
            timeline.append(entry(now, service_settings().service_author if body.assignee is None else by,
                                  "assignment", f"assigned to {assignee}"))
        notes = [] if body.note is None else [{"at": now.isoformat(), "by": by, "text": body.note}]
        with integrity_errors_translated("ticket"), conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "INSERT INTO tickets (type, summary, shipment, alarm_id, rma, notes, priority, assignee, customer, "
                "site, contact, channel, first_response_due, resolution_due, timeline, opened_at) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (body.type, body.summary, shipment, body.alarm_id, body.rma, Jsonb(notes), body.priority, assignee,
                 customer, site, contact, channel, due.first_response, due.resolution, Jsonb(timeline), now),
            ).fetchone()
    assert row is not None
    return row


def update_ticket(conn: psycopg.Connection, ticket_id: int, patch: TicketPatch, by: str) -> Row | None:
    """Status, assignee, priority and/or a note, each a timeline entry by ``by``; None if no ticket.

    Setting what the ticket already has is not a change (a retried request); an illegal status
    move is 409.
    """
    now = datetime.now(UTC)
    with conn.transaction():
        row = get_ticket(conn, ticket_id, lock=True)
        if row is None:
            return None
        at = _event_time(patch.ts, now)
        timeline = list(row["timeline"])
        changes: dict[str, Any] = {}
        if patch.status is not None and patch.status != row["status"]:
            check_transition(ticket_id, row["status"], patch.status)
            timeline.append(entry(at, by, "status", f"{row['status']} → {patch.status}", patch.status))
            changes["status"] = patch.status
        if patch.assignee is not None and patch.assignee != row["assignee"]:
            timeline.append(entry(at, by, "assignment", f"assigned to {patch.assignee}"))
            changes["assignee"] = patch.assignee
        if patch.priority is not None and patch.priority != row["priority"]:
            timeline.append(entry(at, by, "note", f"priority {row['priority']} → {patch.priority}"))
            due = dues(sla_targets(), row["type"], patch.priority, row["opened_at"])
            changes.update(priority=patch.priority, first_response_due=due.first_response,
                           resolution_due=due.resolution)
        if patch.note is not None:
            timeline.append(entry(at, by, "note", patch.note))
        if patch.note is not None or "status" in changes:
            # The older `notes` list: one entry per update, naming the status it moved to.
            text = patch.note or f"status changed from {row['status']} to {changes['status']}"
            changes["notes"] = Jsonb([*row["notes"], {"at": at.isoformat(), "by": by, "text": text,
                                                      **({"status": changes["status"]} if "status" in changes
                                                         else {})}])
        if not changes:
            return row
        changes["timeline"] = timeline
        changes.update(_sla_fields(row, timeline))
        return _write(conn, ticket_id, changes)


def add_note(conn: psycopg.Connection, ticket_id: int, text: str, ts: datetime | None, by: str) -> Row | None:
    return update_ticket(conn, ticket_id, TicketPatch(status=None, note=text, assignee=None, priority=None, ts=ts), by)


# --- the service loop's part ------------------------------------------------------------------------


def intake(conn: psycopg.Connection, now: datetime) -> int:
    """Give tickets that arrived without due times (opened by ingest) their dues and assignee."""
    system = service_settings().service_author
    ids = [r[0] for r in conn.execute("SELECT id FROM tickets WHERE first_response_due IS NULL "
                                      "ORDER BY id LIMIT 500").fetchall()]
    for ticket_id in ids:
        with conn.transaction():
            row = get_ticket(conn, ticket_id, lock=True)
            if row is None or row["first_response_due"] is not None:
                continue
            customer, site = row["customer"], row["site"]
            if row["shipment"] is not None and (customer is None or site is None):
                customer, site = _shipment_facts(conn, row["shipment"])
            due = dues(sla_targets(), row["type"], row["priority"], row["opened_at"])
            timeline = list(row["timeline"]) or [entry(row["opened_at"], system, "status",
                                                       f"opened: {row['summary']}", "open")]
            assignee = row["assignee"] or _assign(conn, row["type"], site)
            if assignee is not None and assignee != row["assignee"]:
                timeline.append(entry(now, system, "assignment", f"assigned to {assignee}"))
            channel = "automatic" if row["cause"] is not None else row["channel"]
            _write(conn, ticket_id, {"first_response_due": due.first_response, "resolution_due": due.resolution,
                                     "assignee": assignee, "customer": customer, "site": site,
                                     "timeline": timeline, "channel": channel})
    return len(ids)


def sweep_breaches(conn: psycopg.Connection, now: datetime) -> int:
    """Raise an ``sla_breach`` alarm (dated at the due time: event time) for each due time passed
    without its step, once per ticket and kind; mark the ticket and escalate it (once). An alarm
    clears when its step is done (at the step's event time). Returns the breaches newly raised.

    The query only narrows the candidates (a kind not yet raised whose step is missing past its
    due time, or late), so tickets served in time never come back; ``core.sla`` decides."""
    system = service_settings().service_author
    _clear_done(conn)
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM tickets WHERE first_response_due IS NOT NULL AND cardinality(sla_breaches) < 2 AND ("
        "(NOT 'first_response' = ANY(sla_breaches) AND ((first_response_at IS NULL AND first_response_due <= %(now)s)"
        " OR first_response_at > first_response_due)) OR (NOT 'resolution' = ANY(sla_breaches) AND "
        "((resolved_at IS NULL AND resolution_due <= %(now)s) OR resolved_at > resolution_due))) "
        "ORDER BY id LIMIT 500",
        {"now": now}).fetchall()]
    raised = 0
    for ticket_id in ids:
        with conn.transaction():
            row = get_ticket(conn, ticket_id, lock=True)
            if row is None:
                continue
            clock = TicketClock(SlaDues(row["first_response_due"], row["resolution_due"]),
                                row["first_response_at"], row["resolved_at"])
            found = [b for b in breaches(clock, now) if b.kind not in row["sla_breaches"]]
            if not found:
                continue
            timeline = list(row["timeline"])
            for b in found:
                label = b.kind.replace("_", " ")
                done = row["first_response_at"] if b.kind == "first_response" else row["resolved_at"]
                conn.execute(
                    "INSERT INTO alarms (type, severity, state, shipment, subject, started_at, cleared_at, message) "
                    "VALUES ('sla_breach', 'warning', %s, %s, %s, %s, %s, %s)",
                    ("active" if done is None else "cleared", row["shipment"], f"ticket:{ticket_id}:{b.kind}",
                     b.due, done, f"ticket {ticket_id}: {label} was due {b.due:%Y-%m-%d %H:%M} UTC"))
                raised += 1
                timeline.append(entry(b.due, system, "note", f"SLA breached: {label} due {b.due.isoformat()}"))
            changes: dict[str, Any] = {"sla_breached": True, "timeline": timeline,
                                       "sla_breaches": [*row["sla_breaches"], *(b.kind for b in found)]}
            rule = rule_for(_rules(conn, row["type"]), row["type"], row["site"])
            target = escalation_target(rule, row["assignee"])
            if target is not None and row["escalated_to"] is None:
                timeline.append(entry(now, system, "assignment", f"escalated to {target}"))
                changes["escalated_to"] = target
            _write(conn, ticket_id, changes)
    return raised


def _clear_done(conn: psycopg.Connection) -> None:
    """A breach alarm whose step has since been done is cleared at the step's event time."""
    with conn.transaction():
        conn.execute(
            "UPDATE alarms a SET state = 'cleared', cleared_at = CASE WHEN a.subject LIKE '%%:first_response' "
            "THEN t.first_response_at ELSE t.resolved_at END, updated_at = now() FROM tickets t "
            "WHERE a.type = 'sla_breach' AND a.state = 'active' AND ("
            "(a.subject = 'ticket:' || t.id || ':first_response' AND t.first_response_at IS NOT NULL) OR "
            "(a.subject = 'ticket:' || t.id || ':resolution' AND t.resolved_at IS NOT NULL))")


def put_assignment_rule(conn: psycopg.Connection, type_: str, site: str, agents: list[str],
                        escalate_to: str | None) -> Row:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO assignment_rules (type, site, agents, escalate_to) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (type, site) DO UPDATE SET agents = excluded.agents, escalate_to = excluded.escalate_to "
            "RETURNING type, site, agents, escalate_to", (type_, site, agents, escalate_to)).fetchone()
    assert row is not None
    return row
