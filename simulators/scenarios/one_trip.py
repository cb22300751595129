"""The day of one shipment, shared by ``cold-chain-excursion``, ``late-delivery`` and
``offline-tracker``: receive, putaway, pick, load, drive, deliver, with the tracker, the reefer
logger and heartbeats. Each scenario changes one thing (an excursion, a jam, a dead modem)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from simulators.messages import Message
from simulators.models.coldchain import Excursion
from simulators.models.gs1codes import sscc
from simulators.models.warehouse import Warehouse
from simulators.provision import DeviceDef
from simulators.scenarios import world as w
from simulators.scenarios.base import ScenarioContext
from simulators.scenarios.normal_day import dc_scanners
from simulators.scenarios.trips import Trip, heartbeats, plan_trip, reefer_messages, trip_devices, trip_master


@dataclass
class OneTrip:
    trip: Trip
    warehouse: Warehouse
    loading_at: datetime
    delivered_at: datetime
    master: list[tuple[str, Any]] = field(default_factory=list)
    devices: list[DeviceDef] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


def one_trip(ctx: ScenarioContext, prefix: str, *, customer: str = "A", loading_min: float = 30.0,
             road_stop_s: float = 0.0, promised_at: datetime | None = None,
             excursions: list[Excursion] | None = None, offline: tuple[float, float] | None = None,
             bad_fix_rate: float = 0.01) -> OneTrip:
    day = ctx.clock.sim_start.date()
    wh = Warehouse(ctx.rng("warehouse"), physical={w.DOCK1, w.STAGE, *w.BINS})
    hh1, hh2, devices = dc_scanners(ctx, prefix)
    yog = w.lot(w.YOG, ctx.tag, "Y", day)
    wh.receive_pallet(ctx.at(3), hh1, yog, 30, w.DOCK1, w.SUPPLIER, sscc(w.COMPANY_PREFIX, 11), f"PO-{ctx.up}")
    wh.putaway(ctx.at(10), hh2, yog, 30, w.DOCK1, w.BINS[4])
    wh.pick(ctx.at(18), hh2, yog, 24, w.BINS[4], w.STAGE)
    loading = ctx.at(loading_min)
    trip = plan_trip(ctx, 1, w.CUSTOMERS[customer], start=ctx.clock.sim_start,
                     wait_s=(loading - ctx.clock.sim_start).total_seconds() + 10 * 60, road_stop_s=road_stop_s,
                     offline=offline, bad_fix_rate=bad_fix_rate)
    wh.ship(loading, hh1, yog, 24, w.STAGE, trip.vehicle, trip.ref)
    assert trip.driver_scanner is not None
    drop = trip.arrives_at + timedelta(minutes=8)
    wh.deliver(drop, trip.driver_scanner, yog, 24, trip.vehicle, trip.customer.location, trip.ref)
    out = OneTrip(trip, wh, loading, drop)
    out.master = [*w.master_data(), *trip_master(trip, promised_at=promised_at, lines=[(w.YOG.sku, 24)],
                                                 origin=w.STAGE)]
    out.devices = [*devices, *trip_devices(trip)]
    out.messages = [*wh.messages, *trip.messages, *reefer_messages(ctx, trip, loading_at=loading,
                                                                   excursions=excursions)]
    for device_id, battery in ((hh1.device_id, 90.0), (hh2.device_id, 60.0), (trip.tracker, 85.0),
                               (trip.reefer, 70.0), (trip.driver, 66.0)):
        out.messages += heartbeats(ctx, device_id, battery=battery, drain=1.0)
    out.messages = [m for m in out.messages if m.at <= ctx.clock.sim_end]
    return out


def needs(ctx: ScenarioContext, name: str, span_s: float) -> None:
    if ctx.clock.span_s < span_s:
        raise ValueError(f"{name} needs {span_s / 3600:.1f} simulated hours; duration x speedup gives "
                         f"{ctx.clock.span_s / 3600:.1f} (raise --speedup or --duration)")


def in_span(ctx: ScenarioContext, ts: datetime, what: str) -> None:
    if ts > ctx.clock.sim_end:
        raise ValueError(f"the window ends before {what}; raise --speedup or --duration")
