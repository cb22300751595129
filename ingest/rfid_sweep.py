"""RFID gate reads to passages to movements.

A passage is final only once its tag has been silent for ``absent_after_s``, so passages are not
decided per message but by a sweep that the ingest workers run every second: per active gate it
reads the recent reads, lets ``core.rfid`` find the closed passages, and records each one once
(unique per gate, EPC and first read). A passage with a direction and a known SGTIN becomes one
movement of that serial from the outer to the inner location (inbound) or back (outbound); the
others (one zone only, peaks too close, SSCC pallets, unknown GTINs) are kept as observations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from core.epc import Epc, EpcError, decode_epc
from core.ledger import RFID_STEP, Posting
from core.rfid import GateConfig, Passage, Read, closed_passages
from ingest.stock import Origin, apply_plans

HORIZON = timedelta(minutes=10)


@dataclass(frozen=True)
class SweepResult:
    passages: int
    movements: int


def gate_config(raw: Mapping[str, Any]) -> GateConfig:
    outer, inner = raw["outer"], raw["inner"]
    defaults = GateConfig(frozenset({0}), frozenset({1}), "outer", "inner")
    return GateConfig(outer_antennas=frozenset(int(a) for a in outer["antennas"]),
                      inner_antennas=frozenset(int(a) for a in inner["antennas"]),
                      outer_location=str(outer["location"]), inner_location=str(inner["location"]),
                      rssi_floor_dbm=float(raw.get("rssi_floor_dbm", defaults.rssi_floor_dbm)),
                      absent_after_s=float(raw.get("absent_after_s", defaults.absent_after_s)))


def _lock_gate(cur: psycopg.Cursor, gate: str) -> bool:
    key = int.from_bytes(hashlib.blake2b(f"gate\x1f{gate}".encode(), digest_size=8).digest(), "big", signed=True)
    row = cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])  # another worker is sweeping this gate right now: leave it to it


def _decode(epc: str) -> Epc | None:
    try:
        return decode_epc(epc)
    except EpcError:
        return None


def _record(cur: psycopg.Cursor, gate: str, p: Passage, epc: Epc | None, sku: str | None) -> int | None:
    reason = p.reason
    if reason is None and (epc is None or epc.scheme != "sgtin"):
        reason = "not_a_trade_item"
    elif reason is None and sku is None:
        reason = "unknown_gtin"
    row = cur.execute(
        "INSERT INTO rfid_passages (gate, epc, first_ts, last_ts, direction, reason, scheme, sku, serial, sscc, reads) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (gate, epc, first_ts) DO NOTHING RETURNING id",
        (gate, p.epc, p.first_ts, p.last_ts, p.direction, reason, epc.scheme if epc else "invalid", sku,
         epc.serial if epc else None, epc.sscc if epc else None, p.reads)).fetchone()
    return None if row is None else int(row[0])


def sweep_gate(cur: psycopg.Cursor, gate: str, config: GateConfig, wall_now: datetime) -> SweepResult:
    """Passages close on the gate's own clock (its newest read), so replayed or buffered reads
    are judged in event time; once the gate has been silent on arrival for ``absent_after_s``
    nothing more can extend them, and all its passages close."""
    if not _lock_gate(cur, gate):
        return SweepResult(0, 0)
    clock = cur.execute("SELECT max(ts), max(received_at) FROM rfid_reads WHERE device_id = %s "
                        "AND received_at > %s", (gate, wall_now - HORIZON)).fetchone()
    if clock is None or clock[0] is None:
        return SweepResult(0, 0)
    newest_ts, newest_arrival = clock
    absent = timedelta(seconds=config.absent_after_s)
    closing = newest_ts + absent if newest_arrival <= wall_now - absent else newest_ts
    since = newest_ts - HORIZON
    reads = [Read(r[0], r[1], r[2], r[3]) for r in cur.execute(
        "SELECT epc, antenna, rssi, ts FROM rfid_reads WHERE device_id = %s AND ts > %s", (gate, since))]
    # A passage starting this close to the window's edge may have begun before it: an earlier
    # sweep, which saw its beginning, has recorded it.
    cutoff = since + absent
    found = [p for p in closed_passages(reads, config, closing) if p.first_ts >= cutoff]
    if not found:
        return SweepResult(0, 0)
    epcs = {p.epc: _decode(p.epc) for p in found}
    gtins = sorted({e.gtin for e in epcs.values() if e is not None and e.gtin})
    skus = {r[0].strip(): r[1] for r in cur.execute("SELECT gtin, sku FROM items WHERE gtin = ANY(%s)", (gtins,))}
    moves: list[tuple[Posting, Origin]] = []
    recorded = 0
    for p in found:
        epc = epcs[p.epc]
        sku = skus.get(epc.gtin) if epc is not None and epc.gtin else None
        passage_id = _record(cur, gate, p, epc, sku)
        if passage_id is None:
            continue  # recorded by an earlier sweep
        recorded += 1
        if p.direction is None or sku is None or p.from_location is None or p.to_location is None:
            continue
        step, disposition = RFID_STEP[p.direction]
        moves.append((Posting(sku, Decimal(1), p.from_location, p.to_location, None,
                              epc.serial if epc else None, None, step, disposition, None, p.ts),
                      Origin(gate, f"passage-{passage_id}", 0, "rfid")))
    ids = apply_plans(cur, [], extra=moves)
    for (_, origin), movement_id in zip(moves, ids, strict=True):
        cur.execute("UPDATE rfid_passages SET movement = %s WHERE id = %s",
                    (movement_id, int(origin.msg_id.removeprefix("passage-"))))  # type: ignore[union-attr]
    return SweepResult(recorded, len(ids))


def sweep(conn: psycopg.Connection, wall_now: datetime | None = None) -> SweepResult:
    """Sweep every gate that has sent reads recently; one transaction per gate."""
    wall_now = wall_now or datetime.now(UTC)
    # An explicit transaction even for this read: on a connection that is not in autocommit mode
    # a bare execute would leave a transaction open, and everything after it uncommitted.
    with conn.transaction():
        gates = conn.execute(
            "SELECT d.device_id, d.gate FROM devices d JOIN device_state s USING (device_id) "
            "WHERE d.kind = 'rfid_gate' AND d.gate IS NOT NULL AND s.last_seen > %s ORDER BY 1",
            (wall_now - HORIZON,)).fetchall()
    passages = movements = 0
    for gate, raw in gates:
        try:
            config = gate_config(raw)
        except (KeyError, TypeError, ValueError):
            continue  # master data validation refuses such a gate; an old row is skipped, not fatal
        with conn.transaction(), conn.cursor() as cur:
            result = sweep_gate(cur, gate, config, wall_now)
        passages += result.passages
        movements += result.movements
    return SweepResult(passages, movements)
