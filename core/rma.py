"""Returns (RMA): the authorisation's life, receiving a return scan against its lines, and the
movements each inspection disposition implies.

requested → approved | rejected;  approved → received (first goods in);  received → inspected (all
received goods inspected);  inspected | rejected → closed.  Goods are inspected only after they
arrived, and only as many as arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from core.ledger import Posting
from core.service import WorkflowError

RMA_STATUSES: Final = ("requested", "approved", "rejected", "received", "inspected", "closed")
DISPOSITIONS: Final = ("restock", "scrap", "repair", "return_to_supplier")
# Where each disposition sends the goods, as a location type of the returns location's site.
DISPOSITION_TARGET: Final[Mapping[str, str]] = {
    "restock": "internal",
    "scrap": "inventory_loss",
    "repair": "repair",
    "return_to_supplier": "supplier",
}
# CBV business step and disposition of the inspection movements.
_CBV: Final[Mapping[str, tuple[str, str]]] = {
    "restock": ("inspecting", "sellable_accessible"),
    "scrap": ("inspecting", "damaged"),
    "repair": ("inspecting", "damaged"),
    "return_to_supplier": ("inspecting", "returned"),
}


def _n(qty: Decimal) -> str:
    """A quantity as people write it: 2, not 2.000."""
    return f"{qty.normalize():f}"


def _refuse(code: str, message: str) -> WorkflowError:
    return WorkflowError(code, message)


def check_decision(ref: str, status: str) -> None:
    """Approve or reject: only a requested return."""
    if status != "requested":
        raise _refuse("invalid_transition", f"RMA {ref} is {status}; only a requested RMA is approved or rejected")


def check_close(ref: str, status: str) -> None:
    if status not in ("inspected", "rejected"):
        raise _refuse("invalid_transition", f"RMA {ref} is {status}; it closes once inspected (or rejected)")


@dataclass(frozen=True, slots=True)
class RmaLine:
    sku: str
    qty: Decimal
    serial: str | None
    lot: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Received:
    """Goods already received against the RMA (one per return movement)."""

    sku: str
    qty: Decimal
    serial: str | None
    lot: str | None


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    line: int | None  # the RMA line it counts against
    exception: str | None  # why it is unexpected, for the receipt_exception alarm


def _matches(line: RmaLine, sku: str, serial: str | None, lot: str | None) -> bool:
    return line.sku == sku and (line.serial is None or line.serial == serial) and (line.lot is None
                                                                                  or line.lot == lot)


def check_receipt(ref: str, status: str, lines: Sequence[RmaLine], before: Sequence[Received],
                  item: Received) -> ReceiptCheck:
    """Match one returned item to the RMA's lines. The goods still move whatever this says (the
    scan is the truth); an exception is for a person to look at."""
    if status not in ("approved", "received"):
        return ReceiptCheck(None, f"return against RMA {ref}, which is {status} (not approved)")
    remaining = [ln.qty for ln in lines]
    for b in before:  # earlier receipts fill lines in order
        for i, ln in enumerate(lines):
            if _matches(ln, b.sku, b.serial, b.lot) and remaining[i] > 0:
                remaining[i] -= min(remaining[i], b.qty)
                break
    candidates = [i for i, ln in enumerate(lines) if _matches(ln, item.sku, item.serial, item.lot)]
    if not candidates:
        return ReceiptCheck(None, f"{item.sku}" + (f" serial {item.serial}" if item.serial else "")
                            + f" is not on RMA {ref}")
    for i in candidates:
        if remaining[i] >= item.qty:
            return ReceiptCheck(i, None)
    return ReceiptCheck(candidates[0], f"{_n(item.qty)} × {item.sku} is more than RMA {ref} still expects "
                                       f"({_n(sum((remaining[i] for i in candidates), Decimal(0)))})")


def status_after_receipt(status: str) -> str:
    return "received" if status in ("approved", "received") else status


@dataclass(frozen=True, slots=True)
class InspectLine:
    sku: str
    qty: Decimal
    serial: str | None
    lot: str | None
    disposition: str


@dataclass(frozen=True, slots=True)
class Inspection:
    postings: tuple[Posting, ...]
    complete: bool  # every received unit has now been inspected


def plan_inspection(ref: str, status: str, returns_location: str, targets: Mapping[str, str],
                    received: Sequence[Received], inspected: Sequence[InspectLine],
                    lines: Sequence[InspectLine], ts: datetime) -> Inspection:
    """The movements out of the returns location for ``lines``; ``targets`` maps a disposition to
    the location code it sends goods to (the site's location of ``DISPOSITION_TARGET`` type)."""
    if status not in ("received", "inspected"):
        raise _refuse("not_received", f"RMA {ref} is {status}; goods are inspected after they are received")
    if not lines:
        raise _refuse("nothing_to_inspect", "an inspection needs at least one line")

    def key(x: Received | InspectLine) -> tuple[str, str | None, str | None]:
        return (x.sku, x.serial, x.lot)

    left: dict[tuple[str, str | None, str | None], Decimal] = {}
    for r in received:
        left[key(r)] = left.get(key(r), Decimal(0)) + r.qty
    for done in inspected:
        left[key(done)] = left.get(key(done), Decimal(0)) - done.qty
    postings: list[Posting] = []
    for ln in lines:
        if ln.disposition not in DISPOSITIONS:
            raise _refuse("invalid_disposition", f"disposition must be one of {', '.join(DISPOSITIONS)}")
        if ln.qty <= 0:
            raise _refuse("invalid_quantity", f"inspected quantity must be positive, not {ln.qty}")
        have = left.get(key(ln), Decimal(0))
        if ln.qty > have:
            what = ln.sku + (f" serial {ln.serial}" if ln.serial else "") + (f" lot {ln.lot}" if ln.lot else "")
            raise _refuse("not_received", f"RMA {ref}: {_n(ln.qty)} × {what} inspected but only {_n(have)} received "
                                          "and not yet inspected")
        target = targets.get(ln.disposition)
        if target is None:
            raise _refuse("no_location", f"the returns site has no {DISPOSITION_TARGET[ln.disposition]} location "
                                         f"for {ln.disposition}")
        left[key(ln)] = have - ln.qty
        step, disposition = _CBV[ln.disposition]
        postings.append(Posting(ln.sku, ln.qty, returns_location, target, ln.lot, ln.serial, None, step,
                                disposition, ref, ts))
    return Inspection(tuple(postings), all(v <= 0 for v in left.values()))


@dataclass(frozen=True, slots=True)
class Refund:
    amount: Decimal
    currency: str
    status: str  # pending, paid


def check_refund(ref: str, status: str, refund: Refund) -> None:
    if status not in ("received", "inspected", "closed"):
        raise _refuse("invalid_transition", f"RMA {ref} is {status}; a refund follows receipt of the goods")
    if refund.amount <= 0:
        raise _refuse("invalid_amount", "a refund amount must be positive")
    if refund.status not in ("pending", "paid"):
        raise _refuse("invalid_refund_status", "refund status must be pending or paid")
