"""Stock inside the ingest transaction: scans are resolved against master data and planned
(``core.ledger.plan_scan``), then every stock decision -- counts, balances, expiry, serial
locations, discrepancy episodes -- is made by ``core.stock_rules.derive_stock`` over the window of
event-time history the new postings can affect, loaded and written back through
``ingest.stock_store`` (the one seam: it locks, loads, and applies only the difference).

Concurrency: every (sku, location, lot) a batch touches is locked with a transaction-scoped
advisory lock, taken in one global order, before anything is read or written. Two workers that
touch the same stock therefore serialise (and cannot deadlock); a count is decided against a book
that includes every committed movement before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson
import psycopg

from core.contract import Scan
from core.gs1 import ScanCode, ScanCodeError, interpret
from core.ledger import (
    BalanceKey,
    CountRequest,
    Location,
    PendingReturn,
    Posting,
    ScanFacts,
    ScanRejectedError,
    ShipmentInfo,
    plan_scan,
    reversal_of,
)
from core.stock_rules import (
    Identity,
    PlannedCount,
    PlannedPosting,
    StockHistory,
    derive_stock,
    key_from,
    key_to,
)
from ingest import stock_store as store
from ingest.decode import DeadLetter
from ingest.stock_store import NewMovement, Origin, lock_keys

__all__ = ["Origin", "ScanPlan", "apply_plans", "lock_keys", "resolve_scans", "scan_payload"]

_SITE_ROLE_TYPES = ("supplier", "staging", "returns", "customer", "inventory_loss")


@dataclass(frozen=True, slots=True)
class ScanPlan:
    scan: Scan
    plan: Posting | CountRequest | PendingReturn


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
    # Before reading where any serial is: see store.lock_serials (the park/unpark race).
    store.lock_serials(cur, {(items[g], c.serial) for c in codes.values()
                             if c.serial and (g := c.gtin or c.content_gtin) in items})
    refs = sorted({s.ref for s in scans if s.ref})
    shipments = {r[0]: ShipmentInfo(r[0], r[1], r[2], r[3], r[4]) for r in cur.execute(
        "SELECT ref, vehicle, customer, origin, status FROM shipments WHERE ref = ANY(%s)", (refs,))}
    wanted = {c for s in scans for c in (s.location, s.to_location) if c}
    wanted |= {dev[1] for dev in devices.values() if dev[1]}
    wanted |= {c for sh in shipments.values() for c in (sh.vehicle, sh.customer, sh.origin)}
    # A return comes from where its serial was delivered, which may be another site's customer.
    serials = _serial_locations(cur, scans, codes, items, {d: v[2] for d, v in devices.items()})
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
                          serials.get((sku, code.serial, scan.ts)) if sku and code.serial else None)
        try:
            plans.append(ScanPlan(scan, plan_scan(scan, code, facts)))
        except ScanRejectedError as exc:
            dead.append(_rejected(scan, prefix, exc.reason, exc.message))
            rejected.add((scan.device_id, scan.msg_id))
    return plans, dead, rejected


def _serial_locations(cur: psycopg.Cursor, scans: Sequence[Scan], codes: dict[int, ScanCode],
                      items: dict[str, str], device_modes: dict[str, str | None]
                      ) -> dict[tuple[str, str, datetime], str]:
    """Where the serial of each return was just before the return, in event time. The mode is the
    message's or else its device's default: a return is a return however it was configured."""
    wanted = [(items[g], c.serial, scans[i].ts) for i, c in codes.items()
              if (scans[i].mode or device_modes.get(scans[i].device_id)) == "return" and c.serial
              and (g := c.gtin or c.content_gtin) in items]
    return store.serial_location_before(cur, wanted)


# --- applying ----------------------------------------------------------------------------------


def apply_plans(cur: psycopg.Cursor, plans: Sequence[ScanPlan], extra: Sequence[tuple[Posting, Origin]] = (),
                retract: Sequence[int] = ()) -> list[int]:
    """Record the movements and counts of newly applied messages (and retract the movements in
    ``retract``: reversed, never edited). Returns the new movements' ids, in order (scans first,
    then ``extra``). Returns whose serial was not delivered yet are parked; each batch that moves
    a serial books the parked returns of that serial it makes decidable."""
    moves = [NewMovement(sp.plan, Origin(sp.scan.device_id, sp.scan.msg_id, 0, "scan"))
             for sp in plans if isinstance(sp.plan, Posting)]
    moves += [NewMovement(p, o) for p, o in extra]
    store.lock_serials(cur, {(m.posting.sku, m.posting.serial) for m in moves if m.posting.serial})
    counts = [PlannedCount(sp.plan, Identity(sp.scan.device_id, sp.scan.msg_id))
              for sp in plans if isinstance(sp.plan, CountRequest)]
    store.park_returns(cur, [(sp.plan.sku, sp.plan.serial, sp.scan) for sp in plans
                             if isinstance(sp.plan, PendingReturn)])
    ids = apply_stock(cur, moves, counts, retract)
    _book_parked_returns(cur, {(m.posting.sku, m.posting.serial) for m in moves if m.posting.serial})
    return ids


def _book_parked_returns(cur: psycopg.Cursor, serials: set[tuple[str, str]]) -> None:
    parked = store.parked_returns(cur, serials)
    if not parked:
        return
    plans, _, _ = resolve_scans(cur, parked, "")  # a return that still cannot be booked stays parked
    ready = [sp for sp in plans if isinstance(sp.plan, Posting)]
    store.unpark(cur, [sp.scan for sp in ready])
    if ready:
        apply_plans(cur, ready)


def _identity(origin: Origin) -> Identity:
    return Identity(origin.device_id or "", origin.msg_id or "", origin.line)


def _same(current: Posting | None, wanted: Posting | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    return (current.qty, current.from_location, current.to_location) == (wanted.qty, wanted.from_location,
                                                                          wanted.to_location)


def apply_stock(cur: psycopg.Cursor, moves: Sequence[NewMovement], counts: Sequence[PlannedCount],
                retract: Sequence[int] = ()) -> list[int]:
    """Lock, load the window the new postings can affect, derive it in core, write the difference."""
    retracted = store.movements_by_id(cur, retract)
    earliest: dict[BalanceKey, datetime] = {}

    def touch(key: BalanceKey, ts: datetime) -> None:
        earliest[key] = min(ts, earliest.get(key, ts))

    for p in [m.posting for m in moves] + [r.posting for r in retracted]:
        touch(key_from(p), p.ts)
        touch(key_to(p), p.ts)
    for planned in counts:
        request = planned.request
        touch((request.sku, request.location, request.lot or ""), request.ts)
        touch((request.sku, request.loss_location, request.lot or ""), request.ts)
    if not earliest:
        return []
    keys, since = _window_keys(cur, set(earliest), min(earliest.values()))
    store.insert_counts(cur, counts)
    window = store.load_window(cur, keys, since)

    # The balance just before the window: what is stored minus what the window's movements did.
    opening = {k: window.balances.get(k, Decimal(0)) for k in keys}
    for m in window.movements:
        for key, sign in ((key_from(m.posting), -1), (key_to(m.posting), 1)):
            if key in opening:
                opening[key] -= sign * m.posting.qty
    retracted_ids = {r.id for r in retracted}
    redecided = {c.adjustment.id for c in window.counts if c.adjustment is not None}
    fixed = [m.planned for m in window.movements if m.id not in retracted_ids and m.id not in redecided]
    serials = {(p.sku, p.serial) for p in [m.posting for m in moves] + [r.posting for r in retracted] if p.serial}
    serial_rows = [m for m in store.serial_history(cur, serials) if m.id not in retracted_ids]
    history = StockHistory(
        postings=(*fixed, *(PlannedPosting(m.posting, _identity(m.origin)) for m in moves)),
        counts=tuple(c.planned for c in window.counts),
        locations=store.location_types(cur, {k[1] for k in keys}),
        opening=opening, since=since, serial_history=tuple(m.planned for m in serial_rows))
    state = derive_stock(history)

    rows = [NewMovement(reversal_of(r.posting), Origin(None, None, 0, "correction"), r.id) for r in retracted]
    first_new = len(rows)
    rows += moves
    count_updates: list[tuple[int, int, int | None]] = []  # (count id, revision, index of its adjustment in rows)
    for c in window.counts:
        wanted = state.adjustments.get(c.planned.identity)
        current = c.adjustment.posting if c.adjustment is not None else None
        if _same(current, wanted):
            continue
        if c.adjustment is not None:
            rows.append(NewMovement(reversal_of(c.adjustment.posting), Origin(None, None, 0, "correction"),
                                    c.adjustment.id))
        at = None
        if wanted is not None:
            at = len(rows)
            rows.append(NewMovement(wanted, Origin(c.planned.identity.device_id, c.planned.identity.msg_id,
                                                   c.revision + 1, "count")))
        count_updates.append((c.id, c.revision + 1, at))
    ids = store.insert_movements(cur, rows)
    for count_id, revision, at in count_updates:
        store.set_count_adjustment(cur, count_id, revision, ids[at] if at is not None else None)

    store.write_balances(cur, {k: state.balances.get(k, Decimal(0)) for k in keys}, window.balances,
                         {k: v for k, v in state.expiry.items() if k in keys})
    movement_ids = {m.identity: m.id for m in (*window.movements, *serial_rows)}
    movement_ids.update({_identity(m.origin): i for m, i in zip(moves, ids[first_new:first_new + len(moves)],
                                                                strict=True)})
    store.write_serials(cur, serials, {s: state.serials[s] for s in serials if s in state.serials}, movement_ids)
    store.write_discrepancies(cur, window.alarms, [e for e in state.discrepancies if e.key in keys])
    return ids[first_new:first_new + len(moves)]


def _window_keys(cur: psycopg.Cursor, keys: set[BalanceKey], earliest: datetime) -> tuple[set[BalanceKey], datetime]:
    """Lock the keys and find where their window starts. A re-decided count also moves stock at
    its inventory-loss location, and an episode open at the window's start moves the start back:
    both can widen the set, so this repeats until it is stable (it locks more only in the rare
    case a key turns up after the first lock, a brief departure from the global lock order)."""
    locked: set[BalanceKey] = set()
    while True:
        since = store.episode_start(cur, keys, earliest)
        wider = keys | store.loss_keys(cur, keys, since)
        if wider <= locked:
            return wider, since
        lock_keys(cur, wider - locked)
        locked |= wider
        keys = wider

