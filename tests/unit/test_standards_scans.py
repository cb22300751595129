"""Issue 11 in core: RFC 3339 lower case, and a driver's handheld scanning against a shipment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.contract import Limits, Scan, parse_ts
from core.gs1 import interpret
from core.ledger import Location, Posting, ScanFacts, ScanRejectedError, ShipmentInfo, plan_scan

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", ["2026-03-01t10:00:00z", "2026-03-01T10:00:00z", "2026-03-01t10:00:00Z",
                                   "2026-03-01t11:00:00+01:00"])
def test_rfc3339_lower_case_t_and_z(value: str) -> None:
    assert parse_ts(value, NOW, Limits()) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_rfc3339_lower_case_still_needs_an_offset() -> None:
    with pytest.raises(Exception, match="offset"):
        parse_ts("2026-03-01t10:00:00", NOW, Limits())


LOCATIONS = {
    "WH-A": Location("WH-A", "S1", "internal"),
    "TRUCK-1": Location("TRUCK-1", "S1", "vehicle"),
    "CUST-1": Location("CUST-1", "S1", "customer"),
    "STAGE": Location("STAGE", "S1", "staging"),
}
SHIPMENT = ShipmentInfo("SH-1", vehicle="TRUCK-1", customer="CUST-1", origin="WH-A", status="in_transit")
CODE = interpret("]C1010950600013435210L7")


def scan(mode: str, ref: str | None = "SH-1", location: str | None = None, to_location: str | None = None) -> Scan:
    return Scan("HH-1", "m1", NOW - timedelta(hours=1), "device", NOW, "code", mode, 2, location, to_location, ref)


def handheld(shipment: ShipmentInfo | None = SHIPMENT) -> ScanFacts:
    """A scanner riding on the truck: no fixed location, no default mode."""
    return ScanFacts("scanner", None, None, "SKU-A", LOCATIONS, {("S1", "staging"): ("STAGE",)}, shipment)


@pytest.mark.parametrize(("mode", "src", "dst", "step"), [
    ("deliver", "TRUCK-1", "CUST-1", "arriving"),
    ("ship", "WH-A", "TRUCK-1", "loading"),
    ("pick", "WH-A", "TRUCK-1", "picking"),
])
def test_handheld_scan_with_a_shipment_ref_needs_no_device_location(mode: str, src: str, dst: str, step: str) -> None:
    posting = plan_scan(scan(mode), CODE, handheld())
    assert isinstance(posting, Posting)
    assert (posting.from_location, posting.to_location, posting.biz_step) == (src, dst, step)
    assert (posting.qty, posting.lot, posting.ref) == (Decimal(2), "L7", "SH-1")


def test_handheld_pick_to_an_explicit_target() -> None:
    posting = plan_scan(scan("pick", to_location="STAGE"), CODE, handheld())
    assert isinstance(posting, Posting) and (posting.from_location, posting.to_location) == ("WH-A", "STAGE")


@pytest.mark.parametrize("mode", ["deliver", "ship", "pick", "receive"])
def test_handheld_scan_without_a_shipment_still_needs_a_location(mode: str) -> None:
    with pytest.raises(ScanRejectedError) as err:
        plan_scan(scan(mode, ref="NOPE"), CODE, handheld(None))
    assert err.value.reason == "missing_location"


def test_handheld_delivery_of_a_cancelled_shipment_is_refused() -> None:
    cancelled = ShipmentInfo("SH-1", "TRUCK-1", "CUST-1", "WH-A", "cancelled")
    with pytest.raises(ScanRejectedError) as err:
        plan_scan(scan("deliver"), CODE, handheld(cancelled))
    assert err.value.reason == "shipment_cancelled"


def test_a_fixed_scanner_keeps_its_own_location_for_ship() -> None:
    facts = ScanFacts("scanner", "STAGE", None, "SKU-A", LOCATIONS, {}, SHIPMENT)
    posting = plan_scan(scan("ship"), CODE, facts)
    assert isinstance(posting, Posting) and (posting.from_location, posting.to_location) == ("STAGE", "TRUCK-1")
