"""Retention: drop whole chunks past each table's age (TimescaleDB ``drop_chunks``), and trim the
plain tables (dead letters, the de-duplication identities) by time."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from runtime.settings import Settings

HYPERTABLES = ("scans", "rfid_reads", "positions", "env_readings", "device_status")
_DELETE_BATCH = 50_000


@dataclass(frozen=True)
class RetentionReport:
    chunks_dropped: dict[str, int]
    dead_letters_deleted: int
    message_ids_deleted: int
    outbox_deleted: int = 0


def retention_days(settings: Settings) -> dict[str, int]:
    return {table: int(getattr(settings, f"retention_{table}_days")) for table in HYPERTABLES}


def _delete_older(conn: psycopg.Connection, table: str, column: str, days: int) -> int:
    """Delete in bounded batches so that a large backlog never holds one long lock."""
    total = 0
    while True:
        with conn.transaction():
            cur = conn.execute(sql.SQL(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} "
                "WHERE {c} < now() - make_interval(days => %s) LIMIT %s))",
            ).format(t=sql.Identifier(table), c=sql.Identifier(column)), (days, _DELETE_BATCH))
            total += cur.rowcount
        if cur.rowcount < _DELETE_BATCH:
            return total


def apply_retention(conn: psycopg.Connection, settings: Settings) -> RetentionReport:
    dropped: dict[str, int] = {}
    for table, days in retention_days(settings).items():
        if days <= 0:
            continue
        with conn.transaction():
            rows = conn.execute("SELECT drop_chunks(%s::regclass, older_than => make_interval(days => %s))",
                                (table, days)).fetchall()
        dropped[table] = len(rows)
    dead = (_delete_older(conn, "dead_letters", "last_received_at", settings.retention_dead_letters_days)
            if settings.retention_dead_letters_days > 0 else 0)
    ids = _delete_older(conn, "message_ids", "received_at", settings.dedupe_window_days)
    # The live-event outbox only serves reconnecting dashboards (Last-Event-ID): a week is plenty.
    outbox = _delete_older(conn, "events_outbox", "ts", 7)
    return RetentionReport(dropped, dead, ids, outbox)
