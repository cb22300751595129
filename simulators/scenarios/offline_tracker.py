"""``offline-tracker``: the truck's tracker loses its modem for the whole drive.

The same day as the other single-shipment scenarios (load at 00:30, leave at 00:40, customer A),
but the tracker's modem fails two minutes before departure. It keeps taking fixes and buffers
them; four minutes after parking at the customer it is back and flushes the backlog as arrays of
ten fixes, chunks in shuffled order; then the driver scans the goods off.

Run with ``offline=False`` (``--online``) for the baseline: the same fixes, published live.

Afterwards the platform shows the same as the online run: the shipment ``delivered`` with the
events loading, departed, arrived, delivered at the same simulated times (departure and arrival
decided from the late, out-of-order backlog); no alarms, no dead letters.
"""

from __future__ import annotations

from datetime import timedelta

from simulators.scenarios import one_trip as ot
from simulators.scenarios.base import ScenarioContext, ScenarioPlan, streams_of

NAME = "offline-tracker"
SPAN_S = 90 * 60.0


def build(ctx: ScenarioContext) -> ScenarioPlan:
    ot.needs(ctx, NAME, SPAN_S)
    dry = ot.one_trip(ctx, "ot")
    arrive = (dry.trip.arrives_at - dry.trip.departs_at).total_seconds()
    window = (-120.0, arrive + 240.0)
    day = ot.one_trip(ctx, "ot", offline=window) if ctx.options.offline else dry
    ot.in_span(ctx, day.delivered_at + timedelta(minutes=5), "the delivery")
    trip = day.trip
    buffered = sum(1 for m in day.messages if m.label == "position:backlog")
    expected = {
        "shipments": {trip.ref: "delivered"},
        "events": ["loading", "departed", "arrived", "delivered"],
        "offline": ctx.options.offline,
        "offline_window": (trip.departs_at + timedelta(seconds=window[0]),
                           trip.departs_at + timedelta(seconds=window[1])) if ctx.options.offline else None,
        "backlog_arrays": buffered,
        "alarms": [],
        "dead_letters": {},
        "devices": sorted(d.device_id for d in day.devices),
    }
    shows = [f"shipment {trip.ref} delivered with loading, departed, arrived, delivered",
             f"the tracker flushed {buffered} backlog arrays out of order" if ctx.options.offline
             else "the tracker was online all the time (baseline)",
             "no alarms, no dead letters"]
    return ScenarioPlan(day.master, day.devices, streams_of(day.messages), expected, shows, len(day.messages))
