"""Every telemetry-derived state, decided once, from event-time history.

``derive_telemetry`` takes a frozen history (positions per device, environmental readings per
device *and probe*, battery levels, shipments with their net ship/deliver movement times,
geofences, profiles) and returns the whole derived state: position filter reasons, shipment
status/events/ETA/delay, environmental alarm episodes, battery episodes and the tickets that
exceptions open. Ingest calls the same building blocks on the window that new data can affect
(``filter_track``, ``shipment_outcome``, ``contexts_of``, ``env_episodes``,
``battery_episodes``), so the replay of a whole history and the incremental path cannot
disagree: there is no second copy of any rule.

Environmental context: a reading is judged with the profile of the shipment its vehicle carried
*at the reading's own time* (from the first net ship movement to the first net deliver movement
or the cancellation), else with its sensor's own profile. Each context is its own series: an
alarm never spans a loading or a delivery, and a cumulative count starts at the loading.

Window rule (used by ingest): each channel (temperature, humidity) of a series can be re-derived
from any of its *reset readings* on, a reading inside the channel's limits by the hysteresis,
after which its consecutive rules are idle whatever came before (an active alarm clears there,
a pending run resets). Episodes after it are exactly those of the whole history. A channel the
series never reported is idle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Final

from core.coldchain import AlarmType, Excursion, Profile, Reading, excursions
from core.devices import BATTERY_CLEAR_PCT, battery_state
from core.geo import Dwell, Fence, Fix, as_utc
from core.positions import filter_positions
from core.shipments import (
    ShipmentPlan,
    ShipmentState,
    advance,
    delivered_late,
    derive,
    eta,
    is_delayed,
)

MAX_SPEED_KMH: Final = 200.0
MAX_GAP_S: Final = 900.0
LOOKBACK: Final = timedelta(hours=2)  # fixes before loading that tell where the vehicle stood
ETA_WINDOW: Final = timedelta(minutes=30)
DWELL: Final = Dwell(fixes=3, seconds=60.0)
TEMPERATURE_TYPES: Final = ("temperature_high", "temperature_low", "temperature_cumulative")
ENV_TYPES: Final = (*TEMPERATURE_TYPES, "humidity_high", "humidity_low")


# --- the history -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: str
    kind: str
    vehicle: str | None = None
    profile: str | None = None  # the sensor's own profile code, used outside any shipment


@dataclass(frozen=True, slots=True)
class PositionRow:
    device_id: str
    ts: datetime
    msg_id: str
    lat: float | None
    lon: float | None
    fix_valid: bool = True
    speed_kmh: float | None = None
    received_at: datetime | None = None

    @property
    def key(self) -> str:
        """The filter's tie-break between positions with the same time."""
        return self.msg_id


@dataclass(frozen=True, slots=True)
class EnvRow:
    device_id: str
    ts: datetime
    temp_c: float | None
    rh_pct: float | None = None
    probe: str | None = None


@dataclass(frozen=True, slots=True)
class StatusRow:
    device_id: str
    ts: datetime
    battery_pct: float | None


@dataclass(frozen=True, slots=True)
class ShipmentRow:
    ref: str
    vehicle: str | None
    destination: str  # geofence code
    origin_fence: str | None = None  # the origin site's geofence code, if it has one
    promised_at: datetime | None = None
    cancelled_at: datetime | None = None
    profile: str | None = None  # the shipment's own profile code
    line_profiles: tuple[str | None, ...] = ()  # the items' profile codes, in line order


@dataclass(frozen=True, slots=True)
class MovementTime:
    """A net (not reversed) stock movement of a shipment: biz_step ``loading`` or ``arriving``."""

    ref: str
    biz_step: str
    ts: datetime


@dataclass(frozen=True)
class TelemetryHistory:
    now: datetime  # wall clock: only the delay rule (a promise passing) depends on it
    devices: tuple[DeviceRow, ...] = ()
    positions: tuple[PositionRow, ...] = ()
    env: tuple[EnvRow, ...] = ()
    statuses: tuple[StatusRow, ...] = ()
    shipments: tuple[ShipmentRow, ...] = ()
    movements: tuple[MovementTime, ...] = ()
    geofences: Mapping[str, Fence] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)


# --- the derived state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvAlarm:
    device_id: str
    probe: str | None
    shipment: str | None
    type: AlarmType
    started_at: datetime
    triggered_at: datetime
    cleared_at: datetime | None
    peak_value: float
    seconds_out: float
    message: str


@dataclass(frozen=True, slots=True)
class BatteryAlarm:
    device_id: str
    started_at: datetime
    cleared_at: datetime | None
    peak_value: float
    seconds_out: float


@dataclass(frozen=True, slots=True)
class ShipmentOutcome:
    ref: str
    state: ShipmentState
    eta: datetime | None
    remaining_km: float | None
    delayed: bool
    delivered_at: datetime | None
    delivered_late: bool


@dataclass(frozen=True, slots=True)
class Ticket:
    shipment: str
    cause: str  # temperature_excursion | late_delivery
    summary: str
    alarm: EnvAlarm | None = None  # the episode that opened it


@dataclass(frozen=True)
class TelemetryState:
    position_reasons: Mapping[tuple[str, datetime, str], str | None]
    shipments: Mapping[str, ShipmentOutcome]
    env_alarms: tuple[EnvAlarm, ...]
    battery_alarms: tuple[BatteryAlarm, ...]
    tickets: tuple[Ticket, ...]


# --- positions -------------------------------------------------------------------------------


def filter_track(rows: Iterable[PositionRow], now: datetime, *, anchored: bool = False
                 ) -> list[tuple[PositionRow, str | None]]:
    """One device's distinct positions with their filter reasons. ``anchored``: the earliest
    accepted position given is a confirmed fix (ingest seeds the window with one)."""
    return filter_positions(rows, max_speed_kmh=MAX_SPEED_KMH, now=now, anchored=anchored)


# --- shipments -------------------------------------------------------------------------------


def choose_profile(own: str | None, line_profiles: Sequence[str | None]) -> str | None:
    """The shipment's own profile, else the first line (in line order) whose item has one: the
    one choice that alarms and the temperature summary share."""
    return own if own is not None else next((p for p in line_profiles if p is not None), None)


def carriage(ship_times: Iterable[datetime], deliver_times: Iterable[datetime],
             cancelled_at: datetime | None) -> tuple[datetime, datetime | None] | None:
    """When the goods were on the vehicle: first ship scan to first deliver scan (or the
    cancellation, whichever is first); None before any ship scan."""
    ships = sorted(as_utc(t) for t in ship_times)
    if not ships:
        return None
    ends = [as_utc(t) for t in deliver_times]
    if cancelled_at is not None:
        ends.append(as_utc(cancelled_at))
    return ships[0], min(ends) if ends else None


def shipment_outcome(plan: ShipmentPlan, ships: Sequence[datetime], delivers: Sequence[datetime],
                     fixes: Sequence[Fix], now: datetime, previous: ShipmentState | None = None
                     ) -> ShipmentOutcome:
    """Status, events, ETA, delay and lateness of one shipment. ``fixes``: the accepted fixes of
    its vehicle's trackers from ``LOOKBACK`` before the first ship scan on (see ``track_of``).
    ``previous``: the stored state, so that a late fix splitting a dwell run never moves the
    status back."""
    track = fixes
    state = advance(previous, derive(plan, ships, delivers, track, DWELL))
    delivered_at = state.at("delivered")
    last = state.last_fix
    eta_at, remaining = (delivered_at, 0.0) if state.status == "delivered" else (None, None)
    if last is not None and state.status in ("loading", "in_transit", "arrived"):
        eta_at, remaining = eta(last, plan.destination_fence, [f for f in track if f.ts >= last.ts - ETA_WINDOW])
    return ShipmentOutcome(plan.ref, state, eta_at, remaining, is_delayed(state.status, eta_at, plan.promised_at, now),
                           delivered_at, delivered_late(delivered_at, plan.promised_at))


def track_of(fixes: Iterable[Fix], ships: Iterable[datetime]) -> list[Fix]:
    """The fixes that matter to a shipment: from ``LOOKBACK`` before its first ship scan on
    (where the vehicle stood when it was loaded); none before any ship scan."""
    first_ship = min((as_utc(t) for t in ships), default=None)
    return [] if first_ship is None else [f for f in fixes if f.ts >= first_ship - LOOKBACK]


def late_ticket(outcome: ShipmentOutcome, promised_at: datetime) -> Ticket:
    assert outcome.delivered_at is not None
    return Ticket(outcome.ref, "late_delivery",
                  f"Shipment {outcome.ref} was delivered {outcome.delivered_at:%Y-%m-%d %H:%M} UTC, after the "
                  f"promised {promised_at:%Y-%m-%d %H:%M} UTC")


# --- environmental context and alarms --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """A span of a sensor's time judged with one profile: [start, end), None = unbounded."""

    start: datetime | None
    end: datetime | None
    profile: str | None
    shipment: str | None

    def holds(self, ts: datetime) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)


@dataclass(frozen=True, slots=True)
class Carriage:
    shipment: str
    start: datetime
    end: datetime | None
    profile: str | None


def contexts_of(own_profile: str | None, carriages: Iterable[Carriage]) -> list[Context]:
    """The sensor's timeline cut into contexts, oldest first. While several shipments are on the
    vehicle, the one loaded last applies (the goods loaded last are the newest concern)."""
    spans = sorted(carriages, key=lambda c: (c.start, c.shipment))
    cuts = sorted({t for c in spans for t in (c.start, c.end) if t is not None})
    result: list[Context] = []
    bounds: list[datetime | None] = [None, *cuts, None]
    for start, end in pairwise(bounds):
        probe_at = start if start is not None else (end - timedelta(microseconds=1) if end is not None else None)
        riding = [c for c in spans if probe_at is not None and c.start <= probe_at
                  and (c.end is None or probe_at < c.end)]
        ctx = (Context(start, end, riding[-1].profile, riding[-1].shipment) if riding
               else Context(start, end, own_profile, None))
        if result and (result[-1].profile, result[-1].shipment) == (ctx.profile, ctx.shipment):
            result[-1] = Context(result[-1].start, end, ctx.profile, ctx.shipment)
        else:
            result.append(ctx)
    return result


def context_at(contexts: Sequence[Context], ts: datetime) -> Context:
    return next(c for c in contexts if c.holds(ts))


def reset_band(profile: Profile) -> tuple[bool, float, float, bool, float, float]:
    """(temperature limited, lowest, highest, humidity limited, lowest, highest) values of a reset
    reading: inside every limit by the hysteresis (see ``is_reset``)."""
    hyst = profile.hysteresis_c
    rh_hyst = hyst if profile.rh_hysteresis_pct is None else profile.rh_hysteresis_pct

    def band(lo: float | None, hi: float | None, margin: float) -> tuple[bool, float, float]:
        return (lo is not None or hi is not None, -math.inf if lo is None else lo + margin,
                math.inf if hi is None else hi - margin)

    return (*band(profile.temp_min_c, profile.temp_max_c, hyst), *band(profile.rh_min_pct, profile.rh_max_pct, rh_hyst))


def is_reset(profile: Profile, temp_c: float | None, rh_pct: float | None) -> bool:
    """A reading after which every consecutive rule is idle whatever came before: each channel
    that has limits is inside them by the hysteresis, so an active alarm clears there and a
    pending run resets. Cumulative exposure is not consecutive: it counts from the context start.
    The channels are independent, so ingest looks for a reset of each channel separately."""
    need_t, t_lo, t_hi, need_rh, rh_lo, rh_hi = reset_band(profile)

    def inside(value: float | None, lo: float, hi: float) -> bool:
        return value is not None and math.isfinite(value) and lo <= value <= hi

    return (not need_t or inside(temp_c, t_lo, t_hi)) and (not need_rh or inside(rh_pct, rh_lo, rh_hi))


_LIMIT_TEXT: Final = {
    "temperature_high": lambda p: f"above {p.temp_max_c} °C",
    "temperature_low": lambda p: f"below {p.temp_min_c} °C",
    "humidity_high": lambda p: f"above {p.rh_max_pct} %RH",
    "humidity_low": lambda p: f"below {p.rh_min_pct} %RH",
    "temperature_cumulative": lambda p: f"out of {p.temp_min_c}..{p.temp_max_c} °C for "
                                        f"{p.cumulative_s or 0:.0f} s in total",
}


def alarm_subject(device_id: str, probe: str | None) -> str:
    """One active alarm per (device, probe, type): a sensor without probes keeps its device id."""
    return device_id if probe is None else f"{device_id}/{probe}"


def _message(device_id: str, probe: str | None, e: Excursion, profile: Profile) -> str:
    return f"{alarm_subject(device_id, probe)}: {_LIMIT_TEXT[e.type](profile)} (peak {e.peak_value:g})"


def env_episodes(device_id: str, probe: str | None, context: Context, profile: Profile, readings: Iterable[Reading],
                 *, temp_from: datetime | None = None, rh_from: datetime | None = None) -> list[EnvAlarm]:
    """The alarm episodes of one (device, probe) series inside one context. ``readings`` must all
    lie in the context; each channel is derived from its own start (``temp_from``/``rh_from``:
    the context's start or a reset reading of that channel; None: every reading given)."""
    given = list(readings)
    if temp_from == rh_from:
        found = excursions([r for r in given if temp_from is None or r.ts >= temp_from], profile,
                           max_gap_s=MAX_GAP_S)
    else:  # the channels are independent series: each from its own reset point
        temps = [Reading(r.ts, r.temp_c, None) for r in given if temp_from is None or r.ts >= temp_from]
        rhs = [Reading(r.ts, None, r.rh_pct) for r in given if rh_from is None or r.ts >= rh_from]
        found = sorted([e for e in excursions(temps, profile, max_gap_s=MAX_GAP_S) if is_temperature(e.type)]
                       + [e for e in excursions(rhs, profile, max_gap_s=MAX_GAP_S) if not is_temperature(e.type)],
                       key=lambda e: (e.started_at, e.type))
    # An episode still open when the context ends (delivery, cancellation) ends with it: the
    # goods it protected have left, and the next context judges the sensor afresh.
    return [EnvAlarm(device_id, probe, context.shipment, e.type, e.started_at, e.triggered_at,
                     e.cleared_at if e.cleared_at is not None or context.end is None else context.end,
                     e.peak_value, e.seconds_out, _message(device_id, probe, e, profile))
            for e in found]


def is_temperature(alarm_type: str) -> bool:
    return alarm_type in TEMPERATURE_TYPES


def excursion_ticket(alarm: EnvAlarm) -> Ticket:
    assert alarm.shipment is not None
    return Ticket(alarm.shipment, "temperature_excursion",
                  f"Temperature excursion on shipment {alarm.shipment}: {alarm.message} "
                  f"from {alarm.started_at:%Y-%m-%d %H:%M} UTC", alarm)


# --- battery ---------------------------------------------------------------------------------


def battery_reset_level() -> float:
    """A level at or above this ends any battery episode: a battery window may start there."""
    return BATTERY_CLEAR_PCT


def battery_episodes(device_id: str, levels: Iterable[tuple[datetime, float]]) -> list[BatteryAlarm]:
    """``levels`` must start at the device's first level or at one at or above the clear level."""
    return [BatteryAlarm(device_id, e.started_at, e.cleared_at, e.peak_value, e.seconds_out)
            for e in battery_state(levels)]


# --- the whole history -----------------------------------------------------------------------


def _carriages(history: TelemetryHistory) -> dict[str, list[Carriage]]:
    ships: dict[str, list[datetime]] = {}
    delivers: dict[str, list[datetime]] = {}
    for m in history.movements:
        (ships if m.biz_step == "loading" else delivers).setdefault(m.ref, []).append(m.ts)
    out: dict[str, list[Carriage]] = {}
    for s in history.shipments:
        span = carriage(ships.get(s.ref, []), delivers.get(s.ref, []), s.cancelled_at)
        if s.vehicle is not None and span is not None:
            out.setdefault(s.vehicle, []).append(
                Carriage(s.ref, span[0], span[1], choose_profile(s.profile, s.line_profiles)))
    return out


def derive_telemetry(history: TelemetryHistory) -> TelemetryState:
    """The whole telemetry-derived state of ``history`` (any order, duplicates allowed)."""
    devices = {d.device_id: d for d in history.devices}
    reasons: dict[tuple[str, datetime, str], str | None] = {}
    fixes_of_vehicle: dict[str, list[Fix]] = {}
    tracks: dict[str, list[PositionRow]] = {}
    for p in history.positions:
        tracks.setdefault(p.device_id, []).append(p)
    for device_id, track in sorted(tracks.items()):
        filtered = filter_track({(r.ts, r.msg_id): r for r in track}.values(), history.now)  # de-duplicated
        for row, reason in filtered:
            reasons[(device_id, as_utc(row.ts), row.msg_id)] = reason
        device = devices.get(device_id)
        if device is not None and device.vehicle is not None and device.kind == "gps_tracker":
            fixes_of_vehicle.setdefault(device.vehicle, []).extend(
                Fix(as_utc(r.ts), r.lat, r.lon, r.speed_kmh)
                for r, why in filtered if why is None and r.lat is not None and r.lon is not None)

    scans: dict[tuple[str, str], list[datetime]] = {}
    for m in history.movements:
        scans.setdefault((m.ref, m.biz_step), []).append(m.ts)
    outcomes: dict[str, ShipmentOutcome] = {}
    tickets: list[Ticket] = []
    for s in sorted(history.shipments, key=lambda x: x.ref):
        origin = history.geofences.get(s.origin_fence) if s.origin_fence else None
        plan = ShipmentPlan(s.ref, origin, history.geofences[s.destination], s.promised_at, s.cancelled_at,
                            s.origin_fence, s.destination)
        ships = scans.get((s.ref, "loading"), [])
        fixes = track_of(fixes_of_vehicle.get(s.vehicle, []) if s.vehicle else [], ships)
        outcome = shipment_outcome(plan, ships, scans.get((s.ref, "arriving"), []), fixes, history.now)
        outcomes[s.ref] = outcome
        if outcome.delivered_late and s.promised_at is not None:
            tickets.append(late_ticket(outcome, s.promised_at))

    carriages = _carriages(history)
    series: dict[tuple[str, str | None], list[EnvRow]] = {}
    for r in history.env:
        series.setdefault((r.device_id, r.probe), []).append(r)
    alarms: list[EnvAlarm] = []
    for (device_id, probe), env_rows in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        device = devices.get(device_id)
        vehicle = device.vehicle if device else None
        contexts = contexts_of(device.profile if device else None, carriages.get(vehicle, []) if vehicle else [])
        by_context: dict[Context, list[Reading]] = {}
        for e in env_rows:
            ctx = context_at(contexts, as_utc(e.ts))
            by_context.setdefault(ctx, []).append(Reading(as_utc(e.ts), e.temp_c, e.rh_pct))
        for ctx, readings in by_context.items():
            if ctx.profile is not None and ctx.profile in history.profiles:
                alarms += env_episodes(device_id, probe, ctx, history.profiles[ctx.profile], readings)
    alarms.sort(key=lambda a: (a.started_at, a.device_id, a.probe or "", a.type))
    ticketed: set[str] = set()
    for a in alarms:
        if a.shipment is not None and a.type in TEMPERATURE_TYPES and a.shipment not in ticketed:
            tickets.append(excursion_ticket(a))
            ticketed.add(a.shipment)

    levels: dict[str, list[tuple[datetime, float]]] = {}
    for st in history.statuses:
        if st.battery_pct is not None:
            levels.setdefault(st.device_id, []).append((st.ts, st.battery_pct))
    battery = [b for device_id in sorted(levels) for b in battery_episodes(device_id, levels[device_id])]
    return TelemetryState(reasons, outcomes, tuple(alarms), tuple(battery), tuple(tickets))
