"""Purchase orders: expected receipts, filled by ``receive`` scans that name the PO.

The scan is the truth about what physically arrived: stock always moves. What does not fit the
PO (an item it does not list, more than a line's quantity) is a ``receipt_exception`` for a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.orders import ZERO


@dataclass(frozen=True, slots=True)
class Receipt:
    device_id: str
    msg_id: str
    ts: datetime
    sku: str
    qty: Decimal


@dataclass(frozen=True, slots=True)
class ReceiptException:
    """One exception, identified by the receipt that caused it (stable under replays)."""

    device_id: str
    msg_id: str
    ts: datetime
    kind: str                 # unexpected_item | over_receipt
    sku: str
    excess: Decimal           # the quantity beyond what was expected
    message: str


@dataclass(frozen=True, slots=True)
class PurchaseOrderState:
    status: str               # open | partially_received | received | closed
    received: Mapping[str, Decimal]
    exceptions: tuple[ReceiptException, ...]


def derive_po(lines: Mapping[str, Decimal], receipts: Iterable[Receipt], closed: bool = False) -> PurchaseOrderState:
    """The PO's state from its receipts taken in event time (ties by device, msg_id), duplicates once.

    The receipt that pushes a line over its quantity carries the over-receipt exception, so the
    exception belongs to the same scan whatever order the scans arrived in.
    """
    unique: dict[tuple[str, str], Receipt] = {}
    for r in receipts:
        unique.setdefault((r.device_id, r.msg_id), r)
    received: dict[str, Decimal] = {}
    exceptions: list[ReceiptException] = []
    for r in sorted(unique.values(), key=lambda r: (r.ts, r.device_id, r.msg_id)):
        before = received.get(r.sku, ZERO)
        received[r.sku] = before + r.qty
        expected = lines.get(r.sku)
        if expected is None:
            exceptions.append(ReceiptException(r.device_id, r.msg_id, r.ts, "unexpected_item", r.sku, r.qty,
                                               f"{r.sku} is not on the purchase order"))
        elif before + r.qty > expected:
            excess = before + r.qty - max(before, expected)
            exceptions.append(ReceiptException(r.device_id, r.msg_id, r.ts, "over_receipt", r.sku, excess,
                                               f"{r.sku}: received {before + r.qty:f} of {expected:f} ordered"))
    if closed:
        status = "closed"
    elif all(received.get(sku, ZERO) >= qty for sku, qty in lines.items()):
        status = "received"
    elif any(received.get(sku, ZERO) > 0 for sku in lines):
        status = "partially_received"
    else:
        status = "open"
    return PurchaseOrderState(status, received, tuple(exceptions))
