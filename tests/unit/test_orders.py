from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.orders import (
    Demand,
    Fact,
    OrderLine,
    Reservation,
    StockLot,
    allocate,
    available,
    derive_order,
    over_allocated,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
D = Decimal


def lot(loc: str, lot_: str | None, qty: int, expiry: date | None, received_days: int, sku: str = "A") -> StockLot:
    return StockLot(sku, loc, lot_, D(qty), expiry, T0 - timedelta(days=received_days))


def demand(ref: str, qty: int, lot_: str | None = None, priority: int = 3, minutes: int = 0,
           sku: str = "A", line: int = 1) -> Demand:
    return Demand(ref, line, sku, D(qty), lot_, priority, T0 + timedelta(minutes=minutes))


def test_fefo_takes_earliest_expiry_first_then_oldest_receipt() -> None:
    stock = [lot("B1", "L-LATE", 10, date(2026, 9, 1), 30),
             lot("B2", "L-SOON", 4, date(2026, 5, 1), 1),
             lot("B3", None, 50, None, 100),          # undated: after every dated lot despite being oldest
             lot("B4", "L-SOON2", 3, date(2026, 5, 1), 5)]  # same expiry as L-SOON, received earlier
    result = allocate([demand("O1", 12)], stock, [])
    assert [(r.location, r.lot, r.qty) for r in result.reservations] == [
        ("B4", "L-SOON2", D(3)), ("B2", "L-SOON", D(4)), ("B1", "L-LATE", D(5))]
    assert result.backordered == {}


def test_fifo_by_receipt_without_expiry() -> None:
    stock = [lot("B1", None, 5, None, 1), lot("B2", None, 5, None, 9)]
    result = allocate([demand("O1", 7)], stock, [])
    assert [(r.location, r.qty) for r in result.reservations] == [("B2", D(5)), ("B1", D(2))]


def test_requested_lot_is_honoured_and_the_rest_backordered() -> None:
    stock = [lot("B1", "X", 10, date(2026, 4, 1), 3), lot("B2", "Y", 4, date(2026, 8, 1), 3)]
    result = allocate([demand("O1", 6, lot_="Y")], stock, [])
    assert [(r.lot, r.qty) for r in result.reservations] == [("Y", D(4))]
    assert result.backordered == {("O1", 1): D(2)}


def test_available_is_on_hand_minus_reservations() -> None:
    stock = [lot("B1", None, 10, None, 1)]
    held = [Reservation("O0", 1, "A", "B1", None, D(7))]
    assert available(stock, held) == {("A", "B1", ""): D(3)}
    result = allocate([demand("O1", 5)], stock, held)
    assert sum(r.qty for r in result.reservations) == D(3)
    assert result.backordered == {("O1", 1): D(2)}


def test_backorders_fill_in_priority_then_requested_at_order() -> None:
    waiting = [demand("LOW", 5, priority=4, minutes=0), demand("EARLY", 5, priority=2, minutes=10),
               demand("LATE", 5, priority=2, minutes=20)]
    arrived = [lot("B1", None, 8, None, 0)]
    result = allocate(waiting, arrived, [])
    got = {r.order_ref: r.qty for r in result.reservations}
    assert got == {"EARLY": D(5), "LATE": D(3)}
    assert result.backordered == {("LATE", 1): D(2), ("LOW", 1): D(5)}


_ops = st.lists(st.tuples(st.sampled_from(["release", "cancel", "receive"]), st.integers(1, 30),
                          st.sampled_from(["A", "B"]), st.integers(0, 3)), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(_ops, st.integers(0, 10_000))
def test_interleaved_releases_cancels_and_receipts_never_over_allocate(ops, seed) -> None:
    """Any interleaving of releases, cancels and receipts (each one serialised on its keys, as the
    store's locks do) keeps every key's reservations within its stock, and covers each demand fully
    or backorders exactly the rest."""
    rng = random.Random(seed)
    stock: list[StockLot] = [lot(f"B{i}", f"L{i}", rng.randint(0, 20), date(2026, 6, 1 + i), i, sku=s)
                             for i, s in enumerate(["A", "B", "A", "B"])]
    held: list[Reservation] = []
    for n, (op, qty, sku, which) in enumerate(ops):
        if op == "release":
            d = Demand(f"O{n}", 1, sku, D(qty), None if which == 0 else f"L{which}", 3, T0)
            result = allocate([d], stock, held)
            got = sum((r.qty for r in result.reservations), D(0))
            assert got + result.backordered.get((d.order_ref, 1), D(0)) == d.qty
            held.extend(result.reservations)
        elif op == "cancel" and held:
            victim = held[which % len(held)].order_ref
            held = [r for r in held if r.order_ref != victim]
        else:
            i = which
            s = stock[i]
            stock[i] = StockLot(s.sku, s.location, s.lot, s.on_hand + qty, s.expiry, s.received_at)
        assert over_allocated(stock, held) == {}


def test_over_allocated_detects_a_violation() -> None:
    stock = [lot("B1", None, 2, None, 1)]
    assert over_allocated(stock, [Reservation("O", 1, "A", "B1", None, D(3))]) == {("A", "B1", ""): D(1)}


LINES = (OrderLine(1, "A", D(10)), OrderLine(2, "B", D(4)))


def _facts() -> list[Fact]:
    t = T0
    return [
        Fact("rel", "released", t),
        Fact("alloc1", "allocated", t, 1, "A", D(10)),
        Fact("alloc2", "allocated", t, 2, "B", D(4)),
        Fact("s1", "picked", t + timedelta(minutes=5), 1, "A", D(6)),
        Fact("s2", "picked", t + timedelta(minutes=6), 1, "A", D(4)),
        Fact("s3", "picked", t + timedelta(minutes=7), 2, "B", D(3)),
        Fact("s3-short", "short", t + timedelta(minutes=7), 2, "B", D(1)),
        Fact("ship1", "shipped", t + timedelta(hours=1), None, "A", D(10), "SH1"),
        Fact("ship2", "shipped", t + timedelta(hours=1), None, "B", D(3), "SH1"),
        Fact("dlv", "delivered", t + timedelta(hours=5), shipment="SH1"),
    ]


def test_order_status_walks_through_event_time() -> None:
    facts = _facts()
    at = [(T0 - timedelta(minutes=1), "open"), (T0, "allocated"), (T0 + timedelta(minutes=5), "picking"),
          (T0 + timedelta(minutes=7), "partially_picked"), (T0 + timedelta(hours=1), "partially_shipped"),
          (T0 + timedelta(hours=5), "partially_delivered")]
    for when, expected in at:
        open_tasks = 1 if when < T0 + timedelta(minutes=7) else 0
        assert derive_order(LINES, facts, open_tasks, at=when).status == expected, when
    final = derive_order(LINES, facts, 0)
    line_b = final.lines[1]
    assert (line_b.allocated, line_b.picked, line_b.shipped, line_b.delivered, line_b.backordered) == \
        (D(3), D(3), D(3), D(3), D(1))
    assert final.shipments == ("SH1",)


def test_fully_picked_shipped_delivered() -> None:
    lines = (OrderLine(1, "A", D(2)),)
    facts = [Fact("r", "released", T0), Fact("a", "allocated", T0, 1, "A", D(2)),
             Fact("p", "picked", T0, 1, "A", D(2))]
    assert derive_order(lines, facts, 0).status == "picked"
    facts.append(Fact("s", "shipped", T0, None, "A", D(2), "S"))
    assert derive_order(lines, facts, 0).status == "shipped"
    facts.append(Fact("d", "delivered", T0, shipment="S"))
    assert derive_order(lines, facts, 0).status == "delivered"
    facts.append(Fact("c", "cancelled", T0))
    assert derive_order(lines, facts, 0).status == "cancelled"


def test_backordered_when_nothing_covers_a_line() -> None:
    state = derive_order(LINES, [Fact("r", "released", T0), Fact("a", "allocated", T0, 1, "A", D(10))], 1)
    assert state.status == "backordered"
    assert state.lines[1].backordered == D(4)


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, 9), max_size=6))
def test_order_state_is_independent_of_arrival_order_and_duplicates(rng, dup_idx) -> None:
    facts = _facts()
    expected = derive_order(LINES, facts, 0)
    shuffled = facts + [facts[i] for i in dup_idx]
    rng.shuffle(shuffled)
    assert derive_order(LINES, shuffled, 0) == expected
