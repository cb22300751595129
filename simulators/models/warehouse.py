"""Warehouse workflows on handheld scanners, with the stock they should leave behind.

Each step emits the scans a worker makes and books the same movement in a small expected ledger
(the rules of ``core.ledger``: receive from the site's supplier, putaway/move to ``to_location``,
pick to staging, ship staging -> vehicle with the shipment ref, deliver vehicle -> customer,
count against inventory loss, return customer -> returns). A step that would take a physical
location below zero raises: a scenario script that does so is a bug, and on the platform it
would raise a ``stock_discrepancy`` alarm.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from simulators.messages import Message
from simulators.models.gs1codes import element_strings, yymmdd
from simulators.models.scanner import ScannerModel

BalanceKey = tuple[str, str, str]  # (sku, location, lot or "")


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    name: str
    gtin: str  # GTIN-14
    profile: str | None = None
    serialised: bool = False  # carries AI 21 on every unit (pharma DataMatrix)


@dataclass(frozen=True, slots=True)
class Lot:
    item: Item
    lot: str
    expiry: date


@dataclass
class Warehouse:
    """The expected ledger plus the scans that produce it."""

    rng: random.Random
    physical: set[str]  # location codes whose balance may never go below zero
    balances: dict[BalanceKey, float] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    movements: int = 0

    # --- codes -----------------------------------------------------------------------------------

    def case_code(self, scanner: ScannerModel, lot: Lot) -> str:
        """A case label. Two layouts seen in the field: lot last (no separator needed) or lot in the
        middle, ended by the separator the scanner is configured for."""
        gtin, exp = lot.item.gtin, yymmdd(lot.expiry)
        if self.rng.random() < 0.5:
            return element_strings([("01", gtin), ("17", exp), ("10", lot.lot)], scanner.separator)
        return element_strings([("01", gtin), ("10", lot.lot), ("17", exp)], scanner.separator)

    def pallet_code(self, scanner: ScannerModel, lot: Lot, sscc: str, count: int) -> str:
        """A pallet label (GS1-128): SSCC, GTIN of the contained items, expiry, lot, count."""
        return element_strings([("00", sscc), ("02", lot.item.gtin), ("17", yymmdd(lot.expiry)), ("10", lot.lot),
                                ("37", str(count))], scanner.separator)

    def unit_code(self, scanner: ScannerModel, lot: Lot, serial: str) -> str:
        """A serialised unit's GS1 DataMatrix (]d2): GTIN, expiry, lot, serial."""
        return element_strings([("01", lot.item.gtin), ("17", yymmdd(lot.expiry)), ("10", lot.lot), ("21", serial)],
                               scanner.separator, symbology="]d2")

    # --- ledger ----------------------------------------------------------------------------------

    def _move(self, lot: Lot, src: str, dst: str, qty: float) -> None:
        key_src, key_dst = (lot.item.sku, src, lot.lot), (lot.item.sku, dst, lot.lot)
        left = self.balances.get(key_src, 0.0) - qty
        if src in self.physical and left < 0:
            raise ValueError(f"script error: {qty} {lot.item.sku} lot {lot.lot} taken from {src} holding "
                             f"{left + qty}")
        self.balances[key_src] = left
        self.balances[key_dst] = self.balances.get(key_dst, 0.0) + qty
        self.movements += 1

    def _emit(self, message: Message) -> None:
        self.messages.append(message)

    # --- workflows -------------------------------------------------------------------------------

    def receive_pallet(self, at: datetime, scanner: ScannerModel, lot: Lot, qty: int, dock: str, supplier: str,
                       sscc: str, po: str) -> None:
        """Receiving against a supplier delivery: the pallet label's AI 37 carries the quantity."""
        self._emit(scanner.scan(at, "receive", self.pallet_code(scanner, lot, sscc, qty), location=dock, ref=po))
        self._move(lot, supplier, dock, qty)

    def receive_units(self, at: datetime, scanner: ScannerModel, lot: Lot, serials: Iterable[str], dock: str,
                      supplier: str, po: str, every_s: float = 4.0) -> datetime:
        for serial in serials:
            self._emit(scanner.scan(at, "receive", self.unit_code(scanner, lot, serial), location=dock, ref=po))
            self._move(lot, supplier, dock, 1)
            at = _later(at, every_s)
        return at

    def putaway(self, at: datetime, scanner: ScannerModel, lot: Lot, qty: int, src: str, dst: str) -> None:
        self._emit(scanner.scan(at, "putaway", self.case_code(scanner, lot), qty=qty, location=src, to_location=dst))
        self._move(lot, src, dst, qty)

    def putaway_units(self, at: datetime, scanner: ScannerModel, lot: Lot, serials: Iterable[str], src: str,
                      dst: str, every_s: float = 4.0) -> datetime:
        for serial in serials:
            self._emit(scanner.scan(at, "putaway", self.unit_code(scanner, lot, serial), location=src,
                                    to_location=dst))
            self._move(lot, src, dst, 1)
            at = _later(at, every_s)
        return at

    def pick(self, at: datetime, scanner: ScannerModel, lot: Lot, qty: int, bin_: str, staging: str) -> None:
        """A pick without a shipment ref goes to the site's staging location."""
        self._emit(scanner.scan(at, "pick", self.case_code(scanner, lot), qty=qty, location=bin_))
        self._move(lot, bin_, staging, qty)

    def pick_units(self, at: datetime, scanner: ScannerModel, lot: Lot, serials: Iterable[str], bin_: str,
                   staging: str, every_s: float = 4.0) -> datetime:
        for serial in serials:
            self._emit(scanner.scan(at, "pick", self.unit_code(scanner, lot, serial), location=bin_))
            self._move(lot, bin_, staging, 1)
            at = _later(at, every_s)
        return at

    def ship(self, at: datetime, scanner: ScannerModel, lot: Lot, qty: int, staging: str, vehicle: str,
             ref: str) -> None:
        """Loading onto the shipment's vehicle; the first one makes the shipment ``loading``."""
        self._emit(scanner.scan(at, "ship", self.case_code(scanner, lot), qty=qty, location=staging, ref=ref))
        self._move(lot, staging, vehicle, qty)

    def ship_units(self, at: datetime, scanner: ScannerModel, lot: Lot, serials: Iterable[str], staging: str,
                   vehicle: str, ref: str, every_s: float = 4.0) -> datetime:
        for serial in serials:
            self._emit(scanner.scan(at, "ship", self.unit_code(scanner, lot, serial), location=staging, ref=ref))
            self._move(lot, staging, vehicle, 1)
            at = _later(at, every_s)
        return at

    def deliver(self, at: datetime, scanner: ScannerModel, lot: Lot, qty: int, vehicle: str, customer: str,
                ref: str) -> None:
        """The driver scans the goods off the truck at the customer (vehicle -> customer)."""
        self._emit(scanner.scan(at, "deliver", self.case_code(scanner, lot), qty=qty, location=vehicle, ref=ref))
        self._move(lot, vehicle, customer, qty)

    def deliver_units(self, at: datetime, scanner: ScannerModel, lot: Lot, serials: Iterable[str], vehicle: str,
                      customer: str, ref: str, every_s: float = 4.0) -> datetime:
        for serial in serials:
            self._emit(scanner.scan(at, "deliver", self.unit_code(scanner, lot, serial), location=vehicle, ref=ref))
            self._move(lot, vehicle, customer, 1)
            at = _later(at, every_s)
        return at

    def count(self, at: datetime, scanner: ScannerModel, lot: Lot, counted: int, bin_: str, loss: str) -> None:
        """A cycle count; a difference from the book goes to or from inventory loss."""
        self._emit(scanner.scan(at, "count", self.case_code(scanner, lot), qty=counted, location=bin_))
        book = self.balances.get((lot.item.sku, bin_, lot.lot), 0.0)
        if counted < book:
            self._move(lot, bin_, loss, book - counted)
        elif counted > book:
            self._move(lot, loss, bin_, counted - book)

    def return_unit(self, at: datetime, scanner: ScannerModel, lot: Lot, serial: str, customer: str, returns: str,
                    rma: str) -> None:
        """A customer return of one serialised unit, booked from the customer it was delivered to."""
        self._emit(scanner.scan(at, "return", self.unit_code(scanner, lot, serial), location=returns, ref=rma))
        self._move(lot, customer, returns, 1)

    def expected_balances(self, locations: Iterable[str]) -> dict[BalanceKey, float]:
        """Non-zero expected balances at the given locations."""
        wanted = set(locations)
        return {k: v for k, v in sorted(self.balances.items()) if k[1] in wanted and v != 0}


def _later(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)
