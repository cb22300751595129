"""The one seam between the stock rules (``core.stock_rules``) and the database.

It locks the (sku, location, lot) keys a batch touches, loads the window of stored history the
new postings can affect, and writes back the difference between what core derived and what is
stored. Typed rows only; no stock decision is made here.

The window. Every key of the batch is loaded from one instant ``since`` onwards: the earliest new
posting, moved back to the start of any stored discrepancy episode still open at that instant (so
an episode is always re-derived whole and keeps its real start). The balance just before the
window is the stored balance minus the window's stored movements, so a key that was never counted
costs no more than one that was: the cost is the size of the window, never of the history.

Discrepancy alarms are diffed per key: a derived episode that overlaps a stored alarm IS that
alarm (id, acknowledgement and notes kept; start, end and peak updated in event time); a derived
episode with no stored alarm is inserted; a stored alarm that no longer happened is deleted,
unless someone acknowledged it or worked a ticket that names it: then it is kept as ``withdrawn``
(a state the rules never derive), with its notes, as the record of what was seen
(core.withdrawal). (Deleting the rest is what makes the alarms the same in every arrival order:
an alarm only an early arrival order opened must not survive.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import psycopg

from core.contract import Scan
from core.ledger import BalanceKey, CountRequest, Posting
from core.stock_rules import Episode, Identity, PlannedCount, PlannedPosting, SerialAt, SerialKey
from core.withdrawal import WITHDRAWN
from ingest.alarm_withdrawal import withdraw_alarms

DISCREPANCY = "stock_discrepancy"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a movement comes from, for its identity (device_id, msg_id, line) and ordering."""

    device_id: str | None
    msg_id: str | None
    line: int
    source: str  # scan, count, rfid, correction


@dataclass(frozen=True, slots=True)
class NewMovement:
    posting: Posting
    origin: Origin
    reverses: int | None = None


@dataclass(frozen=True, slots=True)
class MovementRow:
    """A stored movement of the net ledger (neither reversed nor a reversal)."""

    id: int
    posting: Posting
    identity: Identity
    source: str

    @property
    def planned(self) -> PlannedPosting:
        return PlannedPosting(self.posting, self.identity)


@dataclass(frozen=True, slots=True)
class CountRow:
    id: int
    planned: PlannedCount
    revision: int
    adjustment: MovementRow | None


@dataclass(frozen=True, slots=True)
class AlarmRow:
    id: int
    key: BalanceKey
    state: str
    started_at: datetime
    cleared_at: datetime | None
    peak: float | None
    acknowledged: bool


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    movements: list[MovementRow]          # every net movement touching a key, at or after since
    counts: list[CountRow]                # every count of a key at or after since
    balances: dict[BalanceKey, Decimal]   # stored balances of the keys (now)
    alarms: list[AlarmRow]                # stored discrepancy alarms of the keys overlapping the window


def subject(key: BalanceKey) -> str:
    return "|".join(key)


def _columns(keys: Iterable[BalanceKey]) -> tuple[list[str], list[str], list[str]]:
    ordered = sorted(keys)
    return [k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]


# --- locking ----------------------------------------------------------------------------------


def lock_keys(cur: psycopg.Cursor, keys: Iterable[BalanceKey]) -> None:
    """Transaction-scoped advisory locks in one global order: two workers touching the same stock
    serialise and cannot deadlock."""
    ids = sorted({int.from_bytes(hashlib.blake2b("\x1f".join(k).encode(), digest_size=8).digest(), "big",
                                 signed=True) for k in keys})
    if ids:
        cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (ids,))


def lock_serials(cur: psycopg.Cursor, serials: Iterable[SerialKey]) -> None:
    """Advisory locks on (sku, serial), taken before any balance key: whoever decides where a
    serial is (a return parked because its delivery is unknown, a movement of the serial that
    books the parked returns it makes decidable) holds it, so a return parked by one worker while
    another commits the serial's delivery cannot be missed by both."""
    lock_keys(cur, [("\x1eserial", sku, serial) for sku, serial in serials])


# --- reading ----------------------------------------------------------------------------------

_MOVEMENT_COLUMNS = ("m.id, m.sku, m.qty, m.from_location, m.to_location, m.lot, m.serial, m.expiry, m.biz_step, "
                     "m.disposition, m.ref, m.ts, m.device_id, m.msg_id, m.line, m.source")
_NET = "m.reverses IS NULL AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)"


def _movement(r: Sequence[object]) -> MovementRow:
    posting = Posting(str(r[1]), Decimal(str(r[2])), str(r[3]), str(r[4]), r[5], r[6], r[7], str(r[8]),  # type: ignore[arg-type]
                      str(r[9] or ""), r[10], r[11])  # type: ignore[arg-type]
    return MovementRow(int(r[0]), posting, Identity(str(r[12] or ""), str(r[13] or ""), int(r[14])),  # type: ignore[call-overload]
                       str(r[15]))


def movements_by_id(cur: psycopg.Cursor, ids: Sequence[int]) -> list[MovementRow]:
    if not ids:
        return []
    return [_movement(r) for r in cur.execute(
        f"SELECT {_MOVEMENT_COLUMNS} FROM movements m WHERE m.id = ANY(%s) ORDER BY m.id", (list(ids),))]


def episode_start(cur: psycopg.Cursor, keys: Iterable[BalanceKey], since: datetime) -> datetime:
    """``since`` moved back to the start of every stored episode of the keys still open at it
    (repeated: an episode reached that way may open a window onto another key's)."""
    subjects = sorted(subject(k) for k in keys)
    for _ in range(8):
        row = cur.execute("SELECT min(started_at) FROM alarms WHERE type = %s AND subject = ANY(%s) "
                          "AND started_at < %s AND (cleared_at IS NULL OR cleared_at >= %s)",
                          (DISCREPANCY, subjects, since, since)).fetchone()
        if row is None or row[0] is None:
            break
        since = row[0]
    return since


def loss_keys(cur: psycopg.Cursor, keys: set[BalanceKey], since: datetime) -> set[BalanceKey]:
    """The inventory-loss keys of the counts of the keys at or after ``since``."""
    skus, locs, lots = _columns(keys)
    return {(r[0], r[1], r[2]) for r in cur.execute(
        "SELECT DISTINCT c.sku, c.loss_location, c.lot "
        "FROM unnest(%s::text[], %s::text[], %s::text[]) k(sku, loc, lot) "
        "JOIN stock_counts c ON (c.sku, c.location, c.lot) = (k.sku, k.loc, k.lot) AND c.ts >= %s",
        (skus, locs, lots, since))}


def load_window(cur: psycopg.Cursor, keys: set[BalanceKey], since: datetime) -> Window:
    skus, locs, lots = _columns(keys)
    found: dict[int, MovementRow] = {}
    # One query per side, each on its own (sku, location, ts) index, with a constant time bound.
    for side in ("to_location", "from_location"):
        for r in cur.execute(
                f"SELECT {_MOVEMENT_COLUMNS} FROM unnest(%s::text[], %s::text[], %s::text[]) k(sku, loc, lot) "
                f"JOIN movements m ON m.sku = k.sku AND m.{side} = k.loc AND coalesce(m.lot, '') = k.lot "
                f"AND m.ts >= %s WHERE {_NET}", (skus, locs, lots, since)):
            row = _movement(r)
            found[row.id] = row
    counts_raw = cur.execute(
        "SELECT c.id, c.sku, c.location, c.lot, c.ts, c.counted, c.expiry, c.loss_location, c.ref, c.device_id, "
        "c.msg_id, c.revision, c.adjustment FROM unnest(%s::text[], %s::text[], %s::text[]) k(sku, loc, lot) "
        "JOIN stock_counts c ON (c.sku, c.location, c.lot) = (k.sku, k.loc, k.lot) AND c.ts >= %s",
        (skus, locs, lots, since)).fetchall()
    adjustments = {m.id: m for m in movements_by_id(cur, [r[12] for r in counts_raw if r[12] is not None])}
    counts = [CountRow(int(r[0]), PlannedCount(CountRequest(r[1], r[2], r[3] or None, r[6], Decimal(r[5]), r[7],
                                                            r[8], r[4]), Identity(r[9], r[10])),
                       int(r[11]), adjustments.get(r[12]) if r[12] is not None else None) for r in counts_raw]
    balances = {(r[0], r[1], r[2]): Decimal(r[3]) for r in cur.execute(
        "SELECT b.sku, b.location, b.lot, b.qty FROM unnest(%s::text[], %s::text[], %s::text[]) k(sku, loc, lot) "
        "JOIN balances b ON (b.sku, b.location, b.lot) = (k.sku, k.loc, k.lot)", (skus, locs, lots))}
    alarms = [AlarmRow(r[0], tuple(r[1].split("|", 2)), r[2], r[3], r[4], r[5], r[6])
              for r in cur.execute(
        "SELECT id, subject, state, started_at, cleared_at, peak_value, acknowledged FROM alarms "
        "WHERE type = %s AND subject = ANY(%s) AND (cleared_at IS NULL OR cleared_at >= %s) ORDER BY started_at, id",
        (DISCREPANCY, sorted(subject(k) for k in keys), since))]
    return Window(since, sorted(found.values(), key=lambda m: m.id), counts, balances, alarms)


def location_types(cur: psycopg.Cursor, codes: Iterable[str]) -> dict[str, str]:
    return {r[0]: r[1] for r in cur.execute("SELECT code, type FROM locations WHERE code = ANY(%s)",
                                            (sorted(set(codes)),))}


def serial_history(cur: psycopg.Cursor, serials: Iterable[SerialKey]) -> list[MovementRow]:
    """Every net movement of the serials (a unit's own history is short)."""
    wanted = sorted(set(serials))
    if not wanted:
        return []
    return [_movement(r) for r in cur.execute(
        f"SELECT {_MOVEMENT_COLUMNS} FROM unnest(%s::text[], %s::text[]) w(sku, serial) "
        f"JOIN movements m ON (m.sku, m.serial) = (w.sku, w.serial) WHERE {_NET}",
        ([w[0] for w in wanted], [w[1] for w in wanted]))]


def serial_location_before(cur: psycopg.Cursor, wanted: Iterable[tuple[str, str, datetime]]
                           ) -> dict[tuple[str, str, datetime], str]:
    """Where each (sku, serial) was just before an instant: its newest net movement before it."""
    asked = sorted(set(wanted))
    if not asked:
        return {}
    rows = cur.execute(
        "SELECT w.sku, w.serial, w.at, (SELECT m.to_location FROM movements m "
        f"WHERE (m.sku, m.serial) = (w.sku, w.serial) AND m.ts < w.at AND {_NET} "
        "ORDER BY m.ts DESC, coalesce(m.device_id, '') DESC, coalesce(m.msg_id, '') DESC, m.line DESC LIMIT 1) "
        "FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) w(sku, serial, at)",
        ([a[0] for a in asked], [a[1] for a in asked], [a[2] for a in asked])).fetchall()
    return {(r[0], r[1], r[2]): r[3] for r in rows if r[3] is not None}


# --- writing ----------------------------------------------------------------------------------


def insert_movements(cur: psycopg.Cursor, rows: Sequence[NewMovement]) -> list[int]:
    """Append movements; returns their ids in order."""
    if not rows:
        return []
    cols = list(zip(*[(m.posting.ts, m.posting.sku, m.posting.qty, m.posting.from_location, m.posting.to_location,
                       m.posting.lot, m.posting.serial, m.posting.expiry, m.posting.biz_step, m.posting.disposition,
                       m.posting.ref, m.origin.device_id, m.origin.msg_id, m.origin.line, m.origin.source, m.reverses)
                      for m in rows], strict=True))
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


def insert_counts(cur: psycopg.Cursor, counts: Sequence[PlannedCount]) -> None:
    """New counts, not decided yet (revision -1: their first adjustment is line 0)."""
    if counts:
        cur.execute(
            "INSERT INTO stock_counts (sku, location, lot, ts, counted, expiry, loss_location, ref, device_id, msg_id, "
            "revision) SELECT *, -1 FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], "
            "%s::numeric[], %s::date[], %s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
            [list(col) for col in zip(*[(c.request.sku, c.request.location, c.request.lot or "", c.request.ts,
                                         c.request.counted, c.request.expiry, c.request.loss_location, c.request.ref,
                                         c.identity.device_id, c.identity.msg_id) for c in counts], strict=True)])


def set_count_adjustment(cur: psycopg.Cursor, count_id: int, revision: int, adjustment: int | None) -> None:
    cur.execute("UPDATE stock_counts SET revision = %s, adjustment = %s WHERE id = %s",
                (revision, adjustment, count_id))


def write_balances(cur: psycopg.Cursor, derived: Mapping[BalanceKey, Decimal], stored: Mapping[BalanceKey, Decimal],
                   expiry: Mapping[BalanceKey, date]) -> None:
    changed = sorted(k for k, qty in derived.items() if stored.get(k) != qty)
    if changed:
        cur.execute(
            "INSERT INTO balances (sku, location, lot, qty) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[]) "
            "ON CONFLICT (sku, location, lot) DO UPDATE SET qty = excluded.qty",
            (*_columns(changed), [derived[k] for k in changed]))
    dated = sorted(expiry)
    if dated:
        cur.execute("UPDATE balances b SET expiry = greatest(b.expiry, u.expiry) "
                    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::date[]) u(sku, location, lot, expiry) "
                    "WHERE (b.sku, b.location, b.lot) = (u.sku, u.location, u.lot) "
                    "AND b.expiry IS DISTINCT FROM greatest(b.expiry, u.expiry)",
                    (*_columns(dated), [expiry[k] for k in dated]))


def write_serials(cur: psycopg.Cursor, touched: Iterable[SerialKey], derived: Mapping[SerialKey, SerialAt],
                  movement_ids: Mapping[Identity, int]) -> None:
    wanted = sorted(set(touched))
    if not wanted:
        return
    gone = [w for w in wanted if w not in derived]
    if gone:
        cur.execute("DELETE FROM serials s USING unnest(%s::text[], %s::text[]) w(sku, serial) "
                    "WHERE (s.sku, s.serial) = (w.sku, w.serial)", ([g[0] for g in gone], [g[1] for g in gone]))
    rows = [(w[0], w[1], derived[w].location, derived[w].lot, derived[w].ts, movement_ids[derived[w].identity])
            for w in wanted if w in derived]
    if rows:
        cur.executemany(
            "INSERT INTO serials (sku, serial, location, lot, ts, movement) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (sku, serial) DO UPDATE SET location = excluded.location, lot = excluded.lot, "
            "ts = excluded.ts, movement = excluded.movement WHERE serials.movement <> excluded.movement", rows)


def _message(key: BalanceKey, peak: Decimal) -> str:
    sku, loc, lot = key
    return f"{sku} at {loc}{' lot ' + lot if lot else ''}: book balance {peak} is below zero"


def _overlaps(alarm: AlarmRow, episode: Episode) -> bool:
    starts_before_end = episode.end is None or alarm.started_at <= episode.end
    ends_after_start = alarm.cleared_at is None or alarm.cleared_at >= episode.start
    return starts_before_end and ends_after_start


def write_discrepancies(cur: psycopg.Cursor, stored: Sequence[AlarmRow], derived: Iterable[Episode]) -> None:
    """Apply the difference between the derived episodes and the stored alarms (see module doc)."""
    unmatched = list(stored)
    updates: list[tuple[AlarmRow, Episode]] = []
    inserts: list[Episode] = []
    for episode in sorted(derived, key=lambda e: (e.key, e.start)):
        match = next((a for a in unmatched if a.key == episode.key and _overlaps(a, episode)), None)
        if match is None:
            inserts.append(episode)
        else:
            unmatched.remove(match)
            if (match.started_at, match.cleared_at, match.peak, match.state) != (
                    episode.start, episode.end, float(episode.peak), "active" if episode.end is None else "cleared"):
                updates.append((match, episode))
    # Deleted, or kept as withdrawn when a person acted on it (core.withdrawal).
    withdraw_alarms(cur, [(a.id, a.acknowledged) for a in unmatched if a.state != WITHDRAWN])
    # Clearing before activating: one active alarm per (type, subject) holds at every statement.
    for alarm, episode in sorted(updates, key=lambda u: u[1].end is None):
        cur.execute("UPDATE alarms SET state = %s, started_at = %s, cleared_at = %s, peak_value = %s, message = %s, "
                    "updated_at = now() WHERE id = %s",
                    ("active" if episode.end is None else "cleared", episode.start, episode.end, float(episode.peak),
                     _message(episode.key, episode.peak), alarm.id))
    for episode in inserts:
        sku, loc, lot = episode.key
        cur.execute("INSERT INTO alarms (type, severity, state, location, sku, lot, subject, started_at, cleared_at, "
                    "peak_value, message) VALUES (%s, 'warning', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (DISCREPANCY, "active" if episode.end is None else "cleared", loc, sku, lot or None,
                     subject(episode.key), episode.start, episode.end, float(episode.peak),
                     _message(episode.key, episode.peak)))


# --- returns waiting for their serial's delivery ----------------------------------------------


def park_returns(cur: psycopg.Cursor, parked: Sequence[tuple[str, str, Scan]]) -> None:
    """(sku, serial, scan) of returns whose origin is not known yet."""
    if parked:
        cur.executemany(
            "INSERT INTO stock_parked_returns (device_id, msg_id, sku, serial, ts, ts_source, received_at, code, mode, "
            "qty, location, to_location, ref) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(s.device_id, s.msg_id, sku, serial, s.ts, s.ts_source, s.received_at, s.code, s.mode, s.qty, s.location,
              s.to_location, s.ref) for sku, serial, s in parked])


def parked_returns(cur: psycopg.Cursor, serials: Iterable[SerialKey]) -> list[Scan]:
    wanted = sorted(set(serials))
    if not wanted:
        return []
    rows = cur.execute(
        "SELECT p.device_id, p.msg_id, p.ts, p.ts_source, p.received_at, p.code, p.mode, p.qty, p.location, "
        "p.to_location, p.ref FROM unnest(%s::text[], %s::text[]) w(sku, serial) "
        "JOIN stock_parked_returns p ON (p.sku, p.serial) = (w.sku, w.serial) ORDER BY p.ts, p.device_id, p.msg_id",
        ([w[0] for w in wanted], [w[1] for w in wanted])).fetchall()
    return [Scan(*r) for r in rows]


def unpark(cur: psycopg.Cursor, scans: Sequence[Scan]) -> None:
    if scans:
        cur.execute("DELETE FROM stock_parked_returns p USING unnest(%s::text[], %s::text[]) w(device_id, msg_id) "
                    "WHERE (p.device_id, p.msg_id) = (w.device_id, w.msg_id)",
                    ([s.device_id for s in scans], [s.msg_id for s in scans]))
