"""The storage side of ingest: one batch, one transaction, each message applied once.

The caller owns the transaction (so the rules of later stages join it); these functions only
issue statements on the cursor they are given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from core.contract import EnvReading, Position, Record, Rfid, Scan, Status
from ingest.decode import DeadLetter

_COPY: dict[type, str] = {
    Scan: "COPY scans (ts, received_at, ts_source, device_id, msg_id, code, mode, qty, location, "
          "to_location, ref) FROM STDIN",
    Rfid: "COPY rfid_reads (ts, received_at, device_id, msg_id, read_no, epc, antenna, rssi) FROM STDIN",
    Position: "COPY positions (ts, received_at, device_id, msg_id, lat, lon, speed_kmh, heading_deg, alt_m, "
              "accuracy_m, source, fix_valid) FROM STDIN",
    EnvReading: "COPY env_readings (ts, received_at, device_id, msg_id, temp_c, rh_pct, probe) FROM STDIN",
    Status: "COPY device_status (ts, received_at, ts_source, device_id, msg_id, battery_pct, rssi_dbm, fw, "
            "uptime_s) FROM STDIN",
}
_KIND_NAME: dict[type, str] = {Scan: "scan", Rfid: "rfid", Position: "position", EnvReading: "env",
                               Status: "status"}


@dataclass(frozen=True, slots=True)
class BatchResult:
    applied: list[Record]  # new messages, in arrival order
    duplicates: int
    dead_letters: int
    dead_reasons: tuple[tuple[str, str], ...] = ()  # (reason, topic) of each dead letter, for metrics


def known_devices(cur: psycopg.Cursor, device_ids: Collection[str]) -> set[str]:
    rows = cur.execute("SELECT device_id FROM devices WHERE device_id = ANY(%s)", (list(device_ids),))
    return {row[0] for row in rows}


def claim_new(cur: psycopg.Cursor, records: Sequence[Record]) -> list[Record]:
    """Record the identities; return only the records whose (device_id, msg_id) is new."""
    if not records:
        return []
    unique: dict[tuple[str, str], Record] = {}
    for r in records:
        unique.setdefault((r.device_id, r.msg_id), r)
    keys = sorted(unique)  # one lock order for every worker: no deadlock between them
    rows = cur.execute(
        "INSERT INTO message_ids (device_id, msg_id, kind, received_at) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
        "ON CONFLICT DO NOTHING RETURNING device_id, msg_id",
        ([k[0] for k in keys], [k[1] for k in keys], [_KIND_NAME[type(unique[k])] for k in keys],
         [unique[k].received_at for k in keys]),
    ).fetchall()
    fresh = {(row[0], row[1]) for row in rows}
    return [r for k, r in unique.items() if k in fresh]


def _rows(record: Record) -> Iterable[tuple[object, ...]]:
    r = record
    if isinstance(r, EnvReading):
        yield (r.ts, r.received_at, r.device_id, r.msg_id, r.temp_c, r.rh_pct, r.probe)
    elif isinstance(r, Position):
        yield (r.ts, r.received_at, r.device_id, r.msg_id, r.lat, r.lon, r.speed_kmh, r.heading_deg,
               r.alt_m, r.accuracy_m, r.source, r.fix_valid)
    elif isinstance(r, Scan):
        yield (r.ts, r.received_at, r.ts_source, r.device_id, r.msg_id, r.code, r.mode, r.qty, r.location,
               r.to_location, r.ref)
    elif isinstance(r, Rfid):
        for i, read in enumerate(r.reads):
            yield (read.ts, r.received_at, r.device_id, r.msg_id, i, read.epc, read.antenna, read.rssi)
    else:
        yield (r.ts, r.received_at, r.ts_source, r.device_id, r.msg_id, r.battery_pct, r.rssi_dbm, r.fw,
               r.uptime_s)


def copy_records(cur: psycopg.Cursor, records: Sequence[Record]) -> None:
    by_type: dict[type, list[Record]] = defaultdict(list)
    for r in records:
        by_type[type(r)].append(r)
    for record_type, group in by_type.items():
        with cur.copy(_COPY[record_type]) as copy:
            for record in group:
                for row in _rows(record):
                    copy.write_row(row)


def touch_devices(cur: psycopg.Cursor, records: Sequence[Record]) -> None:
    """last_seen / last_ts / message count per device, and the device's own rhythm: a moving
    average of the spacing of its messages in device time (newer device times only: a late flush
    says nothing of it). Sorted so that concurrent workers lock rows in one order."""
    state: dict[str, tuple[datetime, datetime, datetime, int]] = {}
    for r in records:
        seen, first, last, n = state.get(r.device_id, (r.received_at, r.ts, r.ts, 0))
        state[r.device_id] = (max(seen, r.received_at), min(first, r.ts), max(last, r.ts), n + 1)
    if not state:
        return
    ids = sorted(state)
    spacing = [(state[i][2] - state[i][1]).total_seconds() / (state[i][3] - 1) if state[i][3] > 1 else None
               for i in ids]
    cur.execute(
        "INSERT INTO device_state (device_id, last_seen, last_ts, messages, expected_interval_s) "
        "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[], %s::float8[]) "
        "ON CONFLICT (device_id) DO UPDATE SET "
        # SET sees the row's old values: the sample is the gap since the newest message known before.
        "expected_interval_s = CASE WHEN excluded.last_ts <= device_state.last_ts "
        "  THEN coalesce(device_state.expected_interval_s, excluded.expected_interval_s) "
        "WHEN device_state.expected_interval_s IS NULL "
        "  THEN extract(epoch FROM excluded.last_ts - device_state.last_ts) / excluded.messages "
        "ELSE 0.8 * device_state.expected_interval_s "
        "  + 0.2 * extract(epoch FROM excluded.last_ts - device_state.last_ts) / excluded.messages END, "
        "last_seen = greatest(device_state.last_seen, excluded.last_seen), "
        "last_ts = greatest(device_state.last_ts, excluded.last_ts), "
        "messages = device_state.messages + excluded.messages",
        (ids, [state[i][0] for i in ids], [state[i][2] for i in ids], [state[i][3] for i in ids], spacing),
    )


def store_dead_letters(cur: psycopg.Cursor, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    letters = sorted(letters, key=lambda d: d.fingerprint)  # one lock order across workers
    cur.executemany(
        "INSERT INTO dead_letters (received_at, last_received_at, topic, device_id, reason, detail, "
        "element_index, payload, payload_size, fingerprint) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (fingerprint) DO UPDATE SET occurrences = dead_letters.occurrences + 1, "
        "last_received_at = greatest(dead_letters.last_received_at, excluded.last_received_at)",
        [(d.received_at, d.received_at, d.topic, d.device_id, d.reason, d.detail, d.element_index, d.payload,
          d.payload_size, d.fingerprint) for d in letters],
    )


def write_batch(cur: psycopg.Cursor, records: Sequence[Record], dead: Sequence[DeadLetter]) -> BatchResult:
    applied = claim_new(cur, records)
    copy_records(cur, applied)
    touch_devices(cur, applied)
    store_dead_letters(cur, dead)
    return BatchResult(applied, len(records) - len(applied), len(dead), tuple((d.reason, d.topic) for d in dead))
