"""The live operations picture: following the events outbox, and the overview counts.

Events are written by triggers (migration 0010) in commit order and announced with
``NOTIFY cargotrace_events``. Each API process has ONE listening connection (``api/hub.py``) that
reads ``id > last`` on every notification and fans the rows out to its streams: the notification
is only a wake-up, so a lost one costs at most the hub's poll interval, and every API process
sees every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.store.records import Row

CHANNEL = "cargotrace_events"
# Rows read per query while catching up; a reconnect after a long gap replays in pages.
REPLAY_PAGE = 500


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """Nothing happened for a heartbeat interval (the stream sends a comment to keep proxies open)."""


@dataclass(frozen=True)
class Ready:
    """LISTEN is in place; events after ``after`` will follow."""

    after: int


async def head(conn: psycopg.AsyncConnection) -> int:
    row = await (await conn.execute("SELECT coalesce(max(id), 0) FROM events_outbox")).fetchone()
    return int(row[0]) if row else 0


async def events_after(conn: psycopg.AsyncConnection, after: int, limit: int) -> list[OutboxEvent]:
    cur = await conn.execute("SELECT id, kind, payload FROM events_outbox WHERE id > %s ORDER BY id LIMIT %s",
                             (after, limit))
    return [OutboxEvent(int(r[0]), str(r[1]), r[2]) for r in await cur.fetchall()]


StreamItem = Ready | OutboxEvent | Heartbeat


# --- the overview the dashboard opens with -------------------------------------------------------

def overview(conn: psycopg.Connection, since: datetime, offline_after_s: int,
             offline_multiple: float) -> Row:
    """Open alarms by severity, shipments by status, devices online/offline, movements since
    ``since``, and the outbox head (the Last-Event-ID that continues exactly after these counts)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """
            SELECT
              (SELECT coalesce(max(id), 0) FROM events_outbox) AS events_head,
              (SELECT coalesce(jsonb_object_agg(severity, n), '{}') FROM
                 (SELECT severity, count(*) AS n FROM alarms WHERE state = 'active' GROUP BY severity) a)
                AS alarms_active,
              (SELECT count(*) FROM alarms WHERE state = 'active' AND NOT acknowledged) AS alarms_unacknowledged,
              (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
                 (SELECT status, count(*) AS n FROM shipments GROUP BY status) s) AS shipments,
              (SELECT count(*) FROM devices d JOIN device_state s ON s.device_id = d.device_id
                 WHERE s.last_seen >= now() - make_interval(secs => device_silence_limit_s(
                       s.expected_interval_s, %(offline_multiple)s, %(offline_after_s)s))) AS devices_online,
              (SELECT count(*) FROM devices) AS devices_total,
              (SELECT count(*) FROM movements WHERE ts >= %(since)s) AS movements_since
            """, {"since": since, "offline_after_s": offline_after_s, "offline_multiple": offline_multiple}).fetchone()
    assert row is not None  # an aggregate-only SELECT always returns its row
    return row
