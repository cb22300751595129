"""The one seam between the telemetry rules and the database: typed rows in, typed rows out.

Every hypertable query carries a *constant* lower time bound besides any per-row bound:
TimescaleDB excludes chunks at plan time only from constants, and a per-row bound from
``unnest`` alone makes it visit every chunk (seconds on a database with months of data).
Windows start at a reset point (``core.telemetry_rules``): the search for one is bounded by
``RESET_HORIZON`` and falls back to an unbounded search only for the rare series that has no
reset reading that recent (a week-long excursion).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from core.coldchain import Profile
from core.geo import Circle, Fence, Fix, Polygon
from core.telemetry_rules import (
    ENV_TYPES,
    TEMPERATURE_TYPES,
    Carriage,
    Context,
    DeviceRow,
    PositionRow,
    battery_reset_level,
    carriage,
    choose_profile,
    reset_band,
)

RESET_HORIZON = timedelta(days=2)
BATTERY_HORIZON = timedelta(days=30)
FAR_PAST = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


# --- devices and profiles --------------------------------------------------------------------


def load_devices(cur: psycopg.Cursor, ids: Iterable[str]) -> dict[str, DeviceRow]:
    return {r[0]: DeviceRow(r[0], r[1], r[2], r[3]) for r in cur.execute(
        "SELECT device_id, kind, vehicle, profile FROM devices WHERE device_id = ANY(%s)", (sorted(set(ids)),))}


def sensors_on(cur: psycopg.Cursor, vehicles: Iterable[str]) -> dict[str, DeviceRow]:
    return {r[0]: DeviceRow(r[0], r[1], r[2], r[3]) for r in cur.execute(
        "SELECT device_id, kind, vehicle, profile FROM devices WHERE kind = 'env_sensor' AND vehicle = ANY(%s)",
        (sorted(set(vehicles)),))}


_PROFILE_COLS = "p.temp_min_c, p.temp_max_c, p.rh_min_pct, p.rh_max_pct, p.delay_s, p.hysteresis_c, p.cumulative_s"


def load_profiles(cur: psycopg.Cursor, codes: Iterable[str | None]) -> dict[str, Profile]:
    wanted = sorted({c for c in codes if c})
    if not wanted:
        return {}
    return {r[0]: Profile(r[1], r[2], r[3], r[4], float(r[5]), float(r[6]), float(r[7]) if r[7] is not None else None)
            for r in cur.execute(f"SELECT p.code, {_PROFILE_COLS} FROM profiles p WHERE p.code = ANY(%s)", (wanted,))}


# --- shipments -------------------------------------------------------------------------------


def movement_times(cur: psycopg.Cursor, refs: Sequence[str]) -> dict[tuple[str, str], list[datetime]]:
    """Event times of the net (not reversed) loading and arriving movements per shipment."""
    out: dict[tuple[str, str], list[datetime]] = {}
    if refs:
        for ref, step, ts in cur.execute(
                "SELECT m.ref, m.biz_step, m.ts FROM movements m WHERE m.ref = ANY(%s) "
                "AND m.biz_step IN ('loading', 'arriving') AND m.reverses IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)", (list(refs),)):
            out.setdefault((ref, step), []).append(ts)
    return out


def moved_vehicles(cur: psycopg.Cursor, refs: Sequence[str]) -> dict[str, datetime]:
    """Vehicles of shipments whose ship/deliver movements changed, with the earliest such movement:
    their sensors' contexts may have changed from then on."""
    if not refs:
        return {}
    return {r[0]: r[1] for r in cur.execute(
        "SELECT s.vehicle, min(m.ts) FROM shipments s JOIN movements m ON m.ref = s.ref "
        "WHERE s.ref = ANY(%s) AND s.vehicle IS NOT NULL AND m.biz_step IN ('loading', 'arriving') "
        "GROUP BY s.vehicle", (list(refs),))}


def load_carriages(cur: psycopg.Cursor, vehicles: Iterable[str], since: datetime) -> dict[str, list[Carriage]]:
    """Per vehicle, the shipments carried on it at or after ``since`` (loaded, not finished before),
    with the profile chosen by the one rule (own, else the first line's item with one)."""
    wanted = sorted(set(vehicles))
    if not wanted:
        return {}
    rows = cur.execute(
        "SELECT s.ref, s.vehicle, s.cancelled_at, s.profile, "
        "  ARRAY(SELECT i.profile FROM jsonb_array_elements(s.lines) WITH ORDINALITY AS l(line, n) "
        "        LEFT JOIN items i ON i.sku = l.line ->> 'sku' ORDER BY l.n) "
        "FROM shipments s WHERE s.vehicle = ANY(%s) AND NOT EXISTS (SELECT 1 FROM shipment_events e "
        "WHERE e.shipment = s.ref AND e.type IN ('delivered', 'cancelled') AND e.ts < %s)",
        (wanted, since)).fetchall()
    times = movement_times(cur, [r[0] for r in rows])
    out: dict[str, list[Carriage]] = {}
    for ref, vehicle, cancelled_at, own, lines in rows:
        span = carriage(times.get((ref, "loading"), []), times.get((ref, "arriving"), []), cancelled_at)
        if span is not None:
            out.setdefault(vehicle, []).append(Carriage(ref, span[0], span[1], choose_profile(own, tuple(lines))))
    return out


def _fence(kind: str, lat: float | None, lon: float | None, radius: float | None, coords: Any) -> Fence:
    if kind == "circle":
        assert lat is not None and lon is not None and radius is not None
        return Circle(lat, lon, radius)
    return Polygon(tuple((float(p[0]), float(p[1])) for p in coords))


@dataclass(frozen=True, slots=True)
class StoredShipment:
    ref: str
    vehicle: str | None
    promised_at: datetime | None
    cancelled_at: datetime | None
    status: str
    destination_code: str
    destination: Fence
    origin_code: str | None
    origin: Fence | None


def lock_shipments(cur: psycopg.Cursor, refs: Sequence[str]) -> list[StoredShipment]:
    rows = cur.execute(
        "SELECT s.ref, s.vehicle, s.promised_at, s.cancelled_at, s.status, s.destination, sg.geofence, "
        "d.type, d.lat, d.lon, d.radius_m, d.coordinates, o.type, o.lat, o.lon, o.radius_m, o.coordinates "
        "FROM shipments s JOIN geofences d ON d.code = s.destination "
        "JOIN locations l ON l.code = s.origin JOIN sites sg ON sg.code = l.site "
        "LEFT JOIN geofences o ON o.code = sg.geofence WHERE s.ref = ANY(%s) ORDER BY s.ref FOR UPDATE OF s",
        (list(refs),)).fetchall()
    return [StoredShipment(r[0], r[1], r[2], r[3], r[4], r[5], _fence(*r[7:12]), r[6],
                           _fence(*r[12:17]) if r[12] is not None else None) for r in rows]


def vehicle_fixes(cur: psycopg.Cursor, since: dict[str, datetime]) -> dict[str, list[Fix]]:
    """Accepted fixes of each vehicle's trackers from its own bound on."""
    vehicles = sorted(since)
    out: dict[str, list[Fix]] = {}
    if not vehicles:
        return out
    for vehicle, ts, lat, lon, speed in cur.execute(
            "SELECT d.vehicle, p.ts, p.lat, p.lon, p.speed_kmh FROM unnest(%s::text[], %s::timestamptz[]) "
            "v(vehicle, since) JOIN devices d ON d.vehicle = v.vehicle AND d.kind = 'gps_tracker' "
            "JOIN positions p ON p.device_id = d.device_id AND p.ts >= v.since AND p.ts >= %s "
            "WHERE p.filter_reason IS NULL AND p.lat IS NOT NULL ORDER BY p.ts",
            (vehicles, [since[v] for v in vehicles], min(since.values()))):
        out.setdefault(vehicle, []).append(Fix(ts, lat, lon, speed))
    return out


# --- positions -------------------------------------------------------------------------------


_POSITION_COLS = "p.device_id, p.ts, p.msg_id, p.lat, p.lon, p.fix_valid, p.speed_kmh, p.received_at, p.filter_reason"


@dataclass(frozen=True, slots=True)
class PositionWindow:
    rows: list[PositionRow]  # the confirmed seed (if any) first, then every position from ``since``
    anchored: bool
    stored: dict[tuple[datetime, str], str | None]  # the window's positions' stored reasons


def _position_row(r: Sequence[Any]) -> PositionRow:
    return PositionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


def load_position_windows(cur: psycopg.Cursor, since: dict[str, datetime]) -> dict[str, PositionWindow]:
    """Per device, the window from ``since`` and how to seed it, from the accepted fixes before it:
    two or more: the newest is a confirmed anchor (only the start of a history has unconfirmed
    accepted fixes), the window starts at ``since`` seeded with it; none: everything before was
    rejected for reasons of its own, the window starts at ``since`` unseeded; exactly one: a
    young track, filtered whole."""
    ids = sorted(since)
    seeds: dict[str, list[PositionRow]] = {d: [] for d in ids}

    def search(part: list[str], floor: datetime) -> None:
        for r in cur.execute(
                f"SELECT {_POSITION_COLS} FROM unnest(%s::text[], %s::timestamptz[]) u(device_id, since) "
                "CROSS JOIN LATERAL (SELECT * FROM positions q WHERE q.device_id = u.device_id AND q.ts < u.since "
                "AND q.ts >= %s AND q.filter_reason IS NULL ORDER BY q.ts DESC, q.msg_id DESC LIMIT 2) p",
                (part, [since[d] for d in part], floor)):
            seeds[r[0]].append(_position_row(r))

    search(ids, min(since.values()) - RESET_HORIZON)
    if silent := [d for d in ids if len(seeds[d]) < 2]:  # no fix lately: look further back
        for d in silent:
            seeds[d] = []
        search(silent, FAR_PAST)
    whole = [d for d in ids if len(seeds[d]) == 1]
    windowed = [d for d in ids if len(seeds[d]) != 1]
    rows: dict[str, list[Sequence[Any]]] = {d: [] for d in ids}
    if windowed:
        for r in cur.execute(
                f"SELECT {_POSITION_COLS} FROM unnest(%s::text[], %s::timestamptz[]) u(device_id, since) "
                "JOIN positions p ON p.device_id = u.device_id AND p.ts >= u.since AND p.ts >= %s",
                (windowed, [since[d] for d in windowed], min(since[d] for d in windowed))):
            rows[r[0]].append(r)
    if whole:
        for r in cur.execute(f"SELECT {_POSITION_COLS} FROM positions p WHERE p.device_id = ANY(%s)", (whole,)):
            rows[r[0]].append(r)
    out: dict[str, PositionWindow] = {}
    for d in ids:
        anchored = len(seeds[d]) == 2
        out[d] = PositionWindow([*seeds[d][:1 if anchored else 0], *(_position_row(r) for r in rows[d])], anchored,
                                {(r[1], r[2]): r[8] for r in rows[d]})
    return out


def store_position_reasons(cur: psycopg.Cursor, updates: Sequence[tuple[str | None, str, datetime, str]]) -> None:
    if updates:
        cur.executemany("UPDATE positions SET filter_reason = %s "
                        "WHERE device_id = %s AND ts = %s AND msg_id = %s", updates)


# --- environmental series --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvUnit:
    """One (device, probe) series inside one context, to re-derive from ``dirty_from`` on."""

    device_id: str
    probe: str | None
    context: Context
    profile_code: str
    dirty_from: datetime


@dataclass(frozen=True, slots=True)
class StoredAlarm:
    id: int
    type: str
    started_at: datetime
    cleared_at: datetime | None
    peak_value: float | None
    acknowledged: bool
    shipment: str | None = None
    withdrawn: bool = False  # kept for the audit trail; re-derived, it is reinstated with its id


def probes_since(cur: psycopg.Cursor, devices: Sequence[str], since: datetime) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {d: set() for d in devices}
    for device_id, probe in cur.execute(
            "SELECT DISTINCT device_id, probe FROM env_readings WHERE device_id = ANY(%s) AND ts >= %s",
            (list(devices), since)):
        out[device_id].add(probe)
    return out


@dataclass(frozen=True, slots=True)
class ChannelStarts:
    """Where each channel of a unit is re-derived from (None: the series' first reading)."""

    temp: datetime | None
    rh: datetime | None

    @property
    def window(self) -> datetime | None:
        return None if self.temp is None or self.rh is None else min(self.temp, self.rh)


def reset_points(cur: psycopg.Cursor, units: Sequence[EnvUnit], profiles: dict[str, Profile]
                 ) -> dict[EnvUnit, ChannelStarts]:
    """Per unit and channel: the newest reset reading of that channel before ``dirty_from`` inside
    the context; else the context's start (the whole context), except for a humidity channel the
    series never reported before, which is idle (its start is ``dirty_from``). A cumulative
    profile counts from the context's start."""
    found_t: dict[EnvUnit, datetime] = {}
    found_rh: dict[EnvUnit, datetime] = {}
    reported_rh: set[EnvUnit] = set()
    searched = [u for u in units if profiles[u.profile_code].cumulative_s is None]
    humid = [u for u in searched if reset_band(profiles[u.profile_code])[3]]

    def search(part: Sequence[EnvUnit], floor: datetime, column: str, band: int, into: dict[EnvUnit, datetime]
               ) -> None:
        if not part:
            return
        bands = [reset_band(profiles[u.profile_code]) for u in part]
        query = sql.SQL(
            "SELECT u.i, x.ts FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], "
            "%s::float8[], %s::float8[]) WITH ORDINALITY u(device_id, probe, before, after, lo, hi, i) "
            "CROSS JOIN LATERAL (SELECT e.ts FROM env_readings e WHERE e.device_id = u.device_id "
            "AND e.probe IS NOT DISTINCT FROM u.probe AND e.ts < u.before AND e.ts >= u.after AND e.ts >= %s "
            "AND e.{c} >= u.lo AND e.{c} <= u.hi ORDER BY e.ts DESC LIMIT 1) x").format(c=sql.Identifier(column))
        for i, ts in cur.execute(query, (
                [u.device_id for u in part], [u.probe for u in part], [u.dirty_from for u in part],
                [u.context.start or FAR_PAST for u in part], [b[band + 1] for b in bands],
                [b[band + 2] for b in bands], floor)):
            into[part[int(i) - 1]] = ts

    if searched:
        floor = min(u.dirty_from for u in searched) - RESET_HORIZON
        search(searched, floor, "temp_c", 0, found_t)
        if humid:
            # The partial index on readings with humidity makes this a lookup even for the many
            # sensors that never report it.
            for (i,) in cur.execute(
                    "SELECT u.i FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
                    "WITH ORDINALITY u(device_id, probe, before, after, i) WHERE EXISTS (SELECT 1 FROM env_readings "
                    "e WHERE e.device_id = u.device_id AND e.probe IS NOT DISTINCT FROM u.probe "
                    "AND e.rh_pct IS NOT NULL AND e.ts < u.before AND e.ts >= u.after)",
                    ([u.device_id for u in humid], [u.probe for u in humid], [u.dirty_from for u in humid],
                     [u.context.start or FAR_PAST for u in humid])):
                reported_rh.add(humid[int(i) - 1])
            search([u for u in humid if u in reported_rh], floor, "rh_pct", 3, found_rh)

        # Not found that recent, and the context is older than the horizon: look further back.
        def older(u: EnvUnit) -> bool:
            return u.context.start is None or u.context.start < floor

        search([u for u in searched if u not in found_t and older(u)], FAR_PAST, "temp_c", 0, found_t)
        search([u for u in humid if u in reported_rh and u not in found_rh and older(u)], FAR_PAST, "rh_pct", 3,
               found_rh)
    out: dict[EnvUnit, ChannelStarts] = {}
    for u in units:
        temp = found_t.get(u, u.context.start)
        rh = found_rh.get(u, u.context.start) if u in reported_rh else u.dirty_from
        out[u] = ChannelStarts(temp, rh if u in searched else temp)
    return out


def env_windows(cur: psycopg.Cursor, units: Sequence[EnvUnit], starts: dict[EnvUnit, datetime | None]
                ) -> dict[EnvUnit, tuple[list[datetime], list[float | None], list[float | None]]]:
    """Per unit, (ts, temp, rh) from its start (None: the series' beginning) to its context's end."""
    out: dict[EnvUnit, tuple[list[datetime], list[float | None], list[float | None]]] = {
        u: ([], [], []) for u in units}
    if not units:
        return out
    floor = min((s or FAR_PAST for s in starts.values()), default=FAR_PAST)
    for i, ts, temp, rh in cur.execute(
            "SELECT u.i, e.ts, e.temp_c, e.rh_pct FROM unnest(%s::text[], %s::text[], %s::timestamptz[], "
            "%s::timestamptz[]) WITH ORDINALITY u(device_id, probe, since, until, i) JOIN env_readings e "
            "ON e.device_id = u.device_id AND e.probe IS NOT DISTINCT FROM u.probe AND e.ts >= u.since "
            "AND (u.until IS NULL OR e.ts < u.until) AND e.ts >= %s",
            ([u.device_id for u in units], [u.probe for u in units], [starts[u] or FAR_PAST for u in units],
             [u.context.end for u in units], floor)):
        series = out[units[int(i) - 1]]
        series[0].append(ts)
        series[1].append(temp)
        series[2].append(rh)
    return out


def stored_env_alarms(cur: psycopg.Cursor, units: Sequence[EnvUnit], subjects: Sequence[str],
                      starts: dict[EnvUnit, ChannelStarts]) -> dict[EnvUnit, list[StoredAlarm]]:
    """Per unit, its alarms that started inside the window of their channel (the ones the
    derivation replaces)."""
    out: dict[EnvUnit, list[StoredAlarm]] = {u: [] for u in units}
    if not units:
        return out
    for i, *row in cur.execute(
            "SELECT u.i, a.id, a.type, a.started_at, a.cleared_at, a.peak_value, a.acknowledged, a.shipment, "
            "a.state = 'withdrawn' "
            "FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY "
            "u(subject, t_since, rh_since, until, i) JOIN alarms a ON a.subject = u.subject AND a.type = ANY(%s) "
            "AND a.started_at >= CASE WHEN a.type = ANY(%s) THEN u.t_since ELSE u.rh_since END "
            "AND (u.until IS NULL OR a.started_at < u.until) ORDER BY a.started_at",
            (list(subjects), [starts[u].temp or FAR_PAST for u in units], [starts[u].rh or FAR_PAST for u in units],
             [u.context.end for u in units], list(ENV_TYPES), list(TEMPERATURE_TYPES))):
        out[units[int(i) - 1]].append(StoredAlarm(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]),
                                                  row[6], bool(row[7])))
    return out


def ticketed_shipments(cur: psycopg.Cursor, refs: Iterable[str], cause: str) -> set[str]:
    wanted = sorted(set(refs))
    if not wanted:
        return set()
    return {r[0] for r in cur.execute("SELECT shipment FROM tickets WHERE shipment = ANY(%s) AND cause = %s",
                                      (wanted, cause))}


# --- battery ---------------------------------------------------------------------------------


def battery_windows(cur: psycopg.Cursor, since: dict[str, datetime]
                    ) -> tuple[dict[str, datetime | None], dict[str, list[tuple[datetime, float]]]]:
    """Per device, the newest level at or above the clear level before ``since`` (None: none,
    the whole history counts) and every level from there on."""
    ids = sorted(since)
    clear = battery_reset_level()

    def search(part: list[str], floor: datetime) -> dict[str, datetime]:
        return {r[0]: r[1] for r in cur.execute(
            "SELECT u.device_id, x.ts FROM unnest(%s::text[], %s::timestamptz[]) u(device_id, before) "
            "CROSS JOIN LATERAL (SELECT s.ts FROM device_status s WHERE s.device_id = u.device_id "
            "AND s.ts < u.before AND s.ts >= %s AND s.battery_pct >= %s ORDER BY s.ts DESC LIMIT 1) x",
            (part, [since[d] for d in part], floor, clear))}

    found = search(ids, min(since.values()) - BATTERY_HORIZON)
    if rest := [d for d in ids if d not in found]:
        found |= search(rest, FAR_PAST)
    starts: dict[str, datetime | None] = {d: found.get(d) for d in ids}
    levels: dict[str, list[tuple[datetime, float]]] = {d: [] for d in ids}
    floor = min((s or FAR_PAST for s in starts.values()), default=FAR_PAST)
    for device_id, ts, level in cur.execute(
            "SELECT u.device_id, s.ts, s.battery_pct FROM unnest(%s::text[], %s::timestamptz[]) u(device_id, since) "
            "JOIN device_status s ON s.device_id = u.device_id AND s.ts >= u.since AND s.ts >= %s "
            "WHERE s.battery_pct IS NOT NULL", (ids, [starts[d] or FAR_PAST for d in ids], floor)):
        levels[device_id].append((ts, float(level)))
    return starts, levels


def stored_battery_alarms(cur: psycopg.Cursor, starts: dict[str, datetime | None]) -> dict[str, list[StoredAlarm]]:
    ids = sorted(starts)
    out: dict[str, list[StoredAlarm]] = {d: [] for d in ids}
    for row in cur.execute(
            "SELECT a.subject, a.id, a.type, a.started_at, a.cleared_at, a.peak_value, a.acknowledged, "
            "a.state = 'withdrawn' "
            "FROM unnest(%s::text[], %s::timestamptz[]) u(subject, since) JOIN alarms a ON a.subject = u.subject "
            "AND a.type = 'battery_low' AND a.started_at >= u.since ORDER BY a.started_at",
            (ids, [starts[d] or FAR_PAST for d in ids])):
        out[row[0]].append(StoredAlarm(int(row[1]), row[2], row[3], row[4], row[5], bool(row[6]),
                                       withdrawn=bool(row[7])))
    return out
