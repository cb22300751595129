"""``normal-day``: a day at the DC with everything working.

Timeline (simulated minutes after the window's start; needs about 3.5 simulated hours plus 10
minutes per extra truck):

* 00:02 a supplier truck at dock door 1: two pallets of six RFID-tagged cases roll in through the
  gate (inbound passages, supplier -> dock 1); a forklift passes the neighbouring door (stray
  reads below the RSSI floor); at 00:07 a pallet parks by the outer antennas for a while (one
  zone only: an observation, no movement).
* 00:05 receiving on handheld 1: pallet labels (SSCC + GTIN + lot + expiry + count) of yoghurt and
  milk, then serialised insulin pens one by one (GS1 DataMatrix).
* 00:25 putaway on handheld 2 to bins A01-A04; 00:50 cycle counts: A01 agrees, A03 is one milk
  case short (one movement to inventory loss).
* 01:00 picks per shipment to staging; 01:30 loading (ship scans, one truck every 10 minutes);
  the trucks leave the DC yard 12 minutes after loading starts, drive to customer A or B
  (GPS JSON or NMEA, noise, ~1 % bad fixes), park; the driver scans the goods off 8 minutes later.
* 03:20 two cases go back out through door 1 (outbound passages, dock 1 -> supplier).
* one insulin pen comes back from customer A an hour after the last delivery (return, RMA).
* All day: reefer loggers (door openings while loading and unloading stay inside 2-8 °C), a cold
  room logger (door openings push it above 8 °C for a minute or two, shorter than the profile's
  10-minute delay), heartbeats with draining batteries.

Afterwards the platform shows: every shipment ``delivered`` with events loading, departed,
arrived, delivered; the expected balances (``expected["balances"]``); 10 tagged cases at dock 1;
no alarms at all (no temperature alarm, no stock discrepancy, no battery alarm, no delay); no
dead letters.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simulators.messages import Message
from simulators.models.coldchain import DoorOpening, EnvSensorModel
from simulators.models.gs1codes import sscc
from simulators.models.rfid_gate import GateModel
from simulators.models.scanner import ScannerModel
from simulators.models.warehouse import Warehouse
from simulators.provision import DeviceDef
from simulators.scenarios import world as w
from simulators.scenarios.base import ScenarioContext, ScenarioPlan, streams_of
from simulators.scenarios.trips import Trip, heartbeats, plan_trip, reefer_messages, trip_devices, trip_master

NAME = "normal-day"
MAX_TRUCKS = 8


def min_span_s(trucks: int) -> float:
    return (210 + 10 * (trucks - 1)) * 60.0


def dc_scanners(ctx: ScenarioContext, prefix: str) -> tuple[ScannerModel, ScannerModel, list[DeviceDef]]:
    hh1 = ScannerModel(f"sim-{prefix}-hh1", ctx.rng("hh1"), ctx.tag)
    hh2 = ScannerModel(f"sim-{prefix}-hh2", ctx.rng("hh2"), ctx.tag, separator="|", epoch_ts=True)
    devices = [DeviceDef(hh1.device_id, {"kind": "scanner", "site": w.SITE, "location": w.DOCK1, "mode": "receive"}),
               DeviceDef(hh2.device_id, {"kind": "scanner", "site": w.SITE, "location": w.DOCK1, "mode": "putaway"})]
    return hh1, hh2, devices


def gate_device(device_id: str) -> DeviceDef:
    return DeviceDef(device_id, {"kind": "rfid_gate", "site": w.SITE,
                                 "gate": {"outer": {"antennas": [1, 2], "location": w.SUPPLIER},
                                          "inner": {"antennas": [3, 4], "location": w.DOCK1}}})


def cold_room(ctx: ScenarioContext, device_id: str, doors_every_min: float = 40.0) -> list[Message]:
    rng = ctx.rng("coldroom-doors")
    doors = []
    t = ctx.at(10)
    while t < ctx.clock.sim_end:
        doors.append(DoorOpening(t, rng.uniform(45, 90), rng.uniform(3.0, 4.5)))
        t += timedelta(minutes=doors_every_min * rng.uniform(0.7, 1.3))
    model = EnvSensorModel(device_id, ctx.rng("coldroom"), ctx.tag, setpoint_c=3.5, every_s=60.0, rh_pct=85.0,
                           doors=doors, probe="room-air")
    return model.messages(ctx.clock.sim_start, ctx.clock.sim_end)


def build(ctx: ScenarioContext) -> ScenarioPlan:
    trucks = max(1, min(MAX_TRUCKS, ctx.options.devices or 2))
    if ctx.clock.span_s < min_span_s(trucks):
        raise ValueError(f"{NAME} with {trucks} truck(s) needs {min_span_s(trucks) / 3600:.1f} simulated hours; "
                         f"duration x speedup gives {ctx.clock.span_s / 3600:.1f} (raise --speedup or --duration)")
    day = ctx.clock.sim_start.date()
    wh = Warehouse(ctx.rng("warehouse"), physical={w.DOCK1, w.DOCK2, w.STAGE, w.RETURNS, w.COLD_ROOM, *w.BINS})
    hh1, hh2, devices = dc_scanners(ctx, "nd")
    messages: list[Message] = []
    master: list[tuple[str, Any]] = list(w.master_data())

    # --- inbound: RFID gate and receiving -------------------------------------------------------
    gate = GateModel(f"sim-{ctx.tag}-gate1", ctx.rng("gate1"), ctx.tag)
    base = w.serial_base(ctx.tag)
    cases = [w.sgtin(base, n) for n in range(12)]
    t = gate.passage(ctx.at(2), cases[:6], "inbound")
    gate.neighbour_traffic(ctx.at(3), [w.sgtin(base, n) for n in range(100, 106)])
    gate.passage(t + timedelta(seconds=40), cases[6:], "inbound")
    gate.lingering(ctx.at(7), w.sgtin(base, 200), 25.0, "outer")
    gate.passage(ctx.at(200), cases[:2], "outbound")
    devices.append(gate_device(gate.device_id))

    yog = w.lot(w.YOG, ctx.tag, "Y", day)
    milk = w.lot(w.MILK, ctx.tag, "M", day)
    pens = w.lot(w.PHARMA, ctx.tag, "P", day)
    yog_per, milk_per, pens_per = 18, 12, 2
    po = f"PO-{ctx.up}"
    wh.receive_pallet(ctx.at(5), hh1, yog, yog_per * trucks + 6, w.DOCK1, w.SUPPLIER, sscc(w.COMPANY_PREFIX, 1), po)
    wh.receive_pallet(ctx.at(8), hh1, milk, milk_per * trucks + 6, w.DOCK1, w.SUPPLIER, sscc(w.COMPANY_PREFIX, 2), po)
    serials = [f"{ctx.up}{n:04d}" for n in range(pens_per * trucks)]
    wh.receive_units(ctx.at(12), hh1, pens, serials, w.DOCK1, w.SUPPLIER, po)

    # --- putaway and counts --------------------------------------------------------------------
    # Yoghurt goes to two bins; odd trips pick from A01, even ones from A02.
    yog_total = yog_per * trucks + 6
    a01 = yog_per * ((trucks + 1) // 2) + 3
    wh.putaway(ctx.at(25), hh2, yog, a01, w.DOCK1, w.BINS[0])
    wh.putaway(ctx.at(28), hh2, yog, yog_total - a01, w.DOCK1, w.BINS[1])
    wh.putaway(ctx.at(31), hh2, milk, milk_per * trucks + 6, w.DOCK1, w.BINS[2])
    wh.putaway_units(ctx.at(34), hh2, pens, serials, w.DOCK1, w.BINS[3])
    wh.count(ctx.at(50), hh2, yog, a01, w.BINS[0], w.LOSS)
    wh.count(ctx.at(52), hh2, milk, milk_per * trucks + 5, w.BINS[2], w.LOSS)  # one case short

    # --- trips ---------------------------------------------------------------------------------
    trips: list[Trip] = []
    promised = ctx.clock.sim_end + timedelta(days=1)  # promised for tomorrow: never late
    for k in range(trucks):
        customer = w.CUSTOMERS["A" if k % 2 == 0 else "B"]
        loading = ctx.at(90 + 10 * k)
        trip = plan_trip(ctx, k + 1, customer, start=ctx.clock.sim_start,
                         wait_s=(loading - ctx.clock.sim_start).total_seconds() + 12 * 60,
                         fmt="nmea" if k % 2 else "json")
        trips.append(trip)
        master += trip_master(trip, promised_at=promised,
                              lines=[(w.YOG.sku, yog_per), (w.MILK.sku, milk_per), (w.PHARMA.sku, pens_per)],
                              origin=w.STAGE)
        devices += trip_devices(trip)
        mine = serials[k * pens_per:(k + 1) * pens_per]
        # picks: yoghurt, milk, the pens one by one
        pick_at = ctx.at(60 + 4 * k)
        wh.pick(pick_at, hh2, yog, yog_per, w.BINS[k % 2], w.STAGE)
        wh.pick(pick_at + timedelta(seconds=70), hh2, milk, milk_per, w.BINS[2], w.STAGE)
        wh.pick_units(pick_at + timedelta(seconds=140), hh2, pens, mine, w.BINS[3], w.STAGE)
        # loading
        wh.ship(loading, hh1, yog, yog_per, w.STAGE, trip.vehicle, trip.ref)
        wh.ship(loading + timedelta(seconds=60), hh1, milk, milk_per, w.STAGE, trip.vehicle, trip.ref)
        wh.ship_units(loading + timedelta(seconds=120), hh1, pens, mine, w.STAGE, trip.vehicle, trip.ref)
        # delivery by the driver
        assert trip.driver_scanner is not None
        drop = trip.arrives_at + timedelta(minutes=8)
        wh.deliver(drop, trip.driver_scanner, yog, yog_per, trip.vehicle, customer.location, trip.ref)
        wh.deliver(drop + timedelta(seconds=45), trip.driver_scanner, milk, milk_per, trip.vehicle,
                   customer.location, trip.ref)
        wh.deliver_units(drop + timedelta(seconds=90), trip.driver_scanner, pens, mine, trip.vehicle,
                         customer.location, trip.ref)
        messages += trip.messages
        messages += reefer_messages(ctx, trip, loading_at=loading)
        for device_id, battery in ((trip.tracker, 88.0), (trip.reefer, 71.0), (trip.driver, 64.0)):
            messages += heartbeats(ctx, device_id, battery=battery, drain=1.5)

    # --- a return: one pen from the first trip's customer ---------------------------------------
    last_drop = max(t.arrives_at for t in trips) + timedelta(minutes=10)
    wh.return_unit(last_drop + timedelta(minutes=50), hh1, pens, serials[0], trips[0].customer.location,
                   w.RETURNS, f"RMA-{ctx.up}-1")

    room = f"sim-{ctx.tag}-cold1"
    devices.append(DeviceDef(room, {"kind": "env_sensor", "site": w.SITE, "location": w.COLD_ROOM,
                                    "profile": w.CHILLED}))
    messages += cold_room(ctx, room)
    messages += gate.messages() + wh.messages
    for device_id, battery in ((hh1.device_id, 92.0), (hh2.device_id, 57.0), (gate.device_id, 100.0),
                               (room, 80.0)):
        messages += heartbeats(ctx, device_id, battery=battery, drain=0.8)
    messages = [m for m in messages if m.at <= ctx.clock.sim_end]

    expected = {
        "shipments": {t.ref: "delivered" for t in trips},
        "shipment_events": ["loading", "departed", "arrived", "delivered"],
        "balances": {**{k: v for k, v in wh.expected_balances(
            [w.DOCK1, w.STAGE, w.RETURNS, w.LOSS, *w.BINS, *(t.vehicle for t in trips),
             *(c.location for c in w.CUSTOMERS.values())]).items()}, (w.CASE.sku, w.DOCK1, ""): 10.0},
        "lots": [yog.lot, milk.lot, pens.lot],
        "rfid_movements": {"inbound": 12, "outbound": 2},
        "scan_movements": wh.movements,
        "alarms": [],
        "dead_letters": {},
        "devices": sorted({d.device_id for d in devices}),
    }
    shows = [f"{trucks} shipment(s) delivered: {', '.join(t.ref for t in trips)}",
             f"{wh.movements} scan movements and 14 RFID gate movements (12 in, 2 out)",
             "one cycle-count shrink of 1 milk case to inventory loss",
             "no alarms, no dead letters"]
    return ScenarioPlan(master, devices, streams_of(messages), expected, shows, len(messages))
