"""Subscriptions, the fan-out of outbox events into deliveries, and the delivery log.

Deliveries are made from the same outbox as the event stream (migration 0010): an event exists
only once its transaction committed, so nothing is sent for a rolled-back one; the fan-out moves a
stored position forward in the same transaction as the deliveries it creates, so nothing is lost
or fanned out twice, whoever runs it and whenever it crashes.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.store.records import Row
from core.delivery import matches, shape

_KEY_NAMESPACE = uuid.UUID("6f1c1a3e-6b8e-4d55-9a53-6a0c6f0b2a11")
FAN_OUT_PAGE = 500


def put_subscription(conn: psycopg.Connection, sub_id: str, channel: str, target: str, events: list[str],
                     filter_: dict[str, Any] | None, secret: str | None) -> tuple[Row, bool]:
    """Create or replace; a replace without a secret keeps the old one (receivers keep verifying)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        old = cur.execute("SELECT secret FROM subscriptions WHERE id = %s FOR UPDATE", (sub_id,)).fetchone()
        key = secret or (old["secret"] if old else "whsec_" + secrets.token_urlsafe(32))
        row = cur.execute(
            "INSERT INTO subscriptions (id, channel, target, events, filter, secret) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET channel = excluded.channel, target = excluded.target, "
            "events = excluded.events, filter = excluded.filter, secret = excluded.secret, updated_at = now() "
            "RETURNING *", (sub_id, channel, target, events, None if filter_ is None else Jsonb(filter_), key)
        ).fetchone()
    assert row is not None
    return row, old is None


def get_subscription(conn: psycopg.Connection, sub_id: str) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM subscriptions WHERE id = %s", (sub_id,)).fetchone()


def list_subscriptions(conn: psycopg.Connection) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM subscriptions ORDER BY id LIMIT 1000").fetchall()


def delete_subscription(conn: psycopg.Connection, sub_id: str) -> bool:
    with conn.transaction():
        return conn.execute("DELETE FROM subscriptions WHERE id = %s", (sub_id,)).rowcount > 0


def deliveries(conn: psycopg.Connection, sub_id: str, limit: int) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM deliveries WHERE subscription_id = %s ORDER BY id DESC LIMIT %s",
                           (sub_id, limit)).fetchall()


def fan_out(conn: psycopg.Connection) -> int:
    """Turn outbox events after the stored position into deliveries, one page; returns the events read.

    The position row is locked for the transaction: concurrent notifiers take turns, and the
    position only moves with the deliveries it stands for.
    """
    with conn.transaction():
        conn.execute("INSERT INTO notifier_position VALUES ('outbox', 0) ON CONFLICT DO NOTHING")
        row = conn.execute("SELECT last_id FROM notifier_position WHERE name = 'outbox' FOR UPDATE").fetchone()
        assert row is not None
        last = int(row[0])
        events = conn.execute("SELECT id, kind, payload FROM events_outbox WHERE id > %s ORDER BY id LIMIT %s",
                              (last, FAN_OUT_PAGE)).fetchall()
        if not events:
            return 0
        subs = conn.execute("SELECT id, events, filter FROM subscriptions").fetchall()
        rows = []
        for outbox_id, kind, payload in events:
            body = shape(kind, payload)
            for sub_id, kinds, filter_ in subs:
                if matches(kinds, filter_, kind, payload):
                    key = str(uuid.uuid5(_KEY_NAMESPACE, f"{sub_id}/{outbox_id}"))
                    rows.append((sub_id, outbox_id, kind, Jsonb({"id": outbox_id, "kind": kind, "data": body}), key))
        if rows:
            conn.cursor().executemany(
                "INSERT INTO deliveries (subscription_id, outbox_id, kind, payload, delivery_key) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        conn.execute("UPDATE notifier_position SET last_id = %s WHERE name = 'outbox'", (events[-1][0],))
    return len(events)


def claim_due(conn: psycopg.Connection, now: datetime) -> Row | None:
    """One due pending delivery with its subscription, locked (SKIP LOCKED: notifiers share the
    work) until the caller's transaction ends."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT d.*, s.channel, s.target, s.secret FROM deliveries d JOIN subscriptions s "
            "ON s.id = d.subscription_id WHERE d.status = 'pending' AND d.next_attempt_at <= %s "
            "ORDER BY d.next_attempt_at, d.id LIMIT 1 FOR UPDATE OF d SKIP LOCKED", (now,)).fetchone()


def record_attempt(conn: psycopg.Connection, delivery_id: int, now: datetime, ok: bool, http_status: int | None,
                   error: str | None, next_at: datetime | None, failed: bool) -> None:
    status = "delivered" if ok else ("failed" if failed else "pending")
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = %s, last_http_status = %s, "
        "last_error = %s, status = %s, delivered_at = CASE WHEN %s THEN %s END, "
        "next_attempt_at = coalesce(%s, next_attempt_at) WHERE id = %s",
        (now, http_status, error, status, ok, now, next_at, delivery_id))
