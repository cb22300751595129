"""Every stock decision, as one pure function of event-time history.

``derive_stock`` takes the postings already planned from messages (scans, RFID passages), the
cycle counts and, when it derives only a window of the history, the balances just before the
window, and decides:

* the net ledger: the planned postings plus one adjustment per count, decided against the book
  at the count's event time (``core.ledger.count_adjustment``);
* the balance and expiry of every (sku, location, lot) it touched;
* where each serial is: the destination of its newest net movement in event time;
* ``stock_discrepancy`` episodes: event-time intervals during which a physical location's balance
  is below zero (start, end or None while it lasts, lowest balance reached).

Order. Events are applied instant by instant. Within one instant, movements come before counts
(a count sees everything that happened at its instant), counts are taken by (device_id, msg_id),
and a balance is judged negative only after the whole instant: the sum over one instant does not
depend on the order of its movements, so no arrival order can open or close an episode. Nothing
depends on arrival order or on the wall clock, so the same messages in any order decide alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from core.ledger import PHYSICAL_TYPES, BalanceKey, CountRequest, Posting, count_adjustment

SerialKey = tuple[str, str]  # (sku, serial)


@dataclass(frozen=True, slots=True, order=True)
class Identity:
    """Which message (and which line of it) a posting comes from; also the tie order of an instant."""

    device_id: str
    msg_id: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class PlannedPosting:
    """A movement decided by its own message alone (a scan or an RFID passage)."""

    posting: Posting
    identity: Identity


@dataclass(frozen=True, slots=True)
class PlannedCount:
    """A cycle count; its adjustment is decided here, against the book at its event time."""

    request: CountRequest
    identity: Identity


@dataclass(frozen=True, slots=True)
class StockHistory:
    """The history to derive from.

    A whole history (a replay) needs only ``postings``, ``counts`` and ``locations``. A window of
    it (what ingest loads) also gives ``opening``: the balance of each key just before the window,
    which starts at ``since``; every posting and count of the window is at or after ``since``.
    ``serial_history`` are older postings of serials the window touches, used only to decide where
    those serials are (they already count in ``opening``).
    """

    postings: tuple[PlannedPosting, ...] = ()
    counts: tuple[PlannedCount, ...] = ()
    locations: Mapping[str, str] = field(default_factory=dict)  # location code -> type
    opening: Mapping[BalanceKey, Decimal] = field(default_factory=dict)
    since: datetime | None = None
    serial_history: tuple[PlannedPosting, ...] = ()

    @classmethod
    def of(cls, postings: Iterable[PlannedPosting], counts: Iterable[PlannedCount],
           locations: Mapping[str, str]) -> StockHistory:
        """A whole history, from scratch (duplicates by identity are one message)."""
        unique_postings = {p.identity: p for p in postings}
        unique_counts = {c.identity: c for c in counts}
        return cls(tuple(unique_postings[i] for i in sorted(unique_postings)),
                   tuple(unique_counts[i] for i in sorted(unique_counts)), dict(locations))


@dataclass(frozen=True, slots=True)
class SerialAt:
    location: str
    lot: str | None
    ts: datetime
    identity: Identity


@dataclass(frozen=True, slots=True)
class Episode:
    """Physical stock below zero from ``start`` until ``end`` (None: still below zero)."""

    key: BalanceKey
    start: datetime
    end: datetime | None
    peak: Decimal  # the lowest balance reached


@dataclass(frozen=True, slots=True)
class StockState:
    ledger: tuple[PlannedPosting, ...]          # the net ledger: planned postings and count adjustments
    adjustments: Mapping[Identity, Posting | None]  # per count: its adjustment (None: the count agreed)
    balances: Mapping[BalanceKey, Decimal]
    expiry: Mapping[BalanceKey, date]          # the latest expiry that entered each balance
    serials: Mapping[SerialKey, SerialAt]
    discrepancies: tuple[Episode, ...]


def key_from(p: Posting) -> BalanceKey:
    return (p.sku, p.from_location, p.lot or "")


def key_to(p: Posting) -> BalanceKey:
    return (p.sku, p.to_location, p.lot or "")


def count_key(r: CountRequest) -> BalanceKey:
    return (r.sku, r.location, r.lot or "")


def _serials(postings: Iterable[PlannedPosting]) -> dict[SerialKey, SerialAt]:
    newest: dict[SerialKey, tuple[tuple[datetime, Identity], SerialAt]] = {}
    for planned in postings:
        p = planned.posting
        if p.serial is None:
            continue
        order = (p.ts, planned.identity)
        key = (p.sku, p.serial)
        if key not in newest or newest[key][0] < order:
            newest[key] = (order, SerialAt(p.to_location, p.lot, p.ts, planned.identity))
    return {k: v for k, (_, v) in newest.items()}


class _Episodes:
    """Tracks below-zero intervals of physical balances as instants are closed."""

    def __init__(self, physical: frozenset[str]) -> None:
        self.physical = physical
        self.open: dict[BalanceKey, tuple[datetime, Decimal]] = {}
        self.done: list[Episode] = []

    def judge(self, key: BalanceKey, qty: Decimal, at: datetime) -> None:
        if key[1] not in self.physical:
            return
        current = self.open.get(key)
        if qty < 0:
            self.open[key] = (at, qty) if current is None else (current[0], min(current[1], qty))
        elif current is not None:
            self.done.append(Episode(key, current[0], at, current[1]))
            del self.open[key]

    def all(self) -> tuple[Episode, ...]:
        found = self.done + [Episode(k, start, None, peak) for k, (start, peak) in self.open.items()]
        return tuple(sorted(found, key=lambda e: (e.key, e.start)))


def derive_stock(history: StockHistory) -> StockState:
    """Decide the net ledger, balances, expiries, serial locations and discrepancy episodes."""
    physical = frozenset(code for code, type_ in history.locations.items() if type_ in PHYSICAL_TYPES)
    balances: dict[BalanceKey, Decimal] = dict(history.opening)
    episodes = _Episodes(physical)
    if history.since is not None:
        for key, qty in sorted(history.opening.items()):
            episodes.judge(key, qty, history.since)  # below zero already: an episode that began before

    instants: dict[datetime, tuple[list[PlannedPosting], list[PlannedCount]]] = {}
    for planned in history.postings:
        instants.setdefault(planned.posting.ts, ([], []))[0].append(planned)
    for count in history.counts:
        instants.setdefault(count.request.ts, ([], []))[1].append(count)

    ledger: list[PlannedPosting] = []
    adjustments: dict[Identity, Posting | None] = {}
    expiry: dict[BalanceKey, date] = {}

    def post(planned: PlannedPosting, touched: set[BalanceKey]) -> None:
        p = planned.posting
        src, dst = key_from(p), key_to(p)
        balances[src] = balances.get(src, Decimal(0)) - p.qty
        balances[dst] = balances.get(dst, Decimal(0)) + p.qty
        if p.expiry is not None and (dst not in expiry or expiry[dst] < p.expiry):
            expiry[dst] = p.expiry
        touched.update((src, dst))
        ledger.append(planned)

    for at in sorted(instants):
        moves, counts = instants[at]
        touched: set[BalanceKey] = set()
        for planned in sorted(moves, key=lambda m: m.identity):
            post(planned, touched)
        for count in sorted(counts, key=lambda c: c.identity):
            book = balances.get(count_key(count.request), Decimal(0))
            adjustment = count_adjustment(count.request, book)
            adjustments[count.identity] = adjustment
            touched.add(count_key(count.request))
            if adjustment is not None:
                post(PlannedPosting(adjustment, count.identity), touched)
        for key in sorted(touched):
            episodes.judge(key, balances.get(key, Decimal(0)), at)

    serials = _serials((*history.serial_history, *history.postings))
    return StockState(tuple(ledger), adjustments, balances, expiry, serials, episodes.all())
