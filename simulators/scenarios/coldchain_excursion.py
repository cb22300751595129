"""``cold-chain-excursion``: a chilled shipment whose reefer is switched off during the driver's break.

One shipment of yoghurt (profile SIM-CHILLED: 2-8 °C, 10 minutes' delay, 0.5 °C hysteresis) is
received, put away, picked, loaded at 00:30 and leaves the DC at 00:40 for customer A. Midway the
driver takes a 45-minute break and the reefer unit goes off with the engine: the air warms from
4 °C to 12 °C over 12 minutes, stays there 15 minutes and is pulled back to 4 °C over 10 minutes
once the engine runs again. So the readings are above 8 °C for about half an hour, far longer
than the delay. Door openings while loading and unloading stay inside the range.

Afterwards the platform shows exactly one environmental alarm: ``temperature_high`` on the reefer
logger, for the shipment, cleared (back below 7.5 °C before the truck arrives), peak about 12 °C;
exactly one after-sales ticket for the shipment (cause: temperature excursion); the shipment
``delivered``; no other alarm, no dead letter.
"""

from __future__ import annotations

from datetime import timedelta

from simulators.models.coldchain import Excursion
from simulators.scenarios import one_trip as ot
from simulators.scenarios.base import ScenarioContext, ScenarioPlan, streams_of

NAME = "cold-chain-excursion"
SPAN_S = 125 * 60.0
BREAK_S = 45 * 60.0


def build(ctx: ScenarioContext) -> ScenarioPlan:
    ot.needs(ctx, NAME, SPAN_S)
    # Plan once without the excursion to learn when the break starts (the track does not depend
    # on it), then schedule the reefer failure a minute into the break.
    dry = ot.one_trip(ctx, "cc", road_stop_s=BREAK_S)
    stop_leg = next(i for i, leg in enumerate(_legs(dry)) if leg == "stop")
    break_at = dry.trip.track.leg_starts[stop_leg]
    excursion = Excursion(break_at + timedelta(minutes=1), ramp_s=12 * 60, hold_s=15 * 60, recover_s=10 * 60,
                          peak_c=12.0)
    day = ot.one_trip(ctx, "cc", road_stop_s=BREAK_S, excursions=[excursion])
    ot.in_span(ctx, day.delivered_at + timedelta(minutes=5), "the delivery")
    trip = day.trip
    expected = {
        "shipments": {trip.ref: "delivered"},
        "alarms": [{"type": "temperature_high", "device_id": trip.reefer, "shipment": trip.ref, "state": "cleared"}],
        "tickets": [{"shipment": trip.ref, "cause": "temperature_excursion"}],
        "excursion": {"start": excursion.start, "end": excursion.end, "peak_c": excursion.peak_c},
        "dead_letters": {},
        "devices": sorted(d.device_id for d in day.devices),
    }
    shows = [f"shipment {trip.ref} delivered",
             f"one temperature_high alarm on {trip.reefer} (cleared, peak ~12 °C) and one ticket for {trip.ref}",
             "no other alarm, no dead letters"]
    return ScenarioPlan(day.master, day.devices, streams_of(day.messages), expected, shows, len(day.messages))


def _legs(day: ot.OneTrip) -> list[str]:
    from simulators.scenarios.world import trip_legs

    return [leg.kind for leg in trip_legs(day.trip.customer, wait_s=0, road_stop_s=BREAK_S)]
