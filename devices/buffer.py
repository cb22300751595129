"""Store-and-forward outbox of a device bridge: messages wait on disk until the broker has them.

One SQLite file per bridge. WAL mode with ``synchronous=FULL`` fsyncs every commit, so a message
appended before a power cut is still there afterwards; the publisher removes entries only after
their PUBACK. The same file holds the msg_id counter, so ids stay unique across restarts.

All methods are thread-safe (the serial reader appends while the publisher's flush thread reads
and removes): one connection, one lock, short transactions.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, so order holds
    kind    TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_MAX_MSG_ID: Final = 64  # CONTRACT s.1


class OutboxError(Exception):
    """The buffer file cannot be used; the message names the file and what to check."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    kind: str
    payload: dict[str, Any]


class OutboxBuffer:
    """Pending messages in insertion order, persisted in the SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), never implicit.
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open the bridge buffer {self.path}: {exc}; check the path is a "
                              "writable local file (not on a network share) and not corrupted") from exc
        if not mode or str(mode[0]).lower() != "wal":
            self._conn.close()
            raise OutboxError(f"the bridge buffer {self.path} cannot use WAL mode (got {mode}); "
                              "put it on a local file system")
        self._stream = self._stream_id()

    # --- messages -------------------------------------------------------------------------------

    def append(self, kind: str, message: dict[str, Any]) -> None:
        payload = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        self._write("append to", "INSERT INTO outbox (kind, payload) VALUES (?, ?)", (kind, payload))

    def pending(self, limit: int, kind: str | None = None) -> list[Entry]:
        """The oldest ``limit`` entries (of ``kind`` if given), oldest first."""
        params: tuple[object, ...]
        if kind is None:
            sql, params = "SELECT id, kind, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
        else:
            sql, params = "SELECT id, kind, payload FROM outbox WHERE kind = ? ORDER BY id LIMIT ?", (kind, limit)
        with self._lock:
            try:
                rows = self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
        return [Entry(int(r[0]), str(r[1]), json.loads(r[2])) for r in rows]

    def remove(self, ids: Iterable[int]) -> None:
        wanted = [(int(i),) for i in ids]
        if not wanted:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("DELETE FROM outbox WHERE id = ?", wanted)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error("remove from", exc) from exc

    def __len__(self) -> int:
        with self._lock:
            try:
                row = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
            except sqlite3.Error as exc:
                raise self._error("count", exc) from exc
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- message ids ----------------------------------------------------------------------------

    def next_msg_id(self, device_id: str) -> str:
        """``<device>-<stream>-<counter>``: unique per device across restarts, sortable in order.

        The counter lives in this file and is committed before the id is used. The stream part is
        random per buffer file: a deleted or replaced file restarts the counter, and without it
        the new messages would repeat old msg_ids and be dropped by the server as duplicates.
        The device id is left out when it would make the id longer than the contract's 64.
        """
        number = self._next_counter()
        tail = f"{self._stream}-{number:010d}"
        full = f"{device_id}-{tail}"
        return full if len(full) <= _MAX_MSG_ID else tail

    def _next_counter(self) -> int:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                row = self._conn.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()
                number = int(row[0]) + 1 if row else 1
                self._conn.execute("INSERT INTO meta (key, value) VALUES ('counter', ?) "
                                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(number),))
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error("update the msg_id counter in", exc) from exc
        return number

    def _stream_id(self) -> str:
        candidate = secrets.token_hex(4)
        # INSERT OR IGNORE then SELECT: the first opener of the file decides, later ones read it.
        self._write("initialise", "INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', ?)", (candidate,))
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()
        return str(row[0])

    # --- helpers --------------------------------------------------------------------------------

    def _write(self, what: str, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error(what, exc) from exc

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the original error is the one worth reporting
                self._conn.execute("ROLLBACK")

    def _error(self, what: str, exc: sqlite3.Error) -> OutboxError:
        hint = " (disk full?)" if isinstance(exc, sqlite3.OperationalError) else ""
        return OutboxError(f"cannot {what} the bridge buffer {self.path}: {exc}{hint}")
