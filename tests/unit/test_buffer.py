"""The bridges' store-and-forward buffer: order, removal, persistence across a reopen."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from devices.buffer import OutboxBuffer, OutboxError
from devices.publisher import build_batch


def scan(n: int) -> dict[str, object]:
    return {"msg_id": f"m{n}", "ts": "2026-01-01T00:00:00+00:00", "code": f"]C1{n}\x1d"}


def test_pending_is_in_insertion_order_and_limited(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")
    for n in range(5):
        buf.append("scan", scan(n))
    entries = buf.pending(3)
    assert [e.payload["msg_id"] for e in entries] == ["m0", "m1", "m2"]
    assert [e.kind for e in entries] == ["scan"] * 3
    assert entries[0].payload == scan(0)  # the GS survives the JSON round trip
    assert len(buf) == 5
    buf.close()


def test_remove_takes_out_only_the_given_entries(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")
    for n in range(4):
        buf.append("scan", scan(n))
    first = buf.pending(10)
    buf.remove([first[0].id, first[2].id])
    buf.remove([first[0].id])  # again: a duplicate PUBACK must be harmless
    buf.remove([])
    assert [e.payload["msg_id"] for e in buf.pending(10)] == ["m1", "m3"]
    assert len(buf) == 2
    buf.close()


def test_pending_by_kind(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")
    buf.append("scan", scan(0))
    buf.append("position", {"msg_id": "p0", "ts": "2026-01-01T00:00:00+00:00", "lat": 1.0, "lon": 2.0})
    buf.append("scan", scan(1))
    assert [e.payload["msg_id"] for e in buf.pending(10, kind="scan")] == ["m0", "m1"]
    assert [e.kind for e in buf.pending(10)] == ["scan", "position", "scan"]
    buf.close()


def test_entries_and_counter_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "b.db"
    buf = OutboxBuffer(path)
    ids = [buf.next_msg_id("dev-1") for _ in range(3)]
    for n in range(3):
        buf.append("scan", scan(n))
    buf.remove([buf.pending(1)[0].id])
    buf.close()  # as a bridge that stops (or dies: every commit is already on disk)

    again = OutboxBuffer(path)
    assert [e.payload["msg_id"] for e in again.pending(10)] == ["m1", "m2"]
    more = [again.next_msg_id("dev-1") for _ in range(2)]
    again.append("scan", scan(9))
    assert [e.payload["msg_id"] for e in again.pending(10)] == ["m1", "m2", "m9"]
    # Unique across the restart, and sorted in the order they were issued.
    all_ids = ids + more
    assert len(set(all_ids)) == 5 and sorted(all_ids) == all_ids
    assert all(i.startswith("dev-1-") and len(i) <= 64 for i in all_ids)
    again.close()


def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")
    buf.close()
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_file_gets_new_msg_ids(tmp_path: Path) -> None:
    """A lost buffer file restarts the counter; the ids must still not repeat the old ones."""
    a = OutboxBuffer(tmp_path / "a.db")
    b = OutboxBuffer(tmp_path / "b.db")
    assert a.next_msg_id("d") != b.next_msg_id("d")
    a.close()
    b.close()


def test_long_device_id_keeps_msg_id_within_64(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")
    msg_id = buf.next_msg_id("x" * 64)
    assert len(msg_id) <= 64 and "x" not in msg_id
    buf.close()


def test_concurrent_appends_and_removes(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")

    def writer(base: int) -> None:
        for n in range(50):
            buf.append("scan", scan(base + n))

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(3)]
    for t in threads:
        t.start()
    removed = 0
    while any(t.is_alive() for t in threads) or len(buf):
        batch = buf.pending(20)
        buf.remove(e.id for e in batch)
        removed += len(batch)
    for t in threads:
        t.join()
    assert removed == 150 and len(buf) == 0
    buf.close()


def test_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(OutboxError, match="cannot open the bridge buffer"):
        OutboxBuffer(tmp_path / "dir.db")


def test_batches_keep_kind_order_and_size_limits(tmp_path: Path) -> None:
    buf = OutboxBuffer(tmp_path / "b.db")
    for n in range(5):
        buf.append("scan", scan(n))
    buf.append("position", {"msg_id": "p0", "ts": "2026-01-01T00:00:00+00:00", "lat": 1.0, "lon": 2.0})
    buf.append("scan", scan(9))
    entries = buf.pending(200)
    batch, payload = build_batch(entries, max_batch=3, max_bytes=200 * 1024)
    assert [e.payload["msg_id"] for e in batch] == ["m0", "m1", "m2"]
    assert payload.startswith(b"[") and payload.count(b'"msg_id"') == 3
    batch, _ = build_batch(entries, max_batch=200, max_bytes=200 * 1024)
    assert len(batch) == 5  # stops before the position
    one = len(build_batch(entries[:1], 1, 10_000)[1])
    two = 2 * one - 1  # "[a,b]" with len("[a]") == one
    batch, payload = build_batch(entries, max_batch=200, max_bytes=two)  # exactly two fit
    assert len(batch) == 2 and len(payload) == two
    batch, payload = build_batch(entries, max_batch=200, max_bytes=two - 1)
    assert len(batch) == 1 and len(payload) == one
    batch, _ = build_batch(entries, max_batch=200, max_bytes=64)  # too small for one: still sends it
    assert len(batch) == 1
    buf.close()
