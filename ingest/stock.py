"""Stock rules inside the ingest transaction: scans become movements, counts are decided against
the book in event time, balances follow the ledger, negative physical stock raises an alarm.

Concurrency: every (sku, location, lot) a batch touches is locked with a transaction-scoped
advisory lock, taken in one global order, before anything is read or written. Two workers that
touch the same stock therefore serialise (and cannot deadlock); a count reads a book that
includes every committed movement before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson
import psycopg

from core.contract import Scan
from core.gs1 import ScanCode, ScanCodeError, interpret
from core.ledger import (
    PHYSICAL_TYPES,
    BalanceKey,
    CountRequest,
    Location,
    Posting,
    ScanFacts,
    ScanRejectedError,
    ShipmentInfo,
    balance_deltas,
    count_adjustment,
    plan_scan,
    reversal_of,
)
from ingest.decode import DeadLetter

_SITE_ROLE_TYPES = ("supplier", "staging", "returns", "customer", "inventory_loss")


@dataclass(frozen=True, slots=True)
class ScanPlan:
    scan: Scan
    plan: Posting | CountRequest


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a movement comes from, for its identity (device_id, msg_id, line) and ordering."""

    device_id: str | None
    msg_id: str | None
    line: int
    source: str  # scan, count, rfid, correction


# --- resolving scans against master data ----------------------------------------------------------


def scan_payload(scan: Scan) -> bytes:
    """The scan as its device sent it (for a dead letter that can be replayed)."""
    obj: dict[str, object] = {"msg_id": scan.msg_id, "code": scan.code}
    if scan.ts_source == "device":
        obj["ts"] = scan.ts.isoformat()
    for name in ("mode", "qty", "location", "to_location", "ref"):
        value = getattr(scan, name)
        if value is not None:
            obj[name] = value
    return orjson.dumps(obj)


def _rejected(scan: Scan, prefix: str, reason: str, detail: str) -> DeadLetter:
    payload = scan_payload(scan)
    return DeadLetter(scan.received_at, f"{prefix}/dev/{scan.device_id}/scan", scan.device_id, reason, detail,
                      None, payload, len(payload))


def _locations(cur: psycopg.Cursor, codes: set[str]) -> dict[str, Location]:
    rows = cur.execute("SELECT code, site, type FROM locations WHERE code = ANY(%s)", (sorted(codes),))
    return {r[0]: Location(r[0], r[1], r[2]) for r in rows}


def resolve_scans(cur: psycopg.Cursor, scans: Sequence[Scan], prefix: str
                  ) -> tuple[list[ScanPlan], list[DeadLetter], set[tuple[str, str]]]:
    """Plan each scan; a scan that cannot become stock is a dead letter (and is not applied, so a
    replay after the master data is fixed applies it). Returns plans, letters, rejected identities."""
    if not scans:
        return [], [], set()
    devices = {r[0]: (r[1], r[2], r[3]) for r in cur.execute(
        "SELECT device_id, kind, location, mode FROM devices WHERE device_id = ANY(%s)",
        (sorted({s.device_id for s in scans}),))}
    codes: dict[int, ScanCode] = {}
    dead: list[DeadLetter] = []
    rejected: set[tuple[str, str]] = set()
    for i, scan in enumerate(scans):
        try:
            codes[i] = interpret(scan.code)
        except ScanCodeError as exc:
            dead.append(_rejected(scan, prefix, exc.reason, exc.message))
            rejected.add((scan.device_id, scan.msg_id))
    gtins = sorted({g for c in codes.values() for g in (c.gtin or c.content_gtin,) if g})
    items = {r[0].strip(): r[1] for r in cur.execute("SELECT gtin, sku FROM items WHERE gtin = ANY(%s)", (gtins,))}
    refs = sorted({s.ref for s in scans if s.ref})
    shipments = {r[0]: ShipmentInfo(r[0], r[1], r[2], r[3], r[4]) for r in cur.execute(
        "SELECT ref, vehicle, customer, origin, status FROM shipments WHERE ref = ANY(%s)", (refs,))}
    wanted = {c for s in scans for c in (s.location, s.to_location) if c}
    wanted |= {dev[1] for dev in devices.values() if dev[1]}
    wanted |= {c for sh in shipments.values() for c in (sh.vehicle, sh.customer, sh.origin)}
    # A return comes from where its serial was delivered, which may be another site's customer.
    serials = _serial_locations(cur, scans, codes, items)
    wanted |= set(serials.values())
    locations = _locations(cur, wanted)
    sites = sorted({loc.site for loc in locations.values()})
    by_type: dict[tuple[str, str], list[str]] = {}
    for code, site, type_ in cur.execute(
            "SELECT code, site, type FROM locations WHERE site = ANY(%s) AND type = ANY(%s) ORDER BY code",
            (sites, list(_SITE_ROLE_TYPES))):
        by_type.setdefault((site, type_), []).append(code)
        locations.setdefault(code, Location(code, site, type_))
    plans: list[ScanPlan] = []
    for i, scan in enumerate(scans):
        code = codes.get(i)
        if code is None:
            continue
        kind, dev_location, dev_mode = devices.get(scan.device_id, ("unknown", None, None))
        gtin = code.gtin or code.content_gtin
        sku = items.get(gtin) if gtin else None
        facts = ScanFacts(kind, dev_location, dev_mode, sku, locations,
                          {k: tuple(v) for k, v in by_type.items()},
                          shipments.get(scan.ref) if scan.ref else None,
                          serials.get((sku, code.serial)) if sku and code.serial else None)
        try:
            plans.append(ScanPlan(scan, plan_scan(scan, code, facts)))
        except ScanRejectedError as exc:
            dead.append(_rejected(scan, prefix, exc.reason, exc.message))
            rejected.add((scan.device_id, scan.msg_id))
    return plans, dead, rejected


def _serial_locations(cur: psycopg.Cursor, scans: Sequence[Scan], codes: dict[int, ScanCode],
                      items: dict[str, str]) -> dict[tuple[str, str], str]:
    wanted = [(items[g], c.serial) for i, c in codes.items()
              if scans[i].mode == "return" and c.serial and (g := c.gtin or c.content_gtin) in items]
    if not wanted:
        return {}
    rows = cur.execute("SELECT s.sku, s.serial, s.location FROM serials s "
                       "JOIN unnest(%s::text[], %s::text[]) w(sku, serial) USING (sku, serial)",
                       ([w[0] for w in wanted], [w[1] for w in wanted]))
    return {(r[0], r[1]): r[2] for r in rows}


# --- applying ----------------------------------------------------------------------------------


def lock_keys(cur: psycopg.Cursor, keys: Iterable[BalanceKey]) -> None:
    ids = sorted({int.from_bytes(hashlib.blake2b("\x1f".join(k).encode(), digest_size=8).digest(), "big",
                                 signed=True) for k in keys})
    if ids:
        cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (ids,))


def insert_movements(cur: psycopg.Cursor, rows: Sequence[tuple[Posting, Origin, int | None]]) -> list[int]:
    """Append movements; returns their ids in order. (posting, origin, reverses)."""
    if not rows:
        return []
    cols = list(zip(*[(p.ts, p.sku, p.qty, p.from_location, p.to_location, p.lot, p.serial, p.expiry, p.biz_step,
                       p.disposition, p.ref, o.device_id, o.msg_id, o.line, o.source, rev)
                      for p, o, rev in rows], strict=True))
    result = cur.execute(
        "INSERT INTO movements (ts, sku, qty, from_location, to_location, lot, serial, expiry, biz_step, "
        "disposition, ref, device_id, msg_id, line, source, reverses) "
        "SELECT ts, sku, qty, f, t, lot, serial, expiry, step, disp, ref, dev, msg, line, src, rev "
        "FROM unnest(%s::timestamptz[], %s::text[], %s::numeric[], %s::text[], %s::text[], %s::text[], "
        "%s::text[], %s::date[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[], "
        "%s::text[], %s::bigint[]) WITH ORDINALITY AS u(ts, sku, qty, f, t, lot, serial, expiry, step, disp, ref, "
        "dev, msg, line, src, rev, n) ORDER BY n RETURNING id",
        [list(c) for c in cols],
    ).fetchall()
    return [r[0] for r in result]


def apply_balances(cur: psycopg.Cursor, postings: Iterable[Posting]) -> set[BalanceKey]:
    deltas = {k: v for k, v in balance_deltas(postings).items() if v != 0}
    if not deltas:
        return set()
    keys = sorted(deltas)
    cur.execute(
        "INSERT INTO balances (sku, location, lot, qty) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[]) "
        "ON CONFLICT (sku, location, lot) DO UPDATE SET qty = balances.qty + excluded.qty",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [deltas[k] for k in keys]),
    )
    return set(keys)


def _note_expiry(cur: psycopg.Cursor, postings: Sequence[Posting]) -> None:
    dated = sorted({(p.sku, p.to_location, p.lot or "", p.expiry) for p in postings if p.expiry is not None})
    if dated:
        cur.execute("UPDATE balances b SET expiry = greatest(b.expiry, u.expiry) "
                    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::date[]) u(sku, location, lot, expiry) "
                    "WHERE (b.sku, b.location, b.lot) = "
                    "(u.sku, u.location, u.lot)",
                    ([d[0] for d in dated], [d[1] for d in dated], [d[2] for d in dated], [d[3] for d in dated]))


def _track_serials(cur: psycopg.Cursor, serials: Iterable[tuple[str, str]]) -> None:
    """Each serial's location is the destination of its newest movement in event time (net of
    reversals) — recomputed, so a late movement cannot overwrite a newer one."""
    wanted = sorted(set(serials))
    if not wanted:
        return
    skus, nums = [w[0] for w in wanted], [w[1] for w in wanted]
    cur.execute("DELETE FROM serials s USING unnest(%s::text[], %s::text[]) w(sku, serial) "
                "WHERE (s.sku, s.serial) = (w.sku, w.serial)", (skus, nums))
    cur.execute(
        "INSERT INTO serials (sku, serial, location, lot, ts, movement) "
        "SELECT DISTINCT ON (m.sku, m.serial) m.sku, m.serial, m.to_location, m.lot, m.ts, m.id "
        "FROM movements m JOIN unnest(%s::text[], %s::text[]) w(sku, serial) ON (m.sku, m.serial) = (w.sku, w.serial) "
        "WHERE m.reverses IS NULL AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id) "
        "ORDER BY m.sku, m.serial, m.ts DESC, m.id DESC", (skus, nums))


@dataclass(frozen=True, slots=True)
class _Count:
    id: int
    request: CountRequest
    device_id: str
    msg_id: str
    revision: int
    adjustment: int | None


def _book(cur: psycopg.Cursor, c: _Count) -> Decimal:
    """The balance of the count's (sku, location, lot) just before the count, in event time, over
    the net ledger (movements neither reversed nor reversals). Ties at the same instant: movements
    before counts, then by device and message id, so every arrival order decides alike."""
    r = c.request
    row = cur.execute(
        "SELECT coalesce(sum(CASE WHEN m.to_location = %(loc)s THEN m.qty ELSE -m.qty END), 0) FROM movements m "
        "WHERE m.sku = %(sku)s AND coalesce(m.lot, '') = %(lot)s "
        "AND (m.to_location = %(loc)s OR m.from_location = %(loc)s) "
        "AND m.reverses IS NULL AND NOT EXISTS (SELECT 1 FROM movements x WHERE x.reverses = m.id) "
        "AND (m.ts, CASE WHEN m.source = 'count' THEN 1 ELSE 0 END, coalesce(m.device_id, ''), "
        "     coalesce(m.msg_id, '')) < (%(ts)s, 1, %(dev)s, %(msg)s)",
        {"loc": r.location, "sku": r.sku, "lot": r.lot or "", "ts": r.ts, "dev": c.device_id, "msg": c.msg_id},
    ).fetchone()
    return Decimal(row[0]) if row else Decimal(0)


def _counts_from(cur: psycopg.Cursor, earliest: dict[BalanceKey, datetime]) -> list[_Count]:
    if not earliest:
        return []
    keys = sorted(earliest)
    rows = cur.execute(
        "SELECT c.id, c.sku, c.location, c.lot, c.ts, c.counted, c.expiry, c.loss_location, c.ref, c.device_id, "
        "c.msg_id, c.revision, c.adjustment FROM stock_counts c "
        "JOIN unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) k(sku, location, lot, since) "
        "ON (c.sku, c.location, c.lot) = (k.sku, k.location, k.lot) AND c.ts >= k.since "
        "ORDER BY c.ts, c.device_id, c.msg_id",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [earliest[k] for k in keys]),
    ).fetchall()
    return [_Count(r[0], CountRequest(r[1], r[2], r[3] or None, r[6], Decimal(r[5]), r[7], r[8], r[4]),
                   r[9], r[10], r[11], r[12]) for r in rows]


def _posting_of(cur: psycopg.Cursor, movement_id: int) -> Posting:
    r = cur.execute("SELECT sku, qty, from_location, to_location, lot, serial, expiry, biz_step, disposition, ref, ts "
                    "FROM movements WHERE id = %s", (movement_id,)).fetchone()
    assert r is not None
    return Posting(r[0], Decimal(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])


def _redecide_counts(cur: psycopg.Cursor, earliest: dict[BalanceKey, datetime]) -> list[Posting]:
    """Re-decide every count at or after the earliest new posting of its key; only a count whose
    adjustment changes gets a reversal and a new adjustment. (A count resets the book, so the
    change of one adjustment never changes a later count's.)"""
    posted: list[Posting] = []
    for count in _counts_from(cur, earliest):
        wanted = count_adjustment(count.request, _book(cur, count))
        current = _posting_of(cur, count.adjustment) if count.adjustment is not None else None
        if _same(current, wanted):
            continue
        new_rows: list[tuple[Posting, Origin, int | None]] = []
        if current is not None and count.adjustment is not None:
            new_rows.append((reversal_of(current), Origin(None, None, 0, "correction"), count.adjustment))
        if wanted is not None:
            new_rows.append((wanted, Origin(count.device_id, count.msg_id, count.revision + 1, "count"), None))
        ids = insert_movements(cur, new_rows)
        cur.execute("UPDATE stock_counts SET revision = revision + 1, adjustment = %s WHERE id = %s",
                    (ids[-1] if wanted is not None else None, count.id))
        posted.extend(p for p, _, _ in new_rows)
    return posted


def _same(current: Posting | None, wanted: Posting | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    return (current.qty, current.from_location, current.to_location) == (wanted.qty, wanted.from_location,
                                                                          wanted.to_location)


def _keys_of(p: Posting) -> tuple[BalanceKey, BalanceKey]:
    return (p.sku, p.from_location, p.lot or ""), (p.sku, p.to_location, p.lot or "")


def apply_plans(cur: psycopg.Cursor, plans: Sequence[ScanPlan], extra: Sequence[tuple[Posting, Origin]] = ()
                ) -> list[int]:
    """Record the movements and counts of newly applied messages. Returns the new movement ids."""
    postings = [(sp.plan, sp.scan) for sp in plans if isinstance(sp.plan, Posting)]
    counts = [(sp.plan, sp.scan) for sp in plans if isinstance(sp.plan, CountRequest)]
    keys: set[BalanceKey] = set()
    earliest: dict[BalanceKey, datetime] = {}

    def touch(key: BalanceKey, ts: datetime) -> None:
        keys.add(key)
        earliest[key] = min(ts, earliest.get(key, ts))

    rows: list[tuple[Posting, Origin, int | None]] = [
        (p, Origin(s.device_id, s.msg_id, 0, "scan"), None) for p, s in postings]
    rows += [(p, o, None) for p, o in extra]
    for p, _, _ in rows:
        for k in _keys_of(p):
            touch(k, p.ts)
    for c, _ in counts:
        touch((c.sku, c.location, c.lot or ""), c.ts)
        touch((c.sku, c.loss_location, c.lot or ""), c.ts)
    if not keys:
        return []
    lock_keys(cur, keys)
    ids = insert_movements(cur, rows)
    if counts:
        cur.execute(
            "INSERT INTO stock_counts (sku, location, lot, ts, counted, expiry, loss_location, ref, device_id, msg_id, "
            "revision) SELECT *, -1 FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], "
            "%s::numeric[], %s::date[], %s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
            [list(col) for col in zip(*[(c.sku, c.location, c.lot or "", c.ts, c.counted, c.expiry, c.loss_location,
                                         c.ref, s.device_id, s.msg_id) for c, s in counts], strict=True)])
    adjustments = _redecide_counts(cur, earliest)
    all_postings = [p for p, _, _ in rows] + adjustments
    apply_balances(cur, all_postings)
    _note_expiry(cur, all_postings)
    _track_serials(cur, [(p.sku, p.serial) for p in all_postings if p.serial])
    check_discrepancies(cur, keys)
    return ids


# --- alarms ------------------------------------------------------------------------------------


def check_discrepancies(cur: psycopg.Cursor, keys: Iterable[BalanceKey]) -> None:
    """Physical stock below zero is a discrepancy (the scans are the truth, the book is behind):
    one active alarm per (sku, location, lot) while it lasts, cleared when the balance recovers."""
    wanted = sorted(keys)
    if not wanted:
        return
    rows = cur.execute(
        "SELECT b.sku, b.location, b.lot, b.qty FROM balances b JOIN locations l ON l.code = b.location "
        "JOIN unnest(%s::text[], %s::text[], %s::text[]) k(sku, location, lot) "
        "ON (b.sku, b.location, b.lot) = (k.sku, k.location, k.lot) WHERE l.type = ANY(%s)",
        ([k[0] for k in wanted], [k[1] for k in wanted], [k[2] for k in wanted], sorted(PHYSICAL_TYPES)),
    ).fetchall()
    negative = [r for r in rows if r[3] < 0]
    if negative:
        cur.executemany(
            "INSERT INTO alarms (type, severity, state, location, sku, lot, subject, started_at, peak_value, "
            "message) VALUES ('stock_discrepancy', 'warning', 'active', %s, %s, %s, %s, now(), %s, %s) "
            "ON CONFLICT (type, subject) WHERE state = 'active' DO UPDATE SET "
            "peak_value = least(alarms.peak_value, excluded.peak_value), updated_at = now()",
            [(loc, sku, lot or None, f"{sku}|{loc}|{lot}", float(qty),
              f"{sku} at {loc}{' lot ' + lot if lot else ''}: book balance {qty} is below zero")
             for sku, loc, lot, qty in negative])
    recovered = [f"{sku}|{loc}|{lot}" for sku, loc, lot, qty in rows if qty >= 0]
    if recovered:
        cur.execute("UPDATE alarms SET state = 'cleared', cleared_at = now(), updated_at = now() "
                    "WHERE type = 'stock_discrepancy' AND state = 'active' AND subject = ANY(%s)", (recovered,))
