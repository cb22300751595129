"""Withdraw stored alarms whose episode no longer exists (the policy is ``core.withdrawal``).

Shared by the environmental/battery alarms (``ingest.telemetry_rules``) and the stock
discrepancy alarms (``ingest.stock_store``), so both follow one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from core.withdrawal import WITHDRAWN, TicketTouch, withdrawal


def _tickets_of(cur: psycopg.Cursor, alarm_ids: Sequence[int]) -> dict[int, list[TicketTouch]]:
    out: dict[int, list[TicketTouch]] = {}
    for alarm_id, *row in cur.execute(
            "SELECT alarm_id, id, cause IS NOT NULL, status, jsonb_array_length(notes) FROM tickets "
            "WHERE alarm_id = ANY(%s) ORDER BY id FOR UPDATE", (list(alarm_ids),)):
        touch = TicketTouch(int(row[0]), bool(row[1]), row[2], int(row[3]))
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
