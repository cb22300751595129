"""Repair orders: their status, the parts they consume, and the warranty of the repaired serial.

Warranty (ERPNext's "Warranty Claim"): the serial's delivery date plus the item's warranty months;
a unit never delivered, or an item without a warranty period, is not covered.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Final

from core.ledger import Posting
from core.service import WorkflowError

REPAIR_STATUSES: Final = ("open", "in_progress", "waiting_parts", "done", "cancelled")
REPAIR_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "open": frozenset({"in_progress", "waiting_parts", "done", "cancelled"}),
    "in_progress": frozenset({"waiting_parts", "done", "cancelled"}),
    "waiting_parts": frozenset({"in_progress", "done", "cancelled"}),
    "done": frozenset(),
    "cancelled": frozenset(),
}


def check_repair_transition(repair_id: int, current: str, wanted: str) -> None:
    if wanted not in REPAIR_TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(REPAIR_TRANSITIONS.get(current, frozenset()))) or "none"
        raise WorkflowError("invalid_transition",
                            f"repair {repair_id} is {current}; it cannot become {wanted} (allowed: {allowed})")


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Warranty:
    until: date | None
    covered: bool


def warranty(delivered_at: datetime | None, warranty_months: int | None, on: date) -> Warranty:
    """Covered when ``on`` is no later than the delivery date plus the warranty period."""
    if delivered_at is None or not warranty_months:
        return Warranty(None, False)
    until = add_months(delivered_at.date(), warranty_months)
    return Warranty(until, on <= until)


@dataclass(frozen=True, slots=True)
class StockAt:
    location: str
    lot: str | None
    qty: Decimal


def plan_parts(repair_id: int, status: str, sku: str, qty: Decimal, lot: str | None,
               stock: list[StockAt], consumed_location: str, ref: str, ts: datetime) -> list[Posting]:
    """Movements that consume ``qty`` of a part: from the named lot only when one is given, else
    the smallest lots first (clearing odd remainders), into the site's ``consumed`` location.
    Refused when the repair is finished or stock is short (nothing moves then)."""
    if status in ("done", "cancelled"):
        raise WorkflowError("invalid_transition", f"repair {repair_id} is {status}; it consumes no more parts")
    if qty <= 0:
        raise WorkflowError("invalid_quantity", f"a part quantity must be positive, not {qty}")
    usable = sorted((s for s in stock if s.qty > 0 and (lot is None or s.lot == lot)),
                    key=lambda s: (s.qty, s.location, s.lot or ""))
    if sum((s.qty for s in usable), Decimal(0)) < qty:
        have = sum((s.qty for s in usable), Decimal(0))
        raise WorkflowError("insufficient_stock", f"{qty.normalize():f} × {sku}" + (f" lot {lot}" if lot else "")
                            + f" needed, {have.normalize():f} on hand")
    out: list[Posting] = []
    need = qty
    for s in usable:
        take = min(need, s.qty)
        out.append(Posting(sku, take, s.location, consumed_location, s.lot, None, None, "repairing",
                           "in_progress", ref, ts))
        need -= take
        if need == 0:
            break
    return out
