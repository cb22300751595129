"""Withdraw stored alarms whose episode no longer exists (the policy is ``core.withdrawal``).

Shared by the environmental/battery alarms (``ingest.telemetry_rules``) and the stock
discrepancy alarms (``ingest.stock_store``), so both follow one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from core.withdrawal import WITHDRAWN, TicketTouch, withdrawal

# The author name of the after-sales service loop's own timeline entries (api/service_config.py).
SERVICE_AUTHOR = "system"


def _tickets_of(cur: psycopg.Cursor, alarm_ids: Sequence[int]) -> dict[int, list[TicketTouch]]:
    out: dict[int, list[TicketTouch]] = {}
    # The service loop writes its timeline entries as SERVICE_AUTHOR; any other author is a person.
    for alarm_id, *row in cur.execute(
            "SELECT t.alarm_id, t.id, t.cause IS NOT NULL, t.status, jsonb_array_length(t.notes), "
            "(SELECT count(*) FROM jsonb_array_elements(t.timeline) e WHERE e->>'author' IS DISTINCT FROM %s), "
            "(SELECT count(*) FROM rmas r WHERE r.ticket_id = t.id) "
            "+ (SELECT count(*) FROM repairs p WHERE p.ticket_id = t.id) "
            "FROM tickets t WHERE t.alarm_id = ANY(%s) ORDER BY t.id FOR UPDATE OF t",
            (SERVICE_AUTHOR, list(alarm_ids))):
        touch = TicketTouch(int(row[0]), bool(row[1]), row[2], int(row[3]), int(row[4]), int(row[5]))
        out.setdefault(int(alarm_id), []).append(touch)
    return out


def withdraw_alarms(cur: psycopg.Cursor, gone: Sequence[tuple[int, bool]]) -> set[str]:
    """``gone``: (alarm id, acknowledged) of stored alarms the derivation no longer produces.
    Returns the shipments whose automatic ticket was deleted with its alarm (free to be opened
    again by an episode that does exist)."""
    if not gone:
        return set()
    tickets = _tickets_of(cur, [a for a, _ in gone])
    deleted: list[int] = []
    withdrawn: list[int] = []
    for alarm_id, acknowledged in gone:
        (deleted if withdrawal(acknowledged, tickets.get(alarm_id, [])) == "delete" else withdrawn).append(alarm_id)
    freed: set[str] = set()
    if deleted:
        freed = {r[0] for r in cur.execute("DELETE FROM tickets WHERE alarm_id = ANY(%s) RETURNING shipment",
                                           (deleted,)) if r[0] is not None}
        cur.execute("DELETE FROM alarms WHERE id = ANY(%s)", (deleted,))
    if withdrawn:
        cur.execute("UPDATE alarms SET state = %s, cleared_at = coalesce(cleared_at, started_at), "
                    "message = message || ' (withdrawn: late data shows it never happened)', updated_at = now() "
                    "WHERE id = ANY(%s) AND state <> %s", (WITHDRAWN, withdrawn, WITHDRAWN))
    return freed
