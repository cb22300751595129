"""The simulated world every scenario shares: one distribution centre, two customers, items,
environmental profiles and geofences, all with stable codes (``SIM-...``) and created by
idempotent PUTs, so running scenarios again and again keeps one copy of it.

Things that carry event-time state (vehicles, shipments, trackers, sensors, gates, drivers'
scanners, lots and serials) are per run, tagged with the run tag: a rerun within the same
simulated hours would otherwise interleave two tracks of one tracker, or two days of readings of
one sensor, and the platform would rightly see nonsense. The DC's handheld scanners are stable
devices (their scans refer to per-run lots and shipments); they get a fresh password through
``rotate-secret`` on every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from core.epc import encode_sgtin96
from simulators.models.gps import Leg, Point
from simulators.models.gs1codes import gtin14
from simulators.models.warehouse import Item, Lot

COMPANY_PREFIX: Final = "7350053"  # 7 digits: the SGTIN-96 partition follows from it
SITE: Final = "SIM-DC1"
DC_FENCE: Final = "SIM-DC1-YARD"
DC_CENTRE: Final = Point(52.3000, 4.7600)
DC_PARKING: Final = Point(52.3006, 4.7603)  # ~70 m from the yard's centre
DC_GATE: Final = Point(52.2985, 4.7625)
DC_RADIUS_M: Final = 300.0
SUPPLIER: Final = "SIM-DC1-SUP"
DOCK1: Final = "SIM-DC1-DOCK1"
DOCK2: Final = "SIM-DC1-DOCK2"
STAGE: Final = "SIM-DC1-STAGE"
RETURNS: Final = "SIM-DC1-RET"
LOSS: Final = "SIM-DC1-LOSS"
COLD_ROOM: Final = "SIM-DC1-COLD"
BINS: Final = tuple(f"SIM-DC1-A{i:02d}" for i in range(1, 7))
CHILLED: Final = "SIM-CHILLED"
CRT: Final = "SIM-CRT"

YOG: Final = Item("SIM-YOG", "Yoghurt 6x125 g", gtin14(COMPANY_PREFIX, "10001"), CHILLED)
MILK: Final = Item("SIM-MILK", "Milk 1 l, case of 12", gtin14(COMPANY_PREFIX, "10002"), CHILLED)
PHARMA: Final = Item("SIM-INSULIN", "Insulin pen (serialised)", gtin14(COMPANY_PREFIX, "20001"), CHILLED,
                     serialised=True)
CASE: Final = Item("SIM-CASE", "RFID-tagged case of sauces", gtin14(COMPANY_PREFIX, "30001"))
UNKNOWN_GTIN: Final = gtin14(COMPANY_PREFIX, "99999")  # valid check digit, no item has it


@dataclass(frozen=True, slots=True)
class Customer:
    key: str
    site: str
    location: str
    fence: str
    centre: Point
    radius_m: float
    route: tuple[Point, ...]  # from the DC gate to the customer's parking spot
    midway: int  # index in ``route`` after which a stop on the road happens


CUSTOMERS: Final = {
    "A": Customer("A", "SIM-CUST-A", "SIM-CUST-A", "SIM-CUST-A-YARD", Point(52.3520, 4.8600), 250.0,
                  (Point(52.2960, 4.7700), Point(52.3050, 4.7900), Point(52.3150, 4.8100), Point(52.3400, 4.8450),
                   Point(52.3505, 4.8585), Point(52.3518, 4.8602)), 3),
    "B": Customer("B", "SIM-CUST-B", "SIM-CUST-B", "SIM-CUST-B-YARD", Point(52.2450, 4.8300), 250.0,
                  (Point(52.2960, 4.7700), Point(52.2900, 4.7800), Point(52.2650, 4.8100), Point(52.2520, 4.8230),
                   Point(52.2462, 4.8285), Point(52.2452, 4.8302)), 2),
}


def master_data() -> list[tuple[str, Mapping[str, Any]]]:
    """The shared world as PUTs, in dependency order."""
    puts: list[tuple[str, Mapping[str, Any]]] = [
        (f"/geofences/{DC_FENCE}", {"type": "circle", "lat": DC_CENTRE.lat, "lon": DC_CENTRE.lon,
                                    "radius_m": DC_RADIUS_M}),
    ]
    for c in CUSTOMERS.values():
        puts.append((f"/geofences/{c.fence}", {"type": "circle", "lat": c.centre.lat, "lon": c.centre.lon,
                                               "radius_m": c.radius_m}))
    puts.append((f"/sites/{SITE}", {"name": "Simulated distribution centre", "tz": "Europe/Amsterdam",
                                    "geofence": DC_FENCE}))
    for c in CUSTOMERS.values():
        puts.append((f"/sites/{c.site}", {"name": f"Customer {c.key} store", "tz": "Europe/Amsterdam",
                                          "geofence": c.fence}))
    locations = [(SUPPLIER, "supplier", "Suppliers' deliveries"), (DOCK1, "dock", "Dock door 1"),
                 (DOCK2, "dock", "Dock door 2"), (STAGE, "staging", "Outbound staging"),
                 (RETURNS, "returns", "Returns area"), (LOSS, "inventory_loss", "Inventory loss"),
                 (COLD_ROOM, "internal", "Cold room"),
                 *[(b, "internal", f"Bin {b[-3:]}") for b in BINS]]
    puts += [(f"/locations/{code}", {"site": SITE, "type": type_, "name": name}) for code, type_, name in locations]
    puts += [(f"/locations/{c.location}", {"site": c.site, "type": "customer", "name": f"Customer {c.key}"})
             for c in CUSTOMERS.values()]
    puts += [
        (f"/profiles/{CHILLED}", {"temp_min_c": 2.0, "temp_max_c": 8.0, "delay_s": 600, "hysteresis_c": 0.5}),
        (f"/profiles/{CRT}", {"temp_min_c": 15.0, "temp_max_c": 25.0, "delay_s": 1800, "hysteresis_c": 0.5}),
    ]
    for item in (YOG, MILK, PHARMA, CASE):
        body: dict[str, Any] = {"name": item.name, "gtin": item.gtin}
        if item.profile:
            body["profile"] = item.profile
        puts.append((f"/items/{item.sku}", body))
    return puts


def vehicle_put(code: str, plate: str) -> tuple[str, Mapping[str, Any]]:
    return f"/locations/{code}", {"site": SITE, "type": "vehicle", "name": f"Truck {plate}"}


def lot(item: Item, tag: str, suffix: str, produced: date) -> Lot:
    """Lots are per run, so a count or a balance of one run is never mixed with another's."""
    # 60 days of shelf life: beyond the 30-day expiry warning, so a normal day raises no lot_expiring.
    return Lot(item, f"L{tag.upper()}{suffix}"[:20], produced + timedelta(days=60))


def sgtin(serial_base: int, n: int) -> str:
    return encode_sgtin96(CASE.gtin, serial_base + n, len(COMPANY_PREFIX), filter_value=2)


def serial_base(tag: str) -> int:
    """SGTIN-96 serials of this run: distinct per run, well inside the 38-bit range."""
    return (int(tag, 36) % 100_000_000) * 1000


def trip_legs(customer: Customer, *, wait_s: float, road_stop_s: float = 0.0, at_customer_s: float = 1800.0,
              home: bool = True) -> list[Leg]:
    """Parked at the DC for ``wait_s``, out of the yard, the road (with an optional stop), parked at
    the customer, and back home."""
    mid = customer.midway
    legs = [Leg("park", seconds=wait_s),
            Leg("drive", waypoints=(DC_GATE, customer.route[0]), speed_kmh=20.0),
            Leg("drive", waypoints=customer.route[1:mid + 1], speed_kmh=70.0)]
    if road_stop_s > 0:
        legs.append(Leg("stop", seconds=road_stop_s))
    legs += [Leg("drive", waypoints=customer.route[mid + 1:-1], speed_kmh=60.0),
             Leg("drive", waypoints=customer.route[-1:], speed_kmh=15.0),
             Leg("park", seconds=at_customer_s)]
    if home:
        back = tuple(reversed(customer.route[:-1]))
        legs += [Leg("drive", waypoints=back, speed_kmh=60.0),
                 Leg("drive", waypoints=(DC_GATE, DC_PARKING), speed_kmh=15.0),
                 Leg("park", seconds=3600.0)]
    return legs


def arrival_index(legs: list[Leg]) -> int:
    """Index of the leg parked at the customer."""
    return [i for i, leg in enumerate(legs) if leg.kind == "park"][1]
