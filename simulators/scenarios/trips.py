"""A delivery trip: the vehicle, its tracker, its reefer logger, the driver's scanner, the shipment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from simulators.messages import Message, rfc3339
from simulators.models.coldchain import DoorOpening, EnvSensorModel, Excursion
from simulators.models.gps import Track, TrackerModel, plan_track
from simulators.models.heartbeat import HeartbeatModel
from simulators.models.scanner import ScannerModel
from simulators.provision import DeviceDef
from simulators.scenarios.base import ScenarioContext
from simulators.scenarios.world import CHILLED, DC_PARKING, SITE, Customer, arrival_index, trip_legs, vehicle_put


@dataclass
class Trip:
    index: int
    ref: str
    vehicle: str
    customer: Customer
    tracker: str
    reefer: str
    driver: str
    track: Track
    departs_at: datetime
    arrives_at: datetime  # parked at the customer
    leaves_customer_at: datetime
    messages: list[Message] = field(default_factory=list)
    driver_scanner: ScannerModel | None = None
    bad_fixes: int = 0


def plan_trip(ctx: ScenarioContext, index: int, customer: Customer, *, start: datetime, wait_s: float,
              road_stop_s: float = 0.0, fmt: Literal["json", "nmea"] = "json",
              offline: tuple[float, float] | None = None, bad_fix_rate: float = 0.01) -> Trip:
    """The truck parks at the DC from ``start`` for ``wait_s`` (loading happens then), drives to the
    customer, parks there half an hour, drives home. ``offline`` is (from, to) in seconds after
    departure during which the tracker buffers."""
    legs = trip_legs(customer, wait_s=wait_s, road_stop_s=road_stop_s)
    rng = ctx.rng(f"trip{index}")
    track = plan_track(start, DC_PARKING, legs, rng)
    arrive_leg = arrival_index(legs)
    departs = track.leg_starts[1]
    window = None if offline is None else (departs + timedelta(seconds=offline[0]),
                                           departs + timedelta(seconds=offline[1]))
    tracker = TrackerModel(f"sim-{ctx.tag}-trk{index}", ctx.rng(f"tracker{index}"), ctx.tag, fmt=fmt,
                           offline=window, bad_fix_rate=bad_fix_rate)
    trip = Trip(index, f"SIM-{ctx.up}-S{index}", f"SIM-{ctx.up}-V{index}", customer, tracker.device_id,
                f"sim-{ctx.tag}-rf{index}", f"sim-{ctx.tag}-drv{index}", track, departs,
                track.leg_starts[arrive_leg], track.leg_starts[arrive_leg + 1])
    trip.messages += tracker.messages([f for f in track.fixes if f.ts < ctx.clock.sim_end])
    trip.bad_fixes = tracker.bad_fixes
    trip.driver_scanner = ScannerModel(trip.driver, ctx.rng(f"driver{index}"), ctx.tag, epoch_ts=True)
    return trip


def reefer_messages(ctx: ScenarioContext, trip: Trip, *, loading_at: datetime,
                    excursions: list[Excursion] | None = None) -> list[Message]:
    """The reefer logger: door open while loading and while unloading at the customer."""
    model = EnvSensorModel(trip.reefer, ctx.rng(f"reefer{trip.index}"), ctx.tag, setpoint_c=4.0, every_s=60.0,
                           probe="reefer-air",
                           doors=[DoorOpening(loading_at - timedelta(minutes=2), 600.0, 2.0),
                                  DoorOpening(trip.arrives_at + timedelta(minutes=3), 420.0, 2.0)],
                           excursions=excursions or [])
    return model.messages(ctx.clock.sim_start, ctx.clock.sim_end)


def heartbeats(ctx: ScenarioContext, device_id: str, *, battery: float, drain: float,
               every_s: float = 900.0) -> list[Message]:
    model = HeartbeatModel(device_id, ctx.rng(f"hb:{device_id}"), ctx.tag, battery_pct=battery,
                           drain_pct_per_h=drain, every_s=every_s)
    return model.messages(ctx.clock.sim_start, ctx.clock.sim_end)


def trip_master(trip: Trip, *, promised_at: datetime | None, lines: list[tuple[str, float]],
                origin: str) -> list[tuple[str, Mapping[str, Any]]]:
    body: dict[str, Any] = {"origin": origin, "destination": trip.customer.fence, "customer": trip.customer.location,
                            "vehicle": trip.vehicle, "profile": CHILLED,
                            "lines": [{"sku": s, "qty": q} for s, q in lines]}
    if promised_at is not None:
        body["promised_at"] = rfc3339(promised_at)
    return [vehicle_put(trip.vehicle, f"SIM-{trip.index}"), (f"/shipments/{trip.ref}", body)]


def trip_devices(trip: Trip) -> list[DeviceDef]:
    return [DeviceDef(trip.tracker, {"kind": "gps_tracker", "site": SITE, "vehicle": trip.vehicle}),
            DeviceDef(trip.reefer, {"kind": "env_sensor", "site": SITE, "vehicle": trip.vehicle}),
            DeviceDef(trip.driver, {"kind": "scanner", "site": SITE, "location": trip.vehicle, "mode": "deliver"})]
