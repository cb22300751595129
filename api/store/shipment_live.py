"""Live state of shipments (position, ETA, events, temperature) for ``shape_shipment``.

Ingest keeps ``shipment_state`` and ``shipment_events``; this module only reads them. The
temperature summary is computed on read from the env readings, because it depends on a window
(loading to delivery) that closes only when the shipment is delivered and on the profile, which
an admin may still change. A page of shipments costs a fixed number of queries (state, events,
profiles, readings), not a number per shipment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg
from psycopg.rows import dict_row

from api.schemas.shipments import LastPosition, ShipmentEvent, TemperatureSummary
from api.store.records import Row
from api.views.shipments import ShipmentLive
from core.coldchain import Profile, Reading, summary
from core.coldchain import TemperatureSummary as CoreSummary
from core.telemetry_rules import choose_profile

# Sample-and-hold cap for the summary. Loggers on trucks report every 1 to 60 minutes; an hour lets
# an hourly logger's samples count for their whole interval (so "6 hourly samples at 14 °C" is
# 360 minutes out of range, as a logger report says), while a sensor that fell silent for a day
# does not make its last value stand for the whole day. Alarms use their own, shorter cap in ingest.
SUMMARY_MAX_GAP_S: Final = 3600.0


@dataclass(frozen=True)
class Window:
    """The span of a shipment's goods on its vehicle: loading event to delivery (or cancellation, or now)."""

    ref: str
    vehicle: str
    start: datetime | None  # None: not loaded yet, so there is no span
    end: datetime | None  # None: still open, up to now


def states_of(conn: psycopg.Connection, refs: Sequence[str]) -> dict[str, Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM shipment_state WHERE ref = ANY(%s)", (list(refs),)).fetchall()
    return {str(r["ref"]): r for r in rows}


def events_of(conn: psycopg.Connection, refs: Sequence[str]) -> dict[str, list[ShipmentEvent]]:
    """Each shipment's events in event-time order (id breaks ties: insertion order)."""
    result: dict[str, list[ShipmentEvent]] = defaultdict(list)
    with conn.cursor(row_factory=dict_row) as cur:
        for r in cur.execute("SELECT shipment, ts, type, detail FROM shipment_events WHERE shipment = ANY(%s) "
                             "ORDER BY shipment, ts, id", (list(refs),)):
            result[str(r["shipment"])].append(ShipmentEvent.model_validate(r))
    return result


def window(record: Row, events: Iterable[ShipmentEvent]) -> Window:
    """The span from the events; a cancellation closes it like a delivery (the truck moves on)."""
    at = {e.type: e.ts for e in events}
    end = at.get("delivered") or at.get("cancelled")
    return Window(str(record["ref"]), str(record["vehicle"]), at.get("loading"), end)


def _profiles_of(conn: psycopg.Connection, refs: Sequence[str]) -> dict[str, Profile]:
    """The profile ``core.telemetry_rules.choose_profile`` picks from the shipment's own and its
    lines' items' profiles: the one choice the alarms are derived with too, so the summary and
    the alarms cannot judge the same readings against different limits."""
    with conn.cursor() as cur:
        chosen = {str(ref): choose_profile(own, tuple(lines)) for ref, own, lines in cur.execute(
            "SELECT s.ref, s.profile, ARRAY(SELECT i.profile FROM jsonb_array_elements(s.lines) WITH ORDINALITY "
            "AS l(line, n) LEFT JOIN items i ON i.sku = l.line ->> 'sku' ORDER BY l.n) "
            "FROM shipments s WHERE s.ref = ANY(%s)", (list(refs),))}
        codes = sorted({c for c in chosen.values() if c is not None})
        limits = {str(r[0]): Profile(*r[1:]) for r in cur.execute(
            "SELECT code, temp_min_c, temp_max_c, rh_min_pct, rh_max_pct, delay_s, hysteresis_c, cumulative_s "
            "FROM profiles WHERE code = ANY(%s)", (codes,))} if codes else {}
    return {ref: limits[code] for ref, code in chosen.items() if code is not None and code in limits}


def _readings_of(conn: psycopg.Connection, windows: Sequence[Window]) -> dict[tuple[str, str], list[Reading]]:
    """Temperature readings per (shipment, sensor) of the env sensors riding each vehicle, inside the window."""
    if not windows:
        return {}
    query = """
        SELECT w.ref, r.device_id, r.ts, r.temp_c
        FROM unnest(%(refs)s::text[], %(vehicles)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
             AS w(ref, vehicle, t0, t1)
        JOIN devices d ON d.kind = 'env_sensor' AND d.vehicle = w.vehicle
        JOIN env_readings r ON r.device_id = d.device_id AND r.ts >= w.t0 AND r.ts <= coalesce(w.t1, now())
        WHERE r.temp_c IS NOT NULL
        ORDER BY w.ref, r.device_id, r.ts"""
    params = {"refs": [w.ref for w in windows], "vehicles": [w.vehicle for w in windows],
              "starts": [w.start for w in windows], "ends": [w.end for w in windows]}
    result: dict[tuple[str, str], list[Reading]] = defaultdict(list)
    with conn.cursor() as cur:
        for ref, device_id, ts, temp_c in cur.execute(query, params):
            result[(ref, device_id)].append(Reading(ts, float(temp_c), None))
    return result


def _worst(per_sensor: Sequence[CoreSummary]) -> TemperatureSummary | None:
    """Several sensors on one truck: the goods near the worst one are what the customer must judge,
    so each figure is the worst sensor's (lowest min, highest max and MKT, longest time out).
    Merging the series instead would let a cold sensor dilute a warm one."""
    if not per_sensor:
        return None
    return TemperatureSummary(min_c=min(s.min_c for s in per_sensor), max_c=max(s.max_c for s in per_sensor),
                              mkt_c=max(s.mkt_c for s in per_sensor),
                              minutes_out_of_range=max(s.minutes_out_of_range for s in per_sensor))


def _temperatures(conn: psycopg.Connection, windows: Sequence[Window]) -> dict[str, TemperatureSummary | None]:
    loaded = [w for w in windows if w.start is not None]
    profiles = _profiles_of(conn, [w.ref for w in loaded]) if loaded else {}
    with_profile = [w for w in loaded if w.ref in profiles]
    readings = _readings_of(conn, with_profile)
    per_shipment: dict[str, list[CoreSummary]] = defaultdict(list)
    for (ref, _device), series in readings.items():
        found = summary(series, profiles[ref], max_gap_s=SUMMARY_MAX_GAP_S)
        if found is not None:
            per_shipment[ref].append(found)
    return {w.ref: _worst(per_shipment.get(w.ref, [])) for w in windows}


def _last_position(state: Row | None) -> LastPosition | None:
    if state is None or state["last_lat"] is None or state["last_lon"] is None or state["last_ts"] is None:
        return None
    return LastPosition(lat=state["last_lat"], lon=state["last_lon"], ts=state["last_ts"])


def live_states(conn: psycopg.Connection, records: Sequence[Row], *, temperature: bool = True,
                ) -> dict[str, ShipmentLive]:
    """``records`` are ``shipments`` rows; ``temperature=False`` skips the summary (the public page
    never shows it, and it is the expensive part)."""
    refs = [str(r["ref"]) for r in records]
    if not refs:
        return {}
    states = states_of(conn, refs)
    events = events_of(conn, refs)
    temperatures = (_temperatures(conn, [window(r, events.get(str(r["ref"]), [])) for r in records])
                    if temperature else {})
    result: dict[str, ShipmentLive] = {}
    for record in records:
        ref = str(record["ref"])
        state = states.get(ref)
        own_events = events.get(ref, [])
        delivered = next((e.ts for e in own_events if e.type == "delivered"), None)
        result[ref] = ShipmentLive(
            # A cancelled shipment is not late any more; ingest may not have re-derived the state yet.
            delayed=bool(state and state["delayed"]) and record["status"] != "cancelled",
            last_position=_last_position(state),
            eta=state["eta"] if state else None,
            distance_remaining_km=state["distance_remaining_km"] if state else None,
            events=own_events,
            temperature=temperatures.get(ref),
            delivered_at=delivered or (state["delivered_at"] if state else None),
        )
    return result
