"""Alarms: listing and acknowledgement (who, when, why is recorded)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from api.pagination import Key
from api.store.filters import Where
from api.store.records import Row


@dataclass(frozen=True)
class AlarmFilter:
    state: str | None = None
    type: str | None = None
    device: str | None = None
    shipment: str | None = None


def list_alarms(conn: psycopg.Connection, where_: AlarmFilter, after: Key | None, limit: int) -> list[Row]:
    """Newest first by start time, then id."""
    w = Where()
    w.when(where_.state, "state = %(state)s", "state")
    if where_.state is None:
        w.add("state <> 'withdrawn'")  # not derived state: only on explicit request
    w.when(where_.type, "type = %(type)s", "type")
    w.when(where_.device, "device_id = %(device)s", "device")
    w.when(where_.shipment, "shipment = %(shipment)s", "shipment")
    if after is not None:
        w.add("(started_at, id) < (%(a_ts)s, %(a_id)s)", a_ts=after[0], a_id=after[1])
    query = f"SELECT * FROM alarms {w.sql()} ORDER BY started_at DESC, id DESC LIMIT %(limit)s"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()


def get_alarm(conn: psycopg.Connection, alarm_id: int) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM alarms WHERE id = %s", (alarm_id,)).fetchone()


def acknowledge(conn: psycopg.Connection, alarm_id: int, by: str, note: str | None) -> Row | None:
    """Mark acknowledged; None if there is no such alarm.

    The first acknowledgement is the one kept: acknowledging again (a retried request, a second
    operator) returns the alarm unchanged instead of overwriting who acknowledged it and when.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE alarms SET acknowledged = true, ack_by = %s, ack_at = now(), ack_note = %s, updated_at = now() "
            "WHERE id = %s AND NOT acknowledged RETURNING *", (by, note, alarm_id)).fetchone()
    return row if row is not None else get_alarm(conn, alarm_id)
