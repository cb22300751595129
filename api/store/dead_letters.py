"""Dead letters: what ingest could not accept, newest first."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.pagination import Key
from api.store.filters import Where
from api.store.records import Row


def list_dead_letters(conn: psycopg.Connection, device: str | None, reason: str | None, after: Key | None,
                      limit: int) -> list[Row]:
    w = Where()
    w.when(device, "device_id = %(device)s", "device")
    w.when(reason, "reason = %(reason)s", "reason")
    if after is not None:
        w.add("(received_at, id) < (%(a_ts)s, %(a_id)s)", a_ts=after[0], a_id=after[1])
    query = f"SELECT * FROM dead_letters {w.sql()} ORDER BY received_at DESC, id DESC LIMIT %(limit)s"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()


def payload_text(payload: bytes) -> dict[str, Any]:
    """The raw payload as JSON can carry it: the text when it is UTF-8, else base64 (and it says so)."""
    try:
        return {"payload": payload.decode("utf-8"), "payload_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(payload).decode("ascii"), "payload_encoding": "base64"}
