"""Outbound orders: allocation of available stock, backorders, and the order's status in event time.

Allocation reserves stock without moving it: available = on hand - reserved, per (sku, location,
lot). FEFO (earliest expiry first) for goods with an expiry, then FIFO by first receipt, honouring a
lot the customer demands. Everything here is a pure function of values the adapter loaded; the
adapter serialises releases on the (sku, site) keys so two releases never see the same availability.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Final

ZERO: Final = Decimal(0)
# An item without expiry sorts after every dated lot: FEFO first, then FIFO among the undated.
_NO_EXPIRY: Final = date.max

StockKey = tuple[str, str, str]  # (sku, location, lot or '')


class OrderError(ValueError):
    """A request the order's state does not allow; ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class StockLot:
    """One pickable balance: on hand at a location of the order's site."""

    sku: str
    location: str
    lot: str | None
    on_hand: Decimal
    expiry: date | None
    received_at: datetime  # first receipt of this balance: FIFO order among equal expiries

    @property
    def key(self) -> StockKey:
        return (self.sku, self.location, self.lot or "")


@dataclass(frozen=True, slots=True)
class Reservation:
    """Stock held for one order line at one (sku, location, lot)."""

    order_ref: str
    line_no: int
    sku: str
    location: str
    lot: str | None
    qty: Decimal

    @property
    def key(self) -> StockKey:
        return (self.sku, self.location, self.lot or "")


@dataclass(frozen=True, slots=True)
class OrderLine:
    line_no: int
    sku: str
    qty: Decimal
    lot: str | None = None  # a lot the customer demands; None = any


@dataclass(frozen=True, slots=True)
class Demand:
    """What is still to be allocated for one order line (the whole line on release, the rest later)."""

    order_ref: str
    line_no: int
    sku: str
    qty: Decimal
    lot: str | None
    priority: int            # 1 highest … 5
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class AllocationResult:
    reservations: tuple[Reservation, ...]         # the new ones
    backordered: Mapping[tuple[str, int], Decimal]  # (order_ref, line_no) -> quantity not covered


def reserved_by_key(reservations: Iterable[Reservation]) -> dict[StockKey, Decimal]:
    held: dict[StockKey, Decimal] = {}
    for r in reservations:
        held[r.key] = held.get(r.key, ZERO) + r.qty
    return held


def available(stock: Iterable[StockLot], reservations: Iterable[Reservation]) -> dict[StockKey, Decimal]:
    """On hand - reserved per key; never negative (stock counted away under a reservation is simply gone)."""
    held = reserved_by_key(reservations)
    return {s.key: max(ZERO, s.on_hand - held.get(s.key, ZERO)) for s in stock}


def fefo_order(stock: Iterable[StockLot]) -> list[StockLot]:
    """Earliest expiry first, then oldest receipt, then location and lot so ties decide alike everywhere."""
    return sorted(stock, key=lambda s: (s.expiry or _NO_EXPIRY, s.received_at, s.location, s.lot or ""))


def demand_order(demands: Iterable[Demand]) -> list[Demand]:
    """Priority (1 first), then requested_at, then order ref and line: who gets scarce stock first."""
    return sorted(demands, key=lambda d: (d.priority, d.requested_at, d.order_ref, d.line_no))


def allocate(demands: Sequence[Demand], stock: Sequence[StockLot],
             reservations: Sequence[Reservation]) -> AllocationResult:
    """Reserve available stock for ``demands`` taken in priority then requested_at order.

    ``stock`` is everything pickable at the site; ``reservations`` everything already held on it.
    A demand with a lot takes only that lot. What cannot be covered is backordered.
    """
    left = available(stock, reservations)
    ordered_stock = fefo_order(s for s in stock if s.on_hand > 0)
    new: list[Reservation] = []
    backordered: dict[tuple[str, int], Decimal] = {}
    for d in demand_order(demands):
        if d.qty <= 0:
            continue
        need = d.qty
        for s in ordered_stock:
            if need <= 0:
                break
            if s.sku != d.sku or (d.lot is not None and (s.lot or "") != d.lot):
                continue
            take = min(need, left.get(s.key, ZERO))
            if take <= 0:
                continue
            left[s.key] -= take
            need -= take
            new.append(Reservation(d.order_ref, d.line_no, s.sku, s.location, s.lot, take))
        if need > 0:
            backordered[(d.order_ref, d.line_no)] = need
    return AllocationResult(tuple(new), backordered)


def over_allocated(stock: Iterable[StockLot], reservations: Iterable[Reservation]) -> dict[StockKey, Decimal]:
    """Keys whose reservations exceed on hand (empty when the invariant holds); for checks and tests."""
    on_hand = {s.key: s.on_hand for s in stock}
    return {k: q - on_hand.get(k, ZERO) for k, q in reserved_by_key(reservations).items()
            if q > on_hand.get(k, ZERO)}


# ---------------------------------------------------------------------------------------------
# Order status in event time


RELEASABLE: Final = frozenset({"open"})
CANCELLABLE: Final = frozenset({"open", "allocated", "backordered", "picking", "partially_picked"})


@dataclass(frozen=True, slots=True)
class Fact:
    """Something that happened to an order, identified so a duplicate counts once.

    kind: ``released``, ``allocated`` (qty reserved for a line), ``picked`` (qty picked on a line,
    by a task), ``short`` (qty of a line given up on a short pick), ``shipped`` (qty of a sku loaded
    onto ``shipment``), ``delivered`` (``shipment`` delivered), ``cancelled``.
    """

    identity: str
    kind: str
    ts: datetime
    line_no: int | None = None
    sku: str | None = None
    qty: Decimal = ZERO
    shipment: str | None = None


@dataclass(frozen=True, slots=True)
class LineState:
    line_no: int
    sku: str
    qty: Decimal
    allocated: Decimal
    picked: Decimal
    shipped: Decimal
    delivered: Decimal
    backordered: Decimal


@dataclass(frozen=True, slots=True)
class OrderEvent:
    ts: datetime
    type: str
    detail: str


@dataclass(frozen=True, slots=True)
class OrderState:
    status: str
    lines: tuple[LineState, ...]
    shipments: tuple[str, ...]
    events: tuple[OrderEvent, ...] = field(default=())


def _distribute(total: Decimal, lines: Sequence[OrderLine], cap: Mapping[int, Decimal]) -> dict[int, Decimal]:
    """Spread a per-sku quantity over the lines of that sku in line order, each up to its cap."""
    out: dict[int, Decimal] = {}
    for line in lines:
        take = min(total, cap[line.line_no])
        out[line.line_no] = take
        total -= take
    return out


def derive_order(lines: Sequence[OrderLine], facts: Iterable[Fact], open_tasks: int,
                 at: datetime | None = None) -> OrderState:
    """The order's status and line figures from its facts up to ``at`` (all when None).

    Facts are de-duplicated by identity and evaluated as a set, so any arrival order and any
    duplicate give the same state. ``open_tasks`` is how many pick tasks are still open.
    """
    unique: dict[str, Fact] = {}
    for f in facts:
        if at is None or f.ts <= at:
            prior = unique.get(f.identity)
            # A redelivered fact is the same fact; keep one deterministically (earliest, then kind).
            if prior is None or (f.ts, f.kind) < (prior.ts, prior.kind):
                unique[f.identity] = f
    kept = sorted(unique.values(), key=lambda f: (f.ts, f.identity))
    by_line: dict[int, OrderLine] = {ln.line_no: ln for ln in lines}
    allocated = {n: ZERO for n in by_line}
    picked = {n: ZERO for n in by_line}
    shorted = {n: ZERO for n in by_line}
    shipped_sku: dict[tuple[str, str], Decimal] = {}
    delivered_shipments: set[str] = set()
    released = cancelled = False
    events: list[OrderEvent] = []
    for f in kept:
        if f.kind == "released":
            released = True
        elif f.kind == "cancelled":
            cancelled = True
        elif f.kind in ("allocated", "picked", "short") and f.line_no in by_line:
            target = {"allocated": allocated, "picked": picked, "short": shorted}[f.kind]
            target[f.line_no] += f.qty
        elif f.kind == "shipped" and f.sku is not None and f.shipment is not None:
            shipped_sku[(f.shipment, f.sku)] = shipped_sku.get((f.shipment, f.sku), ZERO) + f.qty
        elif f.kind == "delivered" and f.shipment is not None:
            delivered_shipments.add(f.shipment)
        events.append(OrderEvent(f.ts, f.kind, _describe(f)))
    cap_pick = {n: min(by_line[n].qty, picked[n]) for n in by_line}
    shipped = {n: ZERO for n in by_line}
    delivered = {n: ZERO for n in by_line}
    shipments = sorted({s for s, _ in shipped_sku})
    for shipment in shipments:
        for sku in sorted({k for s, k in shipped_sku if s == shipment}):
            sku_lines = [ln for ln in lines if ln.sku == sku]
            room = {ln.line_no: ln.qty - shipped[ln.line_no] for ln in sku_lines}
            spread = _distribute(shipped_sku[(shipment, sku)], sku_lines, room)
            for n, q in spread.items():
                shipped[n] += q
                if shipment in delivered_shipments:
                    delivered[n] += q
    # A short pick gives back what was reserved but not found: it is backordered again.
    covered = {n: min(by_line[n].qty, max(ZERO, allocated[n] - shorted[n])) for n in by_line}
    states = tuple(
        LineState(n, ln.sku, ln.qty, covered[n], cap_pick[n], shipped[n], delivered[n],
                  ln.qty - covered[n] if released and not cancelled else ZERO)
        for n, ln in sorted(by_line.items()))
    status = _status(states, released, cancelled, open_tasks, shorted)
    return OrderState(status, states, tuple(shipments), tuple(events))


def _describe(f: Fact) -> str:
    parts = [f"line {f.line_no}" if f.line_no is not None else "", f"{f.sku}" if f.sku else "",
             f"qty {f.qty.normalize():f}" if f.qty else "", f"shipment {f.shipment}" if f.shipment else ""]
    return " ".join(p for p in parts if p) or f.kind


def _status(lines: Sequence[LineState], released: bool, cancelled: bool, open_tasks: int,
            shorted: Mapping[int, Decimal]) -> str:
    if cancelled:
        return "cancelled"
    if not released:
        return "open"
    ordered = sum((ln.qty for ln in lines), ZERO)

    def level(values: Iterable[Decimal], word: str) -> str | None:
        total = sum(values, ZERO)
        if total <= 0:
            return None
        return word if total >= ordered else "partially_" + word

    for values, word in (((ln.delivered for ln in lines), "delivered"), ((ln.shipped for ln in lines), "shipped")):
        found = level(values, word)
        if found is not None:
            return found
    picked = sum((ln.picked for ln in lines), ZERO)
    if picked > 0:
        if picked >= ordered:
            return "picked"
        # Still working its tasks: picking; no open task left means the rest was shorted/backordered.
        return "picking" if open_tasks > 0 else "partially_picked"
    if any(ln.backordered > 0 for ln in lines) or any(q > 0 for q in shorted.values()):
        return "backordered"
    return "allocated"
