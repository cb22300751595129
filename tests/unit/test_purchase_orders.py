from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.purchase_orders import Receipt, derive_po

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
D = Decimal
LINES = {"A": D(10), "B": D(5)}


def r(msg: str, sku: str, qty: int, minutes: int) -> Receipt:
    return Receipt("sc-1", msg, T0 + timedelta(minutes=minutes), sku, D(qty))


def test_statuses() -> None:
    assert derive_po(LINES, []).status == "open"
    assert derive_po(LINES, [r("1", "A", 4, 0)]).status == "partially_received"
    assert derive_po(LINES, [r("1", "A", 10, 0), r("2", "B", 5, 1)]).status == "received"
    assert derive_po(LINES, [r("1", "A", 4, 0)], closed=True).status == "closed"


def test_over_receipt_and_unexpected_item_are_exceptions_on_the_scan_that_caused_them() -> None:
    receipts = [r("1", "A", 6, 0), r("2", "A", 6, 1), r("3", "Z", 2, 2), r("4", "A", 1, 3)]
    state = derive_po(LINES, receipts)
    got = [(e.msg_id, e.kind, e.sku, e.excess) for e in state.exceptions]
    assert got == [("2", "over_receipt", "A", D(2)), ("3", "unexpected_item", "Z", D(2)),
                   ("4", "over_receipt", "A", D(1))]
    assert state.received == {"A": D(13), "Z": D(2)}
    shuffled = receipts + receipts[:2]
    random.Random(7).shuffle(shuffled)
    assert derive_po(LINES, shuffled) == state
