"""The live operations picture: following the events outbox, and the overview counts.

Events are written by triggers (migration 0010) in commit order and announced with
``NOTIFY cargotrace_events``. A follower LISTENs on its own connection (a pooled connection
cannot be kept for the life of a stream) and reads ``id > last``: the notification is only a
wake-up, so a lost one costs at most one heartbeat interval, and every API process, each with its
own followers, sees every event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from time import monotonic
from typing import Any

import anyio
import psycopg
from psycopg.rows import dict_row

from api.store.records import Row

CHANNEL = "cargotrace_events"
# Rows read per query while catching up; a reconnect after a long gap replays in pages.
REPLAY_PAGE = 500
# Names the followers' connections in pg_stat_activity (one per open stream).
APPLICATION_NAME = "cargotrace-events"


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


async def follow(database_url: str, after: int | None, heartbeat_s: float) -> AsyncIterator[StreamItem]:
    """``Ready``, then the events after ``after`` (None: only new ones), then new events as they
    commit, with a ``Heartbeat`` after every ``heartbeat_s`` of silence. Runs until cancelled."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True, connect_timeout=5,
                                                 application_name=APPLICATION_NAME)
    try:
        # LISTEN before reading the head: an event committed in between is then both above the
        # head and announced, never neither.
        await conn.execute(f"LISTEN {CHANNEL}")
        latest = await head(conn)
        # An id above the head comes from another database (restored, or rebuilt in tests):
        # resuming from it would hide every new event until the ids catch up.
        last = latest if after is None or after > latest else after
        yield Ready(last)
        quiet_since = monotonic()
        while True:
            batch = await events_after(conn, last, REPLAY_PAGE)
            for event in batch:
                yield event
                last = event.id
            if batch:
                quiet_since = monotonic()
                if len(batch) == REPLAY_PAGE:
                    continue
            wait = heartbeat_s - (monotonic() - quiet_since)
            if wait <= 0:
                yield Heartbeat()
                quiet_since = monotonic()
                continue
            # Returns on the first notification or after `wait`; either way the outbox is read
            # again, which also covers a notification lost while the connection was busy.
            async for _ in conn.notifies(timeout=wait, stop_after=1):
                pass
    finally:
        # Shielded: the stream ends by cancellation when the client goes away.
        with anyio.CancelScope(shield=True):
            await conn.close()


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
