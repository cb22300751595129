"""One event stream: replay after Last-Event-ID from the table, then follow the process's hub.

The history a resuming client missed is read in pages on a pooled connection (borrowed per page,
never held); live events come from the hub's queue (``api/hub.py``), de-duplicated by id against
the replay. The token is re-checked every ``revalidate_s``: a revoked or expired token's stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import monotonic

import psycopg
from anyio import to_thread
from psycopg_pool import ConnectionPool

from api.hub import Subscriber
from api.store.events import REPLAY_PAGE, Heartbeat, OutboxEvent, Ready, StreamItem
from api.tokens import token_is_valid

POOL_WAIT_S = 10.0


def _page(pool: ConnectionPool, after: int, upto: int) -> list[OutboxEvent]:
    with pool.connection(timeout=POOL_WAIT_S) as conn:
        rows = conn.execute("SELECT id, kind, payload FROM events_outbox WHERE id > %s AND id <= %s "
                            "ORDER BY id LIMIT %s", (after, upto, REPLAY_PAGE)).fetchall()
    return [OutboxEvent(int(r[0]), str(r[1]), r[2]) for r in rows]


def _still_valid(pool: ConnectionPool, token_id: int) -> bool:
    try:
        with pool.connection(timeout=POOL_WAIT_S) as conn:
            return token_is_valid(conn, token_id)
    except psycopg.OperationalError:
        return True  # the database is away: keep the stream, re-check at the next interval


async def follow(pool: ConnectionPool, sub: Subscriber, live: int, after: int | None, heartbeat_s: float,
                 revalidate_s: float) -> AsyncIterator[StreamItem]:
    """``Ready``, the events after ``after`` (None: only new ones), then live events, with a
    ``Heartbeat`` after every ``heartbeat_s`` of silence; ends when the token stops being valid or
    the client falls too far behind (it then resumes with Last-Event-ID). ``live`` is the hub's
    head when ``sub`` subscribed: its queue holds every event after it."""
    # An id above the head comes from another database (restored, or rebuilt in tests).
    last = live if after is None or after > live else after
    yield Ready(last)
    while last < live:
        page = await to_thread.run_sync(_page, pool, last, live)
        if not page:
            break
        for event in page:
            yield event
        last = page[-1].id
    quiet_since = checked_at = monotonic()
    while not sub.overflowed:
        now = monotonic()
        if now - checked_at >= revalidate_s:
            if not await to_thread.run_sync(_still_valid, pool, sub.token_id):
                return
            checked_at = now
        if now - quiet_since >= heartbeat_s:
            yield Heartbeat()
            quiet_since = now
        wait = max(0.01, min(heartbeat_s - (now - quiet_since), revalidate_s - (now - checked_at)))
        try:
            event = await asyncio.wait_for(sub.queue.get(), wait)
        except TimeoutError:
            continue
        if event.id > last:
            yield event
            last = event.id
            quiet_since = monotonic()
