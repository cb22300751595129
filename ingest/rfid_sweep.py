"""RFID gate reads to passages to movements.

A passage is final only once its tag has been silent for ``absent_after_s``, so passages are not
decided per message but by a sweep that the ingest workers run every second. Ingest notes, in the
reads' own transaction, the earliest event time of the reads each gate just committed
(``rfid_gate_pending``); the sweep derives the gate's passages (``core.rfid``) over the window from
there (minus ``HORIZON``, for the beginning of a passage those reads belong to) and diffs them with
the stored ones: a derived passage that overlaps a stored one of the same tag IS that passage
(late reads moved its first read earlier, or joined two pieces): it is updated, and its movement
reversed and re-posted only if the movement changed. So two workers committing one gate's reads
out of order, or reads buffered behind newer ones, still give one passage and one movement.

A passage with a direction and a known SGTIN becomes one movement of that serial from the outer to
the inner location (inbound) or back (outbound); the others (one zone only, peaks too close, SSCC
pallets, unknown GTINs) are kept as observations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from core.contract import Record, Rfid
from core.epc import Epc, EpcError, decode_epc
from core.ledger import Posting
from core.rfid import GateConfig, Passage, Read, passage_posting, passage_reason, passages
from ingest.stock import Origin, apply_plans
from ingest.stock_store import movements_by_id

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


@dataclass(frozen=True, slots=True)
class StoredPassage:
    id: int
    epc: str
    first_ts: datetime
    last_ts: datetime
    direction: str | None
    reason: str | None
    reads: int
    movement: int | None
    revision: int


def note_gate_reads(cur: psycopg.Cursor, applied: Sequence[Record]) -> None:
    """Remember, per gate, the earliest event time of the reads this batch commits."""
    earliest: dict[str, datetime] = {}
    for r in applied:
        if isinstance(r, Rfid) and r.reads:
            first = min(read.ts for read in r.reads)
            earliest[r.device_id] = min(first, earliest.get(r.device_id, first))
    if earliest:
        gates = sorted(earliest)
        cur.execute("INSERT INTO rfid_gate_pending (gate, since, touched_at) "
                    "SELECT g, s, clock_timestamp() FROM unnest(%s::text[], %s::timestamptz[]) u(g, s) "
                    "ON CONFLICT (gate) DO UPDATE SET since = least(rfid_gate_pending.since, excluded.since), "
                    "touched_at = excluded.touched_at", (gates, [earliest[g] for g in gates]))


def _stored(cur: psycopg.Cursor, gate: str, since: datetime) -> list[StoredPassage]:
    return [StoredPassage(*r) for r in cur.execute(
        "SELECT id, epc, first_ts, last_ts, direction, reason, reads, movement, revision FROM rfid_passages "
        "WHERE gate = %s AND last_ts >= %s ORDER BY first_ts, id", (gate, since))]


def _same_movement(current: Posting | None, wanted: Posting | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    return (current.sku, current.serial, current.from_location, current.to_location, current.ts) == (
        wanted.sku, wanted.serial, wanted.from_location, wanted.to_location, wanted.ts)


def sweep_gate(cur: psycopg.Cursor, gate: str, config: GateConfig, wall_now: datetime) -> SweepResult:
    """Passages close on the gate's own clock (its newest read), so replayed or buffered reads
    are judged in event time; once the gate has been silent on arrival for ``absent_after_s``
    nothing more can extend them, and all its passages close."""
    if not _lock_gate(cur, gate):
        return SweepResult(0, 0)
    pending = cur.execute("SELECT since, touched_at FROM rfid_gate_pending WHERE gate = %s", (gate,)).fetchone()
    if pending is None or pending[0] is None:
        return SweepResult(0, 0)
    noted_since, touched_at = pending
    since = noted_since - HORIZON
    rows = cur.execute("SELECT epc, antenna, rssi, ts, received_at FROM rfid_reads WHERE device_id = %s AND ts >= %s",
                       (gate, since)).fetchall()
    absent = timedelta(seconds=config.absent_after_s)
    found: list[Passage] = []
    still_open: list[Passage] = []
    if rows:
        newest_ts = max(r[3] for r in rows)
        newest_arrival = max(r[4] for r in rows)
        closing = newest_ts + absent if newest_arrival <= wall_now - absent else newest_ts
        # A passage starting this close to the window's edge may have begun before it: the sweep
        # that saw its beginning has recorded it.
        cutoff = since + absent
        for p in passages((Read(r[0], r[1], r[2], r[3]) for r in rows), config):
            if p.first_ts < cutoff:
                continue
            (found if p.last_ts <= closing - absent else still_open).append(p)
    result = _record(cur, gate, found, _stored(cur, gate, since)) if found else SweepResult(0, 0)
    left = min((p.first_ts for p in still_open), default=None)
    # Reads committed meanwhile (touched_at moved on) keep their own, earlier mark.
    cur.execute("UPDATE rfid_gate_pending SET since = CASE WHEN touched_at = %s THEN %s::timestamptz "
                "ELSE least(since, %s::timestamptz) END WHERE gate = %s", (touched_at, left, left, gate))
    return result


def _record(cur: psycopg.Cursor, gate: str, found: list[Passage], stored: list[StoredPassage]) -> SweepResult:
    epcs = {p.epc: _decode(p.epc) for p in found}
    gtins = sorted({e.gtin for e in epcs.values() if e is not None and e.gtin})
    skus = {r[0].strip(): r[1] for r in cur.execute("SELECT gtin, sku FROM items WHERE gtin = ANY(%s)", (gtins,))}
    current = {m.id: m.posting for m in movements_by_id(cur, [s.movement for s in stored if s.movement is not None])}
    unmatched = list(stored)
    retract: list[int] = []
    moves: list[tuple[Posting, Origin]] = []
    recorded = 0
    for p in found:
        epc = epcs[p.epc]
        sku = skus.get(epc.gtin) if epc is not None and epc.gtin else None
        reason = passage_reason(p, epc.scheme if epc is not None else None, sku)
        wanted = passage_posting(p, sku, epc.serial if epc is not None else None, reason)
        same = [s for s in unmatched if s.epc == p.epc and s.first_ts <= p.last_ts and p.first_ts <= s.last_ts]
        for s in same:
            unmatched.remove(s)
        if same:
            keep, merged = same[0], same[1:]
            # Pieces of one passage that late reads joined: one passage, one movement.
            if merged:
                retract += [s.movement for s in merged if s.movement is not None]
                cur.execute("DELETE FROM rfid_passages WHERE id = ANY(%s)", ([s.id for s in merged],))
            had = current.get(keep.movement) if keep.movement is not None else None
            changed = not _same_movement(had, wanted)
            if (keep.first_ts, keep.last_ts, keep.direction, keep.reason, keep.reads) == (
                    p.first_ts, p.last_ts, p.direction, reason, p.reads) and not changed:
                continue
            revision = keep.revision + 1 if changed else keep.revision
            cur.execute("UPDATE rfid_passages SET first_ts = %s, last_ts = %s, direction = %s, reason = %s, "
                        "reads = %s, revision = %s, movement = CASE WHEN %s THEN NULL ELSE movement END WHERE id = %s",
                        (p.first_ts, p.last_ts, p.direction, reason, p.reads, revision, changed, keep.id))
            if changed and keep.movement is not None:
                retract.append(keep.movement)
            if changed and wanted is not None:
                moves.append((wanted, Origin(gate, f"passage-{keep.id}", revision, "rfid")))
            continue
        row = cur.execute(
            "INSERT INTO rfid_passages (gate, epc, first_ts, last_ts, direction, reason, scheme, sku, serial, sscc, "
            "reads) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (gate, p.epc, p.first_ts, p.last_ts, p.direction, reason, epc.scheme if epc else "invalid", sku,
             epc.serial if epc else None, epc.sscc if epc else None, p.reads)).fetchone()
        assert row is not None
        recorded += 1
        if wanted is not None:
            moves.append((wanted, Origin(gate, f"passage-{row[0]}", 0, "rfid")))
    ids = apply_plans(cur, [], extra=moves, retract=retract)
    for (_, origin), movement_id in zip(moves, ids, strict=True):
        cur.execute("UPDATE rfid_passages SET movement = %s WHERE id = %s",
                    (movement_id, int(origin.msg_id.removeprefix("passage-"))))  # type: ignore[union-attr]
    return SweepResult(recorded, len(ids))


def sweep(conn: psycopg.Connection, wall_now: datetime | None = None) -> SweepResult:
    """Sweep every gate with reads committed since its last sweep; one transaction per gate."""
    wall_now = wall_now or datetime.now(UTC)
    # An explicit transaction even for this read: on a connection that is not in autocommit mode
    # a bare execute would leave a transaction open, and everything after it uncommitted.
    with conn.transaction():
        gates = conn.execute(
            "SELECT d.device_id, d.gate FROM rfid_gate_pending p JOIN devices d ON d.device_id = p.gate "
            "WHERE p.since IS NOT NULL AND d.kind = 'rfid_gate' AND d.gate IS NOT NULL ORDER BY 1").fetchall()
    found = movements = 0
    for gate, raw in gates:
        try:
            config = gate_config(raw)
        except (KeyError, TypeError, ValueError):
            continue  # master data validation refuses such a gate; an old row is skipped, not fatal
        with conn.transaction(), conn.cursor() as cur:
            result = sweep_gate(cur, gate, config, wall_now)
        found += result.passages
        movements += result.movements
    return SweepResult(found, movements)
