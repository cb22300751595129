"""Scans to stock movements, and the arithmetic of a double-entry ledger.

A movement always goes from one location to another; suppliers, customers, inventory loss and
vehicles are locations too, so every item nets to zero over all locations. The adapter looks up
what a scan refers to (``ScanFacts``) and this module decides what it means. A count cannot be
decided here alone: its adjustment depends on the book balance at the count's event time, which
the store computes (``count_adjustment`` is the rule it applies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Final

from core.contract import Scan
from core.gs1 import ScanCode

PHYSICAL_TYPES: Final = frozenset({"internal", "dock", "staging", "vehicle", "returns"})

# CBV business step and disposition per scan mode (GS1 CBV 2.0 vocabulary).
BIZ_STEP: Final[Mapping[str, tuple[str, str]]] = {
    "receive": ("receiving", "in_progress"),
    "putaway": ("storing", "sellable_accessible"),
    "move": ("storing", "sellable_accessible"),
    "pick": ("picking", "in_progress"),
    "ship": ("loading", "in_transit"),
    "deliver": ("arriving", "sellable_accessible"),
    "count": ("cycle_counting", "sellable_accessible"),
    "return": ("receiving", "returned"),
}
RFID_STEP: Final[Mapping[str, tuple[str, str]]] = {
    "inbound": ("receiving", "in_progress"),
    "outbound": ("shipping", "in_transit"),
}


class ScanRejectedError(ValueError):
    """The scan is well-formed but cannot become a movement; ``reason`` is the dead-letter code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Location:
    code: str
    site: str
    type: str


@dataclass(frozen=True, slots=True)
class ShipmentInfo:
    ref: str
    vehicle: str
    customer: str
    origin: str
    status: str


@dataclass(frozen=True, slots=True)
class ScanFacts:
    """What the scan refers to, looked up by the adapter."""

    device_kind: str
    device_location: str | None
    device_mode: str | None
    sku: str | None                                   # the item of the scanned GTIN, None when unknown
    locations: Mapping[str, Location]                 # every location code the plan may name
    by_type_in_site: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (site, type)
    shipment: ShipmentInfo | None = None              # the shipment named by scan.ref, if any
    serial_location: str | None = None                # where the serial was just before the scan (event time)


@dataclass(frozen=True, slots=True)
class Posting:
    """One movement to record."""

    sku: str
    qty: Decimal
    from_location: str
    to_location: str
    lot: str | None
    serial: str | None
    expiry: date | None
    biz_step: str
    disposition: str
    ref: str | None
    ts: datetime


@dataclass(frozen=True, slots=True)
class PendingReturn:
    """A serialised return whose serial was not at a customer just before the return (in event
    time): where it comes from is not known yet. It waits for the serial's delivery instead of
    being booked from a guessed customer, so that every arrival order books it alike."""

    sku: str
    serial: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class CountRequest:
    """A cycle count: the adjustment is ``counted - book balance`` at ``ts``, against ``loss_location``."""

    sku: str
    location: str
    lot: str | None
    expiry: date | None
    counted: Decimal
    loss_location: str
    ref: str | None
    ts: datetime


def _qty(scan: Scan, code: ScanCode) -> Decimal:
    if scan.qty is not None:
        return Decimal(str(scan.qty))
    if code.count is not None:
        return Decimal(code.count)
    return Decimal(1)


def _location(facts: ScanFacts, code: str | None, what: str) -> Location:
    if code is None:
        raise ScanRejectedError("missing_location", f"the scan has no {what} and the device has no default location")
    loc = facts.locations.get(code)
    if loc is None:
        raise ScanRejectedError("unknown_location", f"{what} {code!r} is not a known location")
    return loc


def _one_of_type(facts: ScanFacts, site: str, type_: str, purpose: str) -> str:
    found = facts.by_type_in_site.get((site, type_), ())
    if not found:
        raise ScanRejectedError("no_" + type_ + "_location",
                           f"site {site!r} has no location of type {type_!r} to use as {purpose}")
    return found[0]  # sorted by code by the adapter: deterministic when a site has several


def _need_shipment(scan: Scan, facts: ScanFacts) -> ShipmentInfo:
    if facts.shipment is None:
        raise ScanRejectedError("unknown_shipment",
                           f"a {scan.mode or facts.device_mode} scan needs 'ref' naming a known shipment, "
                           f"got {scan.ref!r}")
    if facts.shipment.status == "cancelled":
        raise ScanRejectedError("shipment_cancelled", f"shipment {facts.shipment.ref!r} is cancelled")
    return facts.shipment


def plan_scan(scan: Scan, code: ScanCode, facts: ScanFacts) -> Posting | CountRequest | PendingReturn:
    """Decide the movement (or the count) a scan stands for, or raise ``ScanRejectedError``."""
    if facts.device_kind != "scanner":
        raise ScanRejectedError("mode_not_allowed", f"a {facts.device_kind} may not post scans")
    mode = scan.mode or facts.device_mode
    if mode is None:
        raise ScanRejectedError("missing_mode", "the scan has no 'mode' and the device has no default mode")
    gtin = code.gtin or code.content_gtin
    if gtin is None:
        raise ScanRejectedError("no_item_in_code", "the code identifies no trade item (no GTIN, AI 01 or 02)")
    if facts.sku is None:
        raise ScanRejectedError("unknown_gtin", f"GTIN {gtin} is not the GTIN of any item")
    qty = _qty(scan, code)
    if code.serial is not None and mode != "count" and qty != 1:
        raise ScanRejectedError("serial_quantity", f"a serialised unit (serial {code.serial!r}) has quantity 1, "
                                              f"not {qty}")
    step, disposition = BIZ_STEP[mode]
    if mode in ("deliver", "ship", "pick") and facts.shipment is not None \
            and scan.location is None and facts.device_location is None:
        # A driver's handheld rides on the truck and has no fixed location: the shipment named
        # by ``ref`` already says where the goods are and where they go.
        return _from_shipment(scan, code, facts, mode, qty, step, disposition)
    here = _location(facts, scan.location or facts.device_location, "location")
    if code.expiry is not None and code.expiry < scan.ts.date() and mode in ("receive", "count", "return"):
        disposition = "expired"

    def posting(src: str, dst: str) -> Posting:
        if src == dst:
            raise ScanRejectedError("same_location", f"a {mode} from {src!r} to itself moves nothing")
        return Posting(facts.sku, qty, src, dst, code.lot, code.serial, code.expiry,  # type: ignore[arg-type]
                       step, disposition, scan.ref, scan.ts)

    if mode == "receive":
        supplier = _one_of_type(facts, here.site, "supplier", "the supplier of a receipt")
        return posting(supplier, here.code)
    if mode in ("putaway", "move"):
        target = _location(facts, scan.to_location, "to_location")
        return posting(here.code, target.code)
    if mode == "pick":
        if scan.to_location is not None:
            return posting(here.code, _location(facts, scan.to_location, "to_location").code)
        if facts.shipment is not None:
            return posting(here.code, _need_shipment(scan, facts).vehicle)
        return posting(here.code, _one_of_type(facts, here.site, "staging", "the target of a pick"))
    if mode == "ship":
        return posting(here.code, _need_shipment(scan, facts).vehicle)
    if mode == "deliver":
        shipment = _need_shipment(scan, facts)
        return posting(shipment.vehicle, shipment.customer)
    if mode == "return":
        if code.serial is not None and not _at_customer(facts):
            return PendingReturn(facts.sku, code.serial, scan.ts)
        origin = _return_origin(facts, here)
        returns = here.code if here.type == "returns" else _one_of_type(facts, here.site, "returns", "returns")
        return posting(origin, returns)
    # count
    return CountRequest(facts.sku, here.code, code.lot, code.expiry, qty,
                        _one_of_type(facts, here.site, "inventory_loss", "the inventory loss of a count"),
                        scan.ref, scan.ts)


def _from_shipment(scan: Scan, code: ScanCode, facts: ScanFacts, mode: str, qty: Decimal, step: str,
                   disposition: str) -> Posting:
    """``pick``/``ship`` take the goods from the shipment's origin to its vehicle, ``deliver``
    from the vehicle to the customer."""
    shipment = _need_shipment(scan, facts)
    src, dst = (shipment.vehicle, shipment.customer) if mode == "deliver" else (shipment.origin, shipment.vehicle)
    if mode == "pick" and scan.to_location is not None:
        dst = _location(facts, scan.to_location, "to_location").code
    for code_ in (src, dst):
        _location(facts, code_, "shipment location")
    if src == dst:
        raise ScanRejectedError("same_location", f"a {mode} from {src!r} to itself moves nothing")
    return Posting(facts.sku, qty, src, dst, code.lot, code.serial, code.expiry,  # type: ignore[arg-type]
                   step, disposition, scan.ref, scan.ts)


def _at_customer(facts: ScanFacts) -> bool:
    known = facts.locations.get(facts.serial_location) if facts.serial_location is not None else None
    return known is not None and known.type == "customer"


def _return_origin(facts: ScanFacts, here: Location) -> str:
    """The customer the goods come back from: where the serial was delivered, else the site's customer."""
    if facts.serial_location is not None:
        known = facts.locations.get(facts.serial_location)
        if known is not None and known.type == "customer":
            return known.code
    return _one_of_type(facts, here.site, "customer", "the origin of a return")


def count_adjustment(request: CountRequest, book: Decimal, biz_step: str = "cycle_counting") -> Posting | None:
    """The movement that makes the book equal the count: surplus comes from inventory loss, a
    shortfall goes to it. None when the count agrees with the book."""
    diff = request.counted - book
    if diff == 0:
        return None
    src, dst = (request.loss_location, request.location) if diff > 0 else (request.location, request.loss_location)
    return Posting(request.sku, abs(diff), src, dst, request.lot, None, request.expiry, biz_step,
                   "sellable_accessible", request.ref, request.ts)


BalanceKey = tuple[str, str, str]  # (sku, location, lot or '')


def balance_deltas(postings: Iterable[Posting]) -> dict[BalanceKey, Decimal]:
    """Balance changes per (sku, location, lot): each posting leaves one location, enters another."""
    deltas: dict[BalanceKey, Decimal] = {}
    for p in postings:
        src, dst = (p.sku, p.from_location, p.lot or ""), (p.sku, p.to_location, p.lot or "")
        deltas[src] = deltas.get(src, Decimal(0)) - p.qty
        deltas[dst] = deltas.get(dst, Decimal(0)) + p.qty
    return deltas


def reversal_of(p: Posting) -> Posting:
    """The correcting movement: the same goods back the other way, at the original event time."""
    return Posting(p.sku, p.qty, p.to_location, p.from_location, p.lot, p.serial, p.expiry, p.biz_step,
                   p.disposition, p.ref, p.ts)
