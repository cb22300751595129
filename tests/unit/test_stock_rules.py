"""The stock rules engine: pure, event-time, independent of the order its input is given in."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.ledger import CountRequest, Posting
from core.stock_rules import Episode, Identity, PlannedCount, PlannedPosting, StockHistory, derive_stock

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
LOCATIONS = {"SUP": "supplier", "BIN": "internal", "BIN2": "internal", "TRUCK": "vehicle", "CUST": "customer",
             "LOSS": "inventory_loss"}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def move(msg: str, minutes: float, qty: int, src: str, dst: str, serial: str | None = None,
         device: str = "SC") -> PlannedPosting:
    return PlannedPosting(Posting("SKU", Decimal(qty), src, dst, None, serial, None, "storing", "x", None,
                                  at(minutes)), Identity(device, msg))


def count(msg: str, minutes: float, qty: int, where: str = "BIN") -> PlannedCount:
    return PlannedCount(CountRequest("SKU", where, None, None, Decimal(qty), "LOSS", None, at(minutes)),
                        Identity("SC", msg))


def test_a_count_is_decided_against_the_book_at_its_event_time() -> None:
    state = derive_stock(StockHistory.of([move("r", 0, 10, "SUP", "BIN"), move("p", 5, 4, "BIN", "TRUCK")],
                                         [count("c", 3, 7)], LOCATIONS))
    adjustment = state.adjustments[Identity("SC", "c")]
    assert adjustment is not None
    assert (adjustment.qty, adjustment.from_location, adjustment.to_location) == (Decimal(3), "BIN", "LOSS")
    assert state.balances[("SKU", "BIN", "")] == 3  # 10 - 3 (count) - 4 (later pick)
    assert sum(state.balances.values()) == 0


def test_movements_at_the_counts_instant_come_before_it() -> None:
    state = derive_stock(StockHistory.of([move("r", 0, 10, "SUP", "BIN"), move("p", 5, 4, "BIN", "TRUCK")],
                                         [count("c", 5, 6)], LOCATIONS))
    assert state.adjustments[Identity("SC", "c")] is None  # 10 - 4 = 6: the count agrees


def test_a_discrepancy_is_an_event_time_interval_with_its_lowest_balance() -> None:
    state = derive_stock(StockHistory.of([move("p1", 1, 2, "BIN", "TRUCK"), move("p2", 2, 3, "BIN", "TRUCK"),
                                          move("r", 4, 10, "SUP", "BIN"), move("p3", 9, 6, "BIN", "TRUCK")],
                                         [], LOCATIONS))
    assert state.discrepancies == (Episode(("SKU", "BIN", ""), at(1), at(4), Decimal(-5)),
                                   Episode(("SKU", "BIN", ""), at(9), None, Decimal(-1)))
    # Suppliers and customers are virtual: negative by design, never a discrepancy.
    assert all(e.key[1] == "BIN" for e in state.discrepancies)


def test_one_instant_is_judged_as_a_whole() -> None:
    state = derive_stock(StockHistory.of([move("a", 1, 5, "BIN", "TRUCK"), move("b", 1, 5, "SUP", "BIN")],
                                         [], LOCATIONS))
    assert state.discrepancies == ()


def test_a_deliver_before_its_ship_in_event_time_is_one_episode_in_every_order() -> None:
    stream = [move("ship", 2, 5, "BIN", "TRUCK"), move("deliver", 1, 5, "TRUCK", "CUST"),
              move("recv", 0, 5, "SUP", "BIN")]
    first = derive_stock(StockHistory.of(stream, [], LOCATIONS))
    assert first.discrepancies == (Episode(("SKU", "TRUCK", ""), at(1), at(2), Decimal(-5)),)
    for seed in range(5):
        shuffled = list(stream)
        random.Random(seed).shuffle(shuffled)
        assert derive_stock(StockHistory.of(shuffled, [], LOCATIONS)) == first


def test_a_serial_is_where_its_newest_movement_in_event_time_put_it() -> None:
    state = derive_stock(StockHistory.of([move("b", 10, 1, "BIN", "BIN2", serial="S1"),
                                          move("a", 0, 1, "SUP", "BIN", serial="S1")], [], LOCATIONS))
    assert state.serials[("SKU", "S1")].location == "BIN2"


def test_a_window_continues_from_its_opening_balance() -> None:
    whole = derive_stock(StockHistory.of([move("r", 0, 10, "SUP", "BIN"), move("p", 5, 12, "BIN", "TRUCK")],
                                         [count("c", 8, 1)], LOCATIONS))
    window = derive_stock(StockHistory(postings=(move("p", 5, 12, "BIN", "TRUCK"),), counts=(count("c", 8, 1),),
                                       locations=LOCATIONS, since=at(5),
                                       opening={("SKU", "BIN", ""): Decimal(10), ("SKU", "SUP", ""): Decimal(-10)}))
    assert window.balances == whole.balances
    assert window.adjustments == whole.adjustments
    assert window.discrepancies == whole.discrepancies == (Episode(("SKU", "BIN", ""), at(5), at(8), Decimal(-2)),)


def test_duplicates_are_one_message() -> None:
    recv = move("r", 0, 10, "SUP", "BIN")
    assert derive_stock(StockHistory.of([recv, recv], [], LOCATIONS)).balances[("SKU", "BIN", "")] == 10
