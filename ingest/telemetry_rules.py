"""Positions, shipments, environmental and device alarms, inside the ingest transaction.

Ingest decides nothing: for the window that the new data can affect it loads typed rows through
``ingest.telemetry_store``, calls the rules of ``core.telemetry_rules`` (the same ones that
``derive_telemetry`` replays a whole history with) and applies the difference to the stored
state, keeping the id, acknowledgement, notes and tickets of every alarm that still exists. So
late and out-of-order data give the same result as in-order data, and a redelivery (already
de-duplicated) changes nothing.

Locks: per-device advisory locks (positions, readings, battery) and shipment rows (FOR UPDATE),
each phase in one global order, after the stock phase; concurrent workers cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from core.coldchain import Reading
from core.contract import EnvReading, Position, Record, Status
from core.devices import is_offline, offline_since, silence_limit_s
from core.shipments import ShipmentEvent, ShipmentPlan, ShipmentState
from core.telemetry_rules import (
    LOOKBACK,
    TEMPERATURE_TYPES,
    BatteryAlarm,
    Context,
    EnvAlarm,
    alarm_subject,
    battery_episodes,
    context_at,
    contexts_of,
    env_episodes,
    excursion_ticket,
    filter_track,
    late_ticket,
    shipment_outcome,
    track_of,
)
from ingest import telemetry_store as store
from ingest.alarm_withdrawal import withdraw_alarms
from ingest.stock import lock_keys

OPEN_STATUSES = ("planned", "loading", "in_transit", "arrived")
_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True)
class TelemetryResult:
    shipments: int
    alarms_changed: int


def _lock_devices(cur: psycopg.Cursor, device_ids: Iterable[str]) -> None:
    lock_keys(cur, [("device", d, "") for d in device_ids])


# --- positions -----------------------------------------------------------------------------------


def refilter_positions(cur: psycopg.Cursor, positions: Sequence[Position], now: datetime) -> dict[str, datetime]:
    """Re-decide filter reasons from each device's earliest new position on, seeded with the last
    confirmed fix before it. Returns, per device, the earliest time from which its accepted track
    may have changed."""
    earliest: dict[str, datetime] = {}
    for p in positions:
        earliest[p.device_id] = min(p.ts, earliest.get(p.device_id, p.ts))
    updates: list[tuple[str | None, str, datetime, str]] = []
    for device_id, window in store.load_position_windows(cur, earliest).items():
        for row, reason in filter_track(window.rows, now, anchored=window.anchored):
            key = (row.ts, row.msg_id)
            if key in window.stored and window.stored[key] != reason:
                updates.append((reason, device_id, row.ts, row.msg_id))
                earliest[device_id] = min(earliest[device_id], row.ts)
    store.store_position_reasons(cur, updates)
    return earliest


# --- shipments -----------------------------------------------------------------------------------


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


def update_shipment(cur: psycopg.Cursor, ref: str, now: datetime) -> bool:
    """Re-derive one shipment; False when it does not exist."""
    return update_shipments(cur, [ref], now) == 1


def update_shipments(cur: psycopg.Cursor, refs: Iterable[str], now: datetime) -> int:
    """Re-derive the shipments' status, events and live state with ``core``, with a fixed number
    of queries however many shipments there are, writing only what changed."""
    wanted = sorted(set(refs))
    if not wanted:
        return 0
    rows = store.lock_shipments(cur, wanted)
    if not rows:
        return 0
    scans = store.movement_times(cur, wanted)
    since: dict[str, datetime] = {}
    for r in rows:
        if r.vehicle is not None and (ships := scans.get((r.ref, "loading"))):
            since[r.vehicle] = min(min(ships) - LOOKBACK, since.get(r.vehicle, min(ships)))
    fixes_of = store.vehicle_fixes(cur, since)
    current: dict[str, dict[str, tuple[datetime, str]]] = {}
    for ref, type_, ts, detail in cur.execute(
            "SELECT shipment, type, ts, detail FROM shipment_events WHERE shipment = ANY(%s)", (wanted,)):
        current.setdefault(ref, {})[type_] = (ts, detail)
    was_delayed: dict[str, bool] = dict(
        cur.execute("SELECT ref, delayed FROM shipment_state WHERE ref = ANY(%s)", (wanted,)).fetchall())
    upserts: list[tuple[str, datetime, str, str]] = []
    deletes: list[tuple[str, str]] = []
    states: list[tuple[object, ...]] = []
    statuses: list[tuple[str, str]] = []
    for r in rows:
        known = current.get(r.ref, {})
        previous = ShipmentState(r.status, tuple(ShipmentEvent(ts, t, d) for t, (ts, d) in known.items()  # type: ignore[arg-type]
                                                 if t in _CORE_EVENTS), None)
        plan = ShipmentPlan(r.ref, r.origin, r.destination, r.promised_at, r.cancelled_at, r.origin_code,
                            r.destination_code)
        # The store loaded each vehicle's fixes from LOOKBACK before its earliest first ship scan.
        fixes = track_of(fixes_of.get(r.vehicle, []), scans.get((r.ref, "loading"), [])) if r.vehicle else []
        out = shipment_outcome(plan, scans.get((r.ref, "loading"), []), scans.get((r.ref, "arriving"), []),
                               fixes, now, previous)
        state = out.state
        if state.events is not previous.events:  # advance kept the stored stages otherwise
            derived = {e.type: (e.ts, e.detail) for e in state.events}
            upserts += [(r.ref, ts, t, d) for t, (ts, d) in derived.items()
                        if known.get(t) != (ts, d) and not (t == "cancelled" and t in known)]
            deletes += [(r.ref, t) for t in known if t in _CORE_EVENTS and t not in derived]
        last = state.last_fix
        states.append((r.ref, last.lat if last else None, last.lon if last else None, last.ts if last else None,
                       out.eta, out.remaining_km, out.delayed, out.delivered_at))
        if state.status != r.status:
            statuses.append((state.status, r.ref))
        if out.delayed != was_delayed.get(r.ref, False):
            _delay_alarm(cur, r.ref, out.delayed, r.promised_at, out.eta, last.ts if last else None, now)
        if out.delivered_late and "delivered_late" not in known:
            assert out.delivered_at is not None and r.promised_at is not None
            upserts.append((r.ref, out.delivered_at, "delivered_late",
                            f"delivered after the promise {r.promised_at:%Y-%m-%d %H:%M} UTC"))
            ticket = late_ticket(out, r.promised_at)
            open_ticket(cur, ticket.shipment, ticket.cause, None, ticket.summary)
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


def _units(cur: psycopg.Cursor, readings: Sequence[EnvReading], moved: dict[str, datetime]) -> list[store.EnvUnit]:
    """The (device, probe, context) series that new readings, or a late ship/deliver scan on a
    vehicle (``moved``: vehicle -> from when its contexts may have changed), can affect."""
    new: dict[tuple[str, str | None], list[datetime]] = {}
    for r in readings:
        new.setdefault((r.device_id, r.probe), []).append(r.ts)
    riders = store.sensors_on(cur, moved) if moved else {}
    devices = store.load_devices(cur, {d for d, _ in new}) | riders
    moved_from: dict[tuple[str, str | None], datetime] = {}
    if riders:
        since = min(moved.values())
        for device_id, probes in store.probes_since(cur, sorted(riders), since).items():
            vehicle = riders[device_id].vehicle
            assert vehicle is not None
            for probe in probes:
                moved_from[(device_id, probe)] = moved[vehicle]
    keys = set(new) | set(moved_from)
    if not keys:
        return []
    floor = min([t for ts in new.values() for t in ts] + list(moved_from.values()))
    carriages = store.load_carriages(cur, {d.vehicle for d in devices.values() if d.vehicle}, floor)
    timelines = {d.device_id: contexts_of(d.profile, carriages.get(d.vehicle, []) if d.vehicle else [])
                 for d in devices.values()}
    units: dict[tuple[str, str | None, Context], datetime] = {}
    for key in keys:
        device_id, probe = key
        if device_id not in timelines:
            continue
        timeline = timelines[device_id]
        touched = [(context_at(timeline, t), t) for t in new.get(key, [])]
        if key in moved_from:
            # Every context from just before the changed boundary on: their spans moved.
            t0 = moved_from[key]
            touched += [(c, t0 if c.holds(t0 - _INSTANT) or c.holds(t0) else c.start or t0)
                        for c in timeline if c.end is None or c.end >= t0]
        for ctx, t in touched:
            if ctx.profile is not None:
                units[(device_id, probe, ctx)] = min(t, units.get((device_id, probe, ctx), t))
    result = [store.EnvUnit(d, p, c, c.profile, t) for (d, p, c), t in units.items() if c.profile is not None]
    result.sort(key=lambda u: (u.device_id, u.probe or "", u.context.start or store.FAR_PAST))
    return result


def evaluate_environment(cur: psycopg.Cursor, readings: Sequence[EnvReading],
                         moved: dict[str, datetime] | None = None) -> int:
    """Re-derive the environmental alarms of every series the new readings (or late ship/deliver
    scans) can affect, from a reset point of each, with a fixed number of queries per batch and
    writes only where an alarm changed."""
    units = _units(cur, readings, moved or {})
    if not units:
        return 0
    profiles = store.load_profiles(cur, {u.profile_code for u in units})
    units = [u for u in units if u.profile_code in profiles]
    # Each channel from its newest reset reading, else from the context's start (a cumulative
    # count always starts there), else from the series' first reading.
    starts = store.reset_points(cur, units, profiles)
    windows = store.env_windows(cur, units, {u: starts[u].window for u in units})
    subjects = [alarm_subject(u.device_id, u.probe) for u in units]
    stored = store.stored_env_alarms(cur, units, subjects, starts)
    ticketed = store.ticketed_shipments(cur, {u.context.shipment for u in units if u.context.shipment},
                                        "temperature_excursion")
    matched: list[list[tuple[EnvAlarm, store.StoredAlarm | None]]] = []
    gone: list[store.StoredAlarm] = []
    for unit in units:
        ts, temps, rhs = windows[unit]
        readings_in = [Reading(t, a, b) for t, a, b in zip(ts, temps, rhs, strict=True)]
        found = env_episodes(unit.device_id, unit.probe, unit.context, profiles[unit.profile_code], readings_in,
                             temp_from=starts[unit].temp, rh_from=starts[unit].rh)
        pairs, unmatched = _match(stored[unit], found)
        matched.append(pairs)
        gone += unmatched
    # Every withdrawal first: a ticket deleted with its vanished alarm frees its shipment for an
    # episode of another unit of this batch that does exist.
    ticketed -= _withdraw(cur, gone)
    return len(gone) + sum(_apply(cur, pairs, ticketed) for pairs in matched)


def _overlaps(row: store.StoredAlarm, started_at: datetime, cleared_at: datetime | None) -> bool:
    far = datetime.max.replace(tzinfo=started_at.tzinfo)
    return bool(row.started_at < (cleared_at or far) and started_at < (row.cleared_at or far))


def _withdraw(cur: psycopg.Cursor, gone: Sequence[store.StoredAlarm]) -> set[str]:
    """Episodes that no longer exist with the data now known (a late reading filled a gap, an
    earlier deliver scan ended the carriage): ``core.withdrawal`` decides. Returns the shipments
    whose automatic ticket went with its alarm."""
    return withdraw_alarms(cur, [(a.id, a.acknowledged) for a in gone if not a.withdrawn])


def _match(stored: list[store.StoredAlarm], found: list[EnvAlarm]
           ) -> tuple[list[tuple[EnvAlarm, store.StoredAlarm | None]], list[store.StoredAlarm]]:
    """A stored alarm that overlaps a derived episode of its type IS that episode (late readings
    may move its start or end): it keeps its id, acknowledgement and ticket. Returns the pairs and
    the stored alarms no episode matches."""
    unmatched = list(stored)
    pairs: list[tuple[EnvAlarm, store.StoredAlarm | None]] = []
    for e in sorted(found, key=lambda x: (x.started_at, x.type)):
        match = next((r for r in unmatched if r.type == e.type and _overlaps(r, e.started_at, e.cleared_at)), None)
        if match is not None:
            unmatched.remove(match)
        pairs.append((e, match))
    return pairs, unmatched


def _apply(cur: psycopg.Cursor, pairs: list[tuple[EnvAlarm, store.StoredAlarm | None]], ticketed: set[str]) -> int:
    """Make the stored alarms equal to the derived episodes they were matched with."""
    changed = 0
    # Clear before activating, so that the one-active-alarm-per-type index never sees two.
    for e, row in sorted(pairs, key=lambda p: p[0].cleared_at is None):
        state = "cleared" if e.cleared_at is not None else "active"
        if row is not None:
            if row.withdrawn or (row.started_at, row.cleared_at, row.peak_value, row.shipment) != (
                    e.started_at, e.cleared_at, e.peak_value, e.shipment):
                # A late ship/deliver scan may have moved the episode into another context.
                cur.execute("UPDATE alarms SET state = %s, started_at = %s, cleared_at = %s, peak_value = %s, "
                            "seconds_out = %s, triggered_at = %s, message = %s, shipment = %s, updated_at = now() "
                            "WHERE id = %s", (state, e.started_at, e.cleared_at, e.peak_value, e.seconds_out,
                                              e.triggered_at, e.message, e.shipment, row.id))
                changed += 1
            alarm_id = row.id
        else:
            severity = "critical" if e.type.startswith("temperature") else "warning"
            inserted = cur.execute(
                "INSERT INTO alarms (type, severity, state, device_id, probe, shipment, subject, started_at, "
                "triggered_at, cleared_at, peak_value, seconds_out, message) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (e.type, severity, state, e.device_id, e.probe, e.shipment, alarm_subject(e.device_id, e.probe),
                 e.started_at, e.triggered_at, e.cleared_at, e.peak_value, e.seconds_out, e.message)).fetchone()
            assert inserted is not None
            alarm_id = int(inserted[0])
            changed += 1
        if e.shipment is not None and e.type in TEMPERATURE_TYPES and e.shipment not in ticketed:
            ticket = excursion_ticket(e)
            open_ticket(cur, ticket.shipment, ticket.cause, alarm_id, ticket.summary)
            ticketed.add(e.shipment)
    return changed


# --- device health -------------------------------------------------------------------------------


def evaluate_battery(cur: psycopg.Cursor, statuses: Sequence[Status]) -> int:
    """Re-derive each device's battery episodes from its last level at or above the clear level
    before the new ones: an episode keeps its id for as long as it lasts, however long."""
    since: dict[str, datetime] = {}
    for s in statuses:
        if s.battery_pct is not None:
            since[s.device_id] = min(s.ts, since.get(s.device_id, s.ts))
    if not since:
        return 0
    starts, levels = store.battery_windows(cur, since)
    stored = store.stored_battery_alarms(cur, starts)
    changed = 0
    for device_id in sorted(since):
        found = battery_episodes(device_id, levels[device_id])
        changed += _reconcile_battery(cur, device_id, stored[device_id], found)
    return changed


def _reconcile_battery(cur: psycopg.Cursor, device_id: str, stored: list[store.StoredAlarm],
                       found: list[BatteryAlarm]) -> int:
    unmatched = list(stored)
    pairs: list[tuple[BatteryAlarm, store.StoredAlarm | None]] = []
    for e in found:
        match = next((r for r in unmatched if _overlaps(r, e.started_at, e.cleared_at)), None)
        if match is not None:
            unmatched.remove(match)
        pairs.append((e, match))
    _withdraw(cur, unmatched)
    changed = len(unmatched)
    for e, row in sorted(pairs, key=lambda p: p[0].cleared_at is None):
        state = "cleared" if e.cleared_at is not None else "active"
        message = f"{device_id}: battery at {e.peak_value:g} %"
        if row is None:
            cur.execute(
                "INSERT INTO alarms (type, severity, state, device_id, subject, started_at, triggered_at, "
                "cleared_at, peak_value, seconds_out, message) "
                "VALUES ('battery_low', 'warning', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (state, device_id, device_id, e.started_at, e.started_at, e.cleared_at, e.peak_value,
                 e.seconds_out, message))
            changed += 1
        elif row.withdrawn or (row.started_at, row.cleared_at, row.peak_value) != (
                e.started_at, e.cleared_at, e.peak_value):
            cur.execute("UPDATE alarms SET state = %s, started_at = %s, triggered_at = %s, cleared_at = %s, "
                        "peak_value = %s, seconds_out = %s, message = %s, updated_at = now() WHERE id = %s",
                        (state, e.started_at, e.started_at, e.cleared_at, e.peak_value, e.seconds_out, message,
                         row.id))
            changed += 1
    return changed


def clear_offline(cur: psycopg.Cursor, device_ids: Iterable[str]) -> None:
    """A device that speaks is online again."""
    ids = sorted(set(device_ids))
    if ids:
        cur.execute("UPDATE alarms SET state = 'cleared', cleared_at = now(), updated_at = now() "
                    "WHERE type = 'device_offline' AND state = 'active' AND subject = ANY(%s)", (ids,))


def mark_offline(conn: psycopg.Connection, after_s: float, multiple: float) -> int:
    """Periodic, wall clock: a device silent for ``multiple`` of its expected interval (``after_s``
    while that is unknown) gets a device_offline alarm; the rule is ``core.devices``'."""
    with conn.transaction():
        now, = conn.execute("SELECT now()").fetchone() or (None,)
        assert isinstance(now, datetime)
        silent: list[tuple[str, datetime, datetime | None]] = []
        for device_id, last_seen, interval in conn.execute(
                "SELECT s.device_id, s.last_seen, s.expected_interval_s FROM device_state s "
                "JOIN devices d USING (device_id)"):
            limit = silence_limit_s(interval, multiple, after_s)
            if is_offline(last_seen, now, limit):
                silent.append((device_id, last_seen, offline_since(last_seen, limit)))
        rows = conn.execute(
            "INSERT INTO alarms (type, severity, state, device_id, subject, started_at, triggered_at, message) "
            "SELECT 'device_offline', 'warning', 'active', u.device_id, u.device_id, u.since, now(), "
            "u.device_id || ': no message since ' || to_char(u.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
            "|| ' UTC' FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) u(device_id, last_seen, since) "
            "ON CONFLICT (type, subject) WHERE state = 'active' DO NOTHING RETURNING id",
            ([d for d, _, _ in silent], [t for _, t, _ in silent], [s for _, _, s in silent])).fetchall() \
            if silent else []
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
    # A ship/deliver scan re-judges the readings of the sensors on its vehicle from its time on.
    moved = store.moved_vehicles(cur, sorted(set(shipment_refs)))
    riders = sorted(store.sensors_on(cur, moved)) if moved else []
    _lock_devices(cur, {r.device_id for r in positions} | {r.device_id for r in envs}
                  | {r.device_id for r in statuses} | set(riders))
    trackers = refilter_positions(cur, positions, now) if positions else {}
    refs = shipments_for(cur, trackers, shipment_refs)
    update_shipments(cur, refs, now)
    changed = evaluate_environment(cur, envs, moved) if envs or moved else 0
    if statuses:
        changed += evaluate_battery(cur, statuses)
    return TelemetryResult(len(refs), changed)


def shipment_refs_of(postings: Iterable[tuple[str | None, str]]) -> set[str]:
    """Refs of loading/arriving movements: the scans that move a shipment's status."""
    return {ref for ref, step in postings if ref and step in ("loading", "arriving")}

