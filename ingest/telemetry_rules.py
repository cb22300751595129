"""Positions, shipments, environmental and device alarms, inside the ingest transaction.

Every rule is re-derived from the stored history over a window that the new data can affect,
with the pure functions of ``core`` doing the deciding. So late and out-of-order data give the
same result as in-order data, and a redelivery (already de-duplicated) changes nothing.

Locks: per-device advisory locks (positions, readings, battery) and shipment rows (FOR UPDATE),
each phase in one global order, after the stock phase; concurrent workers cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from core.coldchain import Excursion, Profile, Reading, excursions
from core.contract import EnvReading, Position, Record, Status
from core.devices import battery_state
from core.geo import Circle, Dwell, Fence, Fix, Polygon
from core.positions import PositionIn, filter_positions
from core.shipments import STATUS_RANK, ShipmentPlan, delivered_late, derive, eta, is_delayed
from ingest.stock import lock_keys

MAX_SPEED_KMH = 200.0
MAX_GAP_S = 900.0
LOOKBACK = timedelta(hours=2)  # fixes before loading that tell where the vehicle stood
DWELL = Dwell(fixes=3, seconds=60.0)
TEMPERATURE_TYPES = ("temperature_high", "temperature_low", "temperature_cumulative")
ENV_TYPES = (*TEMPERATURE_TYPES, "humidity_high", "humidity_low")
OPEN_STATUSES = ("planned", "loading", "in_transit", "arrived")


@dataclass(frozen=True)
class TelemetryResult:
    shipments: int
    alarms_changed: int


def _lock_devices(cur: psycopg.Cursor, device_ids: Iterable[str]) -> None:
    lock_keys(cur, [("device", d, "") for d in device_ids])


# --- positions -----------------------------------------------------------------------------------


def refilter_positions(cur: psycopg.Cursor, positions: Sequence[Position], now: datetime) -> dict[str, datetime]:
    """Re-decide filter reasons from each device's earliest new position on, seeded with the last
    accepted fix before it (the impossible-jump rule compares with the previous accepted fix).
    Returns, per device, the earliest time from which its accepted track may have changed."""
    earliest: dict[str, datetime] = {}
    for p in positions:
        earliest[p.device_id] = min(p.ts, earliest.get(p.device_id, p.ts))
    ids = sorted(earliest)
    args = (ids, [earliest[d] for d in ids])
    cols = "p.device_id, p.ts, p.msg_id, p.lat, p.lon, p.fix_valid, p.speed_kmh, p.received_at, p.filter_reason"
    seeds = cur.execute(
        f"SELECT {cols} FROM unnest(%s::text[], %s::timestamptz[]) u(device_id, since) "
        "CROSS JOIN LATERAL (SELECT * FROM positions q WHERE q.device_id = u.device_id AND q.ts < u.since "
        "AND q.filter_reason IS NULL ORDER BY q.ts DESC, q.msg_id DESC LIMIT 1) p", args).fetchall()
    rows = cur.execute(
        f"SELECT {cols} FROM unnest(%s::text[], %s::timestamptz[]) u(device_id, since) "
        "JOIN positions p ON p.device_id = u.device_id AND p.ts >= u.since", args).fetchall()
    by_device: dict[str, list[tuple[Any, ...]]] = {d: [] for d in ids}
    for r in (*seeds, *rows):
        by_device[r[0]].append(r)
    stored = {(r[0], r[1], r[2]): r[8] for r in rows}
    updates = []
    for device_id, found in by_device.items():
        items = [PositionIn(r[1], r[3], r[4], r[5], r[2], r[6], r[7]) for r in found]
        for item, reason in filter_positions(items, max_speed_kmh=MAX_SPEED_KMH, now=now):
            key = (device_id, item.ts, item.key)
            if key in stored and stored[key] != reason:
                updates.append((reason, device_id, item.ts, item.key))
    if updates:
        cur.executemany("UPDATE positions SET filter_reason = %s "
                        "WHERE device_id = %s AND ts = %s AND msg_id = %s", updates)
    return earliest


# --- shipments -----------------------------------------------------------------------------------


def _fence(row: Sequence[Any] | None) -> Fence | None:
    if row is None:
        return None
    kind, lat, lon, radius, coords = row
    if kind == "circle":
        return Circle(lat, lon, radius)
    return Polygon(tuple((float(p[0]), float(p[1])) for p in coords))


def shipments_for(cur: psycopg.Cursor, trackers: dict[str, datetime], refs: Iterable[str]) -> list[str]:
    """Shipments the new fixes can affect: open ones on the trackers' vehicles, and finished ones
    whose end (delivery, cancellation) is after the earliest new fix, since a late fix can still
    move their departure or arrival."""
    ids = sorted(trackers)
    found = {r[0] for r in cur.execute(
        "SELECT s.ref FROM shipments s JOIN devices d ON d.vehicle = s.vehicle "
        "JOIN unnest(%s::text[], %s::timestamptz[]) t(device_id, since) ON t.device_id = d.device_id "
        "LEFT JOIN shipment_events e ON e.shipment = s.ref AND e.type IN ('delivered', 'cancelled') "
        "WHERE d.kind = 'gps_tracker' AND (s.status = ANY(%s) OR e.ts >= t.since)",
        (ids, [trackers[i] for i in ids], list(OPEN_STATUSES)))} if ids else set()
    return sorted(found | set(refs))


_CORE_EVENTS = ("loading", "departed", "arrived", "delivered", "cancelled")
_SHIPMENT_COLS = ("s.ref, s.vehicle, s.promised_at, s.cancelled_at, s.status, s.destination, sg.geofence, "
                  "d.type, d.lat, d.lon, d.radius_m, d.coordinates, o.type, o.lat, o.lon, o.radius_m, o.coordinates")


def _scan_times(cur: psycopg.Cursor, refs: list[str]) -> dict[tuple[str, str], list[datetime]]:
    """Event times of the net loading (ship) and arriving (deliver) movements per shipment."""
    out: dict[tuple[str, str], list[datetime]] = {}
    for ref, step, ts in cur.execute(
            "SELECT m.ref, m.biz_step, m.ts FROM movements m WHERE m.ref = ANY(%s) "
            "AND m.biz_step IN ('loading', 'arriving') AND m.reverses IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)", (refs,)):
        out.setdefault((ref, step), []).append(ts)
    return out


def _vehicle_fixes(cur: psycopg.Cursor, since: dict[str, datetime]) -> dict[str, list[Fix]]:
    vehicles = sorted(since)
    out: dict[str, list[Fix]] = {}
    if not vehicles:
        return out
    for vehicle, ts, lat, lon, speed in cur.execute(
            "SELECT d.vehicle, p.ts, p.lat, p.lon, p.speed_kmh FROM unnest(%s::text[], %s::timestamptz[]) "
            "v(vehicle, since) JOIN devices d ON d.vehicle = v.vehicle AND d.kind = 'gps_tracker' "
            "JOIN positions p ON p.device_id = d.device_id AND p.ts >= v.since "
            "WHERE p.filter_reason IS NULL AND p.lat IS NOT NULL ORDER BY p.ts",
            (vehicles, [since[v] for v in vehicles])):
        out.setdefault(vehicle, []).append(Fix(ts, lat, lon, speed))
    return out


def update_shipment(cur: psycopg.Cursor, ref: str, now: datetime) -> bool:
    """Re-derive one shipment; False when it does not exist."""
    return update_shipments(cur, [ref], now) == 1


def update_shipments(cur: psycopg.Cursor, refs: Iterable[str], now: datetime) -> int:
    """Re-derive the shipments' status, events and live state from their whole history, with a
    fixed number of queries however many shipments there are, writing only what changed."""
    wanted = sorted(set(refs))
    if not wanted:
        return 0
    rows = cur.execute(
        f"SELECT {_SHIPMENT_COLS} FROM shipments s JOIN geofences d ON d.code = s.destination "
        "JOIN locations l ON l.code = s.origin JOIN sites sg ON sg.code = l.site "
        "LEFT JOIN geofences o ON o.code = sg.geofence WHERE s.ref = ANY(%s) ORDER BY s.ref FOR UPDATE OF s",
        (wanted,)).fetchall()
    if not rows:
        return 0
    scans = _scan_times(cur, wanted)
    since: dict[str, datetime] = {}
    for r in rows:
        if ships := scans.get((r[0], "loading")):
            since[r[1]] = min(min(ships) - LOOKBACK, since.get(r[1], min(ships)))
    fixes_of = _vehicle_fixes(cur, since)
    current: dict[str, dict[str, tuple[datetime, str]]] = {}
    for ref, type_, ts, detail in cur.execute(
            "SELECT shipment, type, ts, detail FROM shipment_events WHERE shipment = ANY(%s)", (wanted,)):
        current.setdefault(ref, {})[type_] = (ts, detail)
    was_delayed: dict[str, bool] = dict(
        cur.execute("SELECT ref, delayed FROM shipment_state WHERE ref = ANY(%s)", (wanted,)).fetchall())
    upserts: list[tuple[str, datetime, str, str]] = []
    deletes: list[tuple[str, str]] = []
    states: list[tuple[Any, ...]] = []
    statuses: list[tuple[str, str]] = []
    for r in rows:
        ref, vehicle, promised, cancelled, old_status, dest_code, origin_code = r[:7]
        destination, origin = _fence(r[7:12]), (_fence(r[12:17]) if r[12] is not None else None)
        assert destination is not None
        ships, delivers = scans.get((ref, "loading"), []), scans.get((ref, "arriving"), [])
        fixes = [f for f in fixes_of.get(vehicle, []) if ships and f.ts >= min(ships) - LOOKBACK]
        plan = ShipmentPlan(ref, origin, destination, promised, cancelled, origin_code, dest_code)
        state = derive(plan, ships, delivers, fixes, DWELL)
        known = current.get(ref, {})
        if STATUS_RANK[state.status] < STATUS_RANK[old_status]:
            # A late fix split a dwell run that had confirmed a transition: the status never goes
            # back, and the transitions already recorded stay (the track still gets the fix).
            status = old_status
        else:
            status = state.status
            derived = {e.type: (e.ts, e.detail) for e in state.events}
            upserts += [(ref, ts, t, d) for t, (ts, d) in derived.items()
                        if known.get(t) != (ts, d) and not (t == "cancelled" and t in known)]
            deletes += [(ref, t) for t in known if t in _CORE_EVENTS and t not in derived]
        delivered_at = next((e.ts for e in state.events if e.type == "delivered"), None)
        last = state.last_fix
        eta_at, remaining = (delivered_at, 0.0) if status == "delivered" else (None, None)
        if last is not None and status in ("loading", "in_transit", "arrived"):
            recent = [f for f in fixes if f.ts >= last.ts - timedelta(minutes=30)]
            eta_at, remaining = eta(last, destination, recent)
        delayed = is_delayed(status, eta_at, promised, now)
        states.append((ref, last.lat if last else None, last.lon if last else None, last.ts if last else None,
                       eta_at, remaining, delayed, delivered_at))
        if status != old_status:
            statuses.append((status, ref))
        if delayed != was_delayed.get(ref, False):
            _delay_alarm(cur, ref, delayed, promised, eta_at, last.ts if last else None, now)
        if delivered_late(delivered_at, promised) and "delivered_late" not in known:
            assert delivered_at is not None and promised is not None
            upserts.append((ref, delivered_at, "delivered_late",
                            f"delivered after the promise {promised:%Y-%m-%d %H:%M} UTC"))
            open_ticket(cur, ref, "late_delivery", None,
                        f"Shipment {ref} was delivered {delivered_at:%Y-%m-%d %H:%M} UTC, after the promised "
                        f"{promised:%Y-%m-%d %H:%M} UTC")
    if upserts:
        cur.executemany("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (shipment, type) DO UPDATE SET ts = excluded.ts, detail = excluded.detail "
                        "WHERE shipment_events.type <> 'cancelled'", upserts)  # the API recorded who cancelled
    if deletes:
        cur.executemany("DELETE FROM shipment_events WHERE shipment = %s AND type = %s", deletes)
    if statuses:
        cur.executemany("UPDATE shipments SET status = %s, updated_at = now() WHERE ref = %s", statuses)
    cols = list(zip(*states, strict=True))
    cur.execute(
        "INSERT INTO shipment_state (ref, last_lat, last_lon, last_ts, eta, distance_remaining_km, delayed, "
        "delivered_at, updated_at) SELECT *, now() FROM unnest(%s::text[], %s::float8[], %s::float8[], "
        "%s::timestamptz[], %s::timestamptz[], %s::float8[], %s::bool[], %s::timestamptz[]) "
        "ON CONFLICT (ref) DO UPDATE SET last_lat = excluded.last_lat, last_lon = excluded.last_lon, "
        "last_ts = excluded.last_ts, eta = excluded.eta, distance_remaining_km = excluded.distance_remaining_km, "
        "delayed = excluded.delayed, delivered_at = excluded.delivered_at, updated_at = now()",
        [list(c) for c in cols])
    return len(rows)


def _mark_event(cur: psycopg.Cursor, ref: str, ts: datetime, type_: str, detail: str) -> None:
    cur.execute("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (shipment, type) DO NOTHING", (ref, ts, type_, detail))


def _delay_alarm(cur: psycopg.Cursor, ref: str, delayed: bool, promised: datetime | None, eta_at: datetime | None,
                 last_fix_at: datetime | None, now: datetime) -> None:
    if delayed and promised is not None:
        by_eta = eta_at is not None and eta_at > promised and last_fix_at is not None
        why = f"ETA {eta_at:%Y-%m-%d %H:%M} UTC" if by_eta else "the clock"
        # In event time: the earliest provable moment, the promise itself once the clock is past it,
        # or the fix whose ETA went past it.
        moments = [m for m in (promised if now > promised else None, last_fix_at if by_eta else None) if m]
        at = min([*moments, now])
        inserted = cur.execute(
            "INSERT INTO alarms (type, severity, state, shipment, subject, started_at, triggered_at, message) "
            "VALUES ('shipment_delayed', 'warning', 'active', %s, %s, %s, %s, %s) "
            "ON CONFLICT (type, subject) WHERE state = 'active' DO NOTHING RETURNING id",
            (ref, ref, at, now, f"shipment {ref} will miss its promise of {promised:%Y-%m-%d %H:%M} UTC "
                                f"({why} is past it)")).fetchone()
        if inserted:
            _mark_event(cur, ref, at, "delayed", f"{why} past the promise")
    else:
        cur.execute("UPDATE alarms SET state = 'cleared', cleared_at = %s, updated_at = now() "
                    "WHERE type = 'shipment_delayed' AND subject = %s AND state = 'active'", (now, ref))


def open_ticket(cur: psycopg.Cursor, ref: str, cause: str, alarm_id: int | None, summary: str) -> None:
    """A logistics exception opens one after-sales ticket per shipment and cause, never two."""
    cur.execute("INSERT INTO tickets (type, shipment, alarm_id, cause, summary) VALUES "
                "('logistics_exception', %s, %s, %s, %s) ON CONFLICT (shipment, cause) WHERE cause IS NOT NULL "
                "DO NOTHING", (ref, alarm_id, cause, summary))


# --- environmental alarms ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    profile: Profile
    shipment: str | None
    since: datetime | None  # readings before this belong to another context (the shipment's loading)
    until: datetime | None


def _profile(row: Sequence[Any]) -> Profile:
    return Profile(row[0], row[1], row[2], row[3], float(row[4]), float(row[5]),
                   float(row[6]) if row[6] is not None else None)


_PROFILE_COLS = "p.temp_min_c, p.temp_max_c, p.rh_min_pct, p.rh_max_pct, p.delay_s, p.hysteresis_c, p.cumulative_s"


def _contexts(cur: psycopg.Cursor, latest: dict[str, datetime]) -> dict[str, _Context]:
    """The profile that applies to each sensor's newest reading: the shipment its vehicle carries
    then (its own profile, else its first profiled item's), else the sensor's own profile."""
    ids = sorted(latest)
    devices = {r[0]: (r[1], r[2]) for r in cur.execute(
        "SELECT device_id, vehicle, profile FROM devices WHERE device_id = ANY(%s)", (ids,))}
    riding = [d for d in ids if devices.get(d, (None, None))[0]]
    carried: dict[str, tuple[str, datetime, datetime | None, str | None]] = {}
    if riding:
        for device_id, ref, loaded, delivered, code in cur.execute(
                "SELECT u.device_id, x.ref, x.loaded, x.delivered, x.profile "
                "FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) u(device_id, vehicle, at) "
                "CROSS JOIN LATERAL (SELECT s.ref, l.ts AS loaded, dl.ts AS delivered, coalesce(s.profile, "
                "  (SELECT i.profile FROM jsonb_array_elements(s.lines) x JOIN items i ON i.sku = x->>'sku' "
                "   WHERE i.profile IS NOT NULL LIMIT 1)) AS profile "
                "  FROM shipments s JOIN shipment_events l ON l.shipment = s.ref AND l.type = 'loading' "
                "  LEFT JOIN shipment_events dl ON dl.shipment = s.ref AND dl.type = 'delivered' "
                "  WHERE s.vehicle = u.vehicle AND l.ts <= u.at AND (dl.ts IS NULL OR dl.ts > u.at) "
                "  ORDER BY l.ts DESC LIMIT 1) x",
                (riding, [devices[d][0] for d in riding], [latest[d] for d in riding])):
            carried[device_id] = (ref, loaded, delivered, code)
    codes = {c for c in (*(v[3] for v in carried.values()), *(v[1] for v in devices.values())) if c}
    profiles = {r[0]: _profile(r[1:]) for r in cur.execute(
        f"SELECT p.code, {_PROFILE_COLS} FROM profiles p WHERE p.code = ANY(%s)", (sorted(codes),))}
    out: dict[str, _Context] = {}
    for device_id in ids:
        ride = carried.get(device_id)
        own = devices.get(device_id, (None, None))[1]
        if ride is not None and ride[3] in profiles:
            out[device_id] = _Context(profiles[str(ride[3])], ride[0], ride[1], ride[2])
        elif own is not None and own in profiles:
            out[device_id] = _Context(profiles[own], None, None, None)
    return out


def _message(device_id: str, e: Excursion, profile: Profile) -> str:
    limits = {"temperature_high": f"above {profile.temp_max_c} °C",
              "temperature_low": f"below {profile.temp_min_c} °C",
              "humidity_high": f"above {profile.rh_max_pct} %RH", "humidity_low": f"below {profile.rh_min_pct} %RH",
              "temperature_cumulative": f"out of {profile.temp_min_c}..{profile.temp_max_c} °C for "
                                        f"{profile.cumulative_s or 0:.0f} s in total"}
    return f"{device_id}: {limits[e.type]} (peak {e.peak_value:g})"


def evaluate_environment(cur: psycopg.Cursor, readings: Sequence[EnvReading]) -> int:
    """Re-derive the environmental alarms each sensor's new readings can affect, with a fixed
    number of queries per batch and writes only where an alarm changed."""
    earliest: dict[str, datetime] = {}
    latest: dict[str, datetime] = {}
    for r in readings:
        earliest[r.device_id] = min(r.ts, earliest.get(r.device_id, r.ts))
        latest[r.device_id] = max(r.ts, latest.get(r.device_id, r.ts))
    contexts = _contexts(cur, latest)
    ids = sorted(contexts)
    if not ids:
        return 0
    since = {d: earliest[d] - timedelta(seconds=contexts[d].profile.delay_s + MAX_GAP_S) for d in ids}
    # An alarm still open, or one the new readings may extend, is re-derived from its start.
    for device_id, started in cur.execute(
            "SELECT a.subject, min(a.started_at) FROM alarms a JOIN unnest(%s::text[], %s::timestamptz[]) "
            "u(device_id, since) ON a.subject = u.device_id WHERE a.type = ANY(%s) "
            "AND (a.state = 'active' OR a.cleared_at >= u.since) GROUP BY a.subject",
            (ids, [since[d] for d in ids], list(ENV_TYPES))):
        since[device_id] = min(since[device_id], started)
    for device_id in ids:
        ctx = contexts[device_id]
        if ctx.since is not None and (ctx.profile.cumulative_s is not None or since[device_id] < ctx.since):
            since[device_id] = ctx.since  # a shipment's cumulative time counts from its loading
    series: dict[str, list[Reading]] = {d: [] for d in ids}
    for device_id, ts, temp, rh in cur.execute(
            "SELECT e.device_id, e.ts, e.temp_c, e.rh_pct FROM unnest(%s::text[], %s::timestamptz[], "
            "%s::timestamptz[]) u(device_id, since, until) JOIN env_readings e ON e.device_id = u.device_id "
            "AND e.ts >= u.since AND (u.until IS NULL OR e.ts < u.until) ORDER BY e.device_id, e.ts",
            (ids, [since[d] for d in ids], [contexts[d].until for d in ids])):
        series[device_id].append(Reading(ts, temp, rh))
    stored: dict[str, list[tuple[Any, ...]]] = {d: [] for d in ids}
    for row in cur.execute(
            "SELECT a.subject, a.id, a.type, a.started_at, a.cleared_at, a.peak_value, a.acknowledged "
            "FROM alarms a JOIN unnest(%s::text[], %s::timestamptz[]) u(device_id, since) "
            "ON a.subject = u.device_id WHERE a.type = ANY(%s) AND coalesce(a.cleared_at, 'infinity') >= u.since "
            "ORDER BY a.started_at", (ids, [since[d] for d in ids], list(ENV_TYPES))):
        stored[row[0]].append(tuple(row[1:]))
    shipments = sorted({c.shipment for c in contexts.values() if c.shipment})
    ticketed = {r[0] for r in cur.execute("SELECT shipment FROM tickets WHERE shipment = ANY(%s) "
                                          "AND cause = 'temperature_excursion'", (shipments,))} if shipments else set()
    changed = 0
    for device_id in ids:
        found = excursions(series[device_id], contexts[device_id].profile, max_gap_s=MAX_GAP_S)
        if found or stored[device_id]:
            changed += _reconcile(cur, device_id, stored[device_id], found, contexts[device_id], ticketed)
    return changed


def _overlaps(row: Sequence[Any], e: Excursion) -> bool:
    far = datetime.max.replace(tzinfo=e.started_at.tzinfo)
    return bool(row[2] < (e.cleared_at or far) and e.started_at < (row[3] or far))


def _reconcile(cur: psycopg.Cursor, device_id: str, stored: list[tuple[Any, ...]], found: list[Excursion],
               ctx: _Context, ticketed: set[str]) -> int:
    """Make the stored alarms of the window (id, type, started_at, cleared_at, peak, acknowledged)
    equal to the derived episodes. A stored alarm that overlaps a derived episode of its type IS
    that episode (late readings may move its start or end): it keeps its id, acknowledgement and
    ticket."""
    unmatched = list(stored)
    pairs: list[tuple[Excursion, Sequence[Any] | None]] = []
    for e in sorted(found, key=lambda x: (x.started_at, x.type)):
        match = next((r for r in unmatched if r[1] == e.type and _overlaps(r, e)), None)
        if match is not None:
            unmatched.remove(match)
        pairs.append((e, match))
    changed = 0
    for gone in unmatched:
        # The episode no longer exists with the data now known (a late reading filled a gap):
        # an alarm nobody acted on is withdrawn, one acknowledged or ticketed is kept and closed.
        cur.execute("DELETE FROM alarms WHERE id = %s AND NOT acknowledged "
                    "AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.alarm_id = %s)", (gone[0], gone[0]))
        cur.execute("UPDATE alarms SET state = 'cleared', cleared_at = coalesce(cleared_at, now()), "
                    "message = message || ' (superseded by late data)', updated_at = now() WHERE id = %s "
                    "AND state = 'active'", (gone[0],))
        changed += 1
    # Clear before activating, so that the one-active-alarm-per-type index never sees two.
    for e, row in sorted(pairs, key=lambda p: p[0].cleared_at is None):
        state = "cleared" if e.cleared_at is not None else "active"
        if row is not None:
            if (row[2], row[3], row[4]) != (e.started_at, e.cleared_at, e.peak_value):
                cur.execute("UPDATE alarms SET state = %s, started_at = %s, cleared_at = %s, peak_value = %s, "
                            "seconds_out = %s, triggered_at = %s, updated_at = now() WHERE id = %s",
                            (state, e.started_at, e.cleared_at, e.peak_value, e.seconds_out, e.triggered_at, row[0]))
                changed += 1
            alarm_id = int(row[0])
        else:
            severity = "critical" if e.type.startswith("temperature") else "warning"
            inserted = cur.execute(
                "INSERT INTO alarms (type, severity, state, device_id, shipment, subject, started_at, triggered_at, "
                "cleared_at, peak_value, seconds_out, message) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (e.type, severity, state, device_id, ctx.shipment, device_id, e.started_at, e.triggered_at,
                 e.cleared_at, e.peak_value, e.seconds_out, _message(device_id, e, ctx.profile))).fetchone()
            assert inserted is not None
            alarm_id = int(inserted[0])
            changed += 1
        if ctx.shipment is not None and e.type in TEMPERATURE_TYPES and ctx.shipment not in ticketed:
            open_ticket(cur, ctx.shipment, "temperature_excursion", alarm_id,
                        f"Temperature excursion on shipment {ctx.shipment}: {_message(device_id, e, ctx.profile)} "
                        f"from {e.started_at:%Y-%m-%d %H:%M} UTC")
            ticketed.add(ctx.shipment)
    return changed


# --- device health -------------------------------------------------------------------------------


def evaluate_battery(cur: psycopg.Cursor, statuses: Sequence[Status], *,
                     window: timedelta = timedelta(days=7)) -> None:
    devices = sorted({s.device_id for s in statuses if s.battery_pct is not None})
    for device_id in devices:
        since = min(s.ts for s in statuses if s.device_id == device_id) - window
        levels = [(r[0], float(r[1])) for r in cur.execute(
            "SELECT ts, battery_pct FROM device_status "
            "WHERE device_id = %s AND ts >= %s AND battery_pct IS NOT NULL", (device_id, since))]
        episodes = battery_state(levels)
        cur.execute("DELETE FROM alarms WHERE subject = %s AND type = 'battery_low' AND started_at >= %s "
                    "AND NOT acknowledged", (device_id, since))
        for e in episodes:
            cur.execute(
                "INSERT INTO alarms (type, severity, state, device_id, subject, started_at, triggered_at, "
                "cleared_at, peak_value, message) VALUES ('battery_low', 'warning', %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (type, subject) WHERE state = 'active' DO UPDATE SET peak_value = excluded.peak_value",
                ("active" if e.cleared_at is None else "cleared", device_id, device_id, e.started_at, e.triggered_at,
                 e.cleared_at, e.peak_value, f"{device_id}: battery at {e.peak_value:g} %"))


def clear_offline(cur: psycopg.Cursor, device_ids: Iterable[str]) -> None:
    """A device that speaks is online again."""
    ids = sorted(set(device_ids))
    if ids:
        cur.execute("UPDATE alarms SET state = 'cleared', cleared_at = now(), updated_at = now() "
                    "WHERE type = 'device_offline' AND state = 'active' AND subject = ANY(%s)", (ids,))


def mark_offline(conn: psycopg.Connection, after_s: float, multiple: float) -> int:
    """Periodic, wall clock: a device silent for ``multiple`` of its expected interval (``after_s``
    while that is unknown) gets a device_offline alarm."""
    with conn.transaction():
        rows = conn.execute(
            "INSERT INTO alarms (type, severity, state, device_id, subject, started_at, triggered_at, message) "
            "SELECT 'device_offline', 'warning', 'active', s.device_id, s.device_id, s.last_seen, now(), "
            "s.device_id || ': no message since ' || to_char(s.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "|| ' UTC' FROM device_state s JOIN devices d USING (device_id) "
            "WHERE s.last_seen < now() - make_interval(secs => "
            "device_silence_limit_s(s.expected_interval_s, %s, %s)) "
            "ON CONFLICT (type, subject) WHERE state = 'active' DO NOTHING RETURNING id",
            (multiple, after_s)).fetchall()
    return len(rows)


def refresh_open_shipments(conn: psycopg.Connection, now: datetime) -> int:
    """Periodic, wall clock: a shipment can become delayed with no new data (the promise passes)."""
    refs = [r[0] for r in conn.execute("SELECT ref FROM shipments WHERE status = ANY(%s) AND promised_at < %s",
                                       (list(OPEN_STATUSES), now))]
    for ref in refs:
        with conn.transaction(), conn.cursor() as cur:
            update_shipment(cur, ref, now)
    return len(refs)


# --- the batch entry point -----------------------------------------------------------------------


def apply_telemetry(cur: psycopg.Cursor, applied: Sequence[Record], shipment_refs: Iterable[str],
                    now: datetime) -> TelemetryResult:
    positions = [r for r in applied if isinstance(r, Position)]
    envs = [r for r in applied if isinstance(r, EnvReading)]
    statuses = [r for r in applied if isinstance(r, Status)]
    clear_offline(cur, {r.device_id for r in applied})
    _lock_devices(cur, {r.device_id for r in positions} | {r.device_id for r in envs}
                  | {r.device_id for r in statuses})
    trackers = refilter_positions(cur, positions, now) if positions else {}
    refs = shipments_for(cur, trackers, shipment_refs)
    update_shipments(cur, refs, now)
    changed = evaluate_environment(cur, envs) if envs else 0
    if statuses:
        evaluate_battery(cur, statuses)
    return TelemetryResult(len(refs), changed)


def shipment_refs_of(postings: Iterable[tuple[str | None, str]]) -> set[str]:
    """Refs of loading/arriving movements: the scans that move a shipment's status."""
    return {ref for ref, step in postings if ref and step in ("loading", "arriving")}

