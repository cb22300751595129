"""``late-delivery``: a shipment stuck in a traffic jam misses its promise.

One shipment to customer A, loaded at 00:30, promised for 01:30. The truck leaves at 00:40 and
stands in a jam on the motorway for 80 minutes; it arrives at about 02:15 and the driver scans
the goods off at about 02:20.

Afterwards the platform shows: the shipment ``delivered`` with a ``delivered_late`` event; a
``shipment_delayed`` alarm that was raised while the shipment was open (the promise lies in the
past of the wall clock, so the rule fires on the first update after loading) and cleared once it
was delivered; one after-sales ticket (cause ``late_delivery``); no temperature alarm, no dead
letter.
"""

from __future__ import annotations

from datetime import timedelta

from simulators.scenarios import one_trip as ot
from simulators.scenarios.base import ScenarioContext, ScenarioPlan, streams_of

NAME = "late-delivery"
SPAN_S = 150 * 60.0


def build(ctx: ScenarioContext) -> ScenarioPlan:
    ot.needs(ctx, NAME, SPAN_S)
    promised = ctx.at(90)
    day = ot.one_trip(ctx, "ld", road_stop_s=80 * 60.0, promised_at=promised)
    ot.in_span(ctx, day.delivered_at + timedelta(minutes=5), "the delivery")
    trip = day.trip
    expected = {
        "shipments": {trip.ref: "delivered"},
        "promised_at": promised,
        "delivered_at": day.delivered_at,
        "alarms": [{"type": "shipment_delayed", "shipment": trip.ref, "state": "cleared"}],
        "tickets": [{"shipment": trip.ref, "cause": "late_delivery"}],
        "events": ["loading", "departed", "arrived", "delivered", "delivered_late"],
        "dead_letters": {},
        "devices": sorted(d.device_id for d in day.devices),
    }
    shows = [f"shipment {trip.ref} delivered at ~{day.delivered_at:%H:%M} UTC, promised {promised:%H:%M} UTC",
             "a shipment_delayed alarm (cleared on delivery) and a late_delivery ticket",
             "no temperature alarm, no dead letters"]
    return ScenarioPlan(day.master, day.devices, streams_of(day.messages), expected, shows, len(day.messages))
