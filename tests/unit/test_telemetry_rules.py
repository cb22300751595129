"""The telemetry rules engine: one pure derivation from event-time history."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from core.coldchain import Profile, Reading
from core.geo import Circle
from core.telemetry_rules import (
    Carriage,
    Context,
    DeviceRow,
    EnvRow,
    MovementTime,
    PositionRow,
    ShipmentRow,
    StatusRow,
    TelemetryHistory,
    choose_profile,
    contexts_of,
    derive_telemetry,
    env_episodes,
    is_reset,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CHILLED = Profile(2, 8, delay_s=300, hysteresis_c=0.5)
FROZEN = Profile(None, -18, delay_s=300)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def room(env: list[EnvRow], **kw: object) -> TelemetryHistory:
    return TelemetryHistory(now=at(10_000), devices=(DeviceRow("TS-1", "env_sensor", None, "CHILLED"),),
                            env=tuple(env), profiles={"CHILLED": CHILLED, "FROZEN": FROZEN}, **kw)  # type: ignore[arg-type]


def test_overheat_then_freeze_keeps_both_alarms() -> None:
    env = [EnvRow("TS-1", at(m), 9.0) for m in range(7)] + [EnvRow("TS-1", at(7 + m), 1.0) for m in range(30)]
    alarms = derive_telemetry(room(env)).env_alarms
    assert [(a.type, a.started_at, a.cleared_at) for a in alarms] == [
        ("temperature_high", at(0), at(7)), ("temperature_low", at(7), None)]


def test_probes_are_separate_series() -> None:
    env = [EnvRow("TS-1", at(m), 5.0, probe="A") for m in range(30)]
    env += [EnvRow("TS-1", at(m), 9.5, probe="B") for m in range(30)]
    alarms = derive_telemetry(room(env)).env_alarms
    assert [(a.probe, a.type, a.peak_value) for a in alarms] == [("B", "temperature_high", 9.5)]


def test_any_order_and_duplicates_give_the_same_state() -> None:
    env = [EnvRow("TS-1", at(m), 9.0 if m % 40 < 12 else 5.0, probe="A") for m in range(120)]
    shuffled = env + env[:17]
    random.Random(4).shuffle(shuffled)
    assert derive_telemetry(room(env)).env_alarms == derive_telemetry(room(shuffled)).env_alarms


def truck_history(env: list[EnvRow], movements: list[MovementTime], lines: tuple[str | None, ...] = ()
                  ) -> TelemetryHistory:
    return TelemetryHistory(
        now=at(10_000), devices=(DeviceRow("TS-1", "env_sensor", "TRUCK-1", "FROZEN"),), env=tuple(env),
        shipments=(ShipmentRow("SHP-1", "TRUCK-1", "GF-CUST", line_profiles=lines),),
        movements=tuple(movements), geofences={"GF-CUST": Circle(52.5, 13.4, 300)},
        profiles={"CHILLED": CHILLED, "FROZEN": FROZEN})


def test_each_reading_is_judged_in_the_context_of_its_own_time() -> None:
    # -20 °C while the sensor sits in the freezer (its own profile, fine), then loaded onto a
    # chilled shipment at minute 30 and still reading -20: only the time after loading alarms.
    env = [EnvRow("TS-1", at(m), -20.0) for m in range(60)]
    ship = [MovementTime("SHP-1", "loading", at(30))]
    alarms = derive_telemetry(truck_history(env, ship, ("CHILLED",))).env_alarms
    assert [(a.type, a.shipment, a.started_at) for a in alarms] == [("temperature_low", "SHP-1", at(30))]
    # Before the ship scan is known, the same readings raise nothing: a late scan re-judges them.
    assert derive_telemetry(truck_history(env, [], ("CHILLED",))).env_alarms == ()


def test_delivery_ends_the_shipment_context() -> None:
    env = [EnvRow("TS-1", at(m), 9.0) for m in range(60)]
    moves = [MovementTime("SHP-1", "loading", at(0)), MovementTime("SHP-1", "arriving", at(20))]
    alarms = derive_telemetry(truck_history(env, moves, ("CHILLED",))).env_alarms
    # Too warm while carried: the episode ends with the delivery; the sensor's own (frozen)
    # profile then applies and 9 °C is far too warm for it as well.
    assert [(a.shipment, a.started_at, a.cleared_at) for a in alarms] == [("SHP-1", at(0), at(20)),
                                                                          (None, at(20), None)]
    assert all(a.type == "temperature_high" for a in alarms)


def test_profile_choice_is_the_own_else_the_first_line_with_one() -> None:
    assert choose_profile("A", ("B",)) == "A"
    assert choose_profile(None, (None, "B", "C")) == "B"
    assert choose_profile(None, (None,)) is None


def test_a_temperature_episode_on_a_shipment_opens_one_ticket() -> None:
    env = [EnvRow("TS-1", at(m), 9.0 if m < 20 or m > 40 else 5.0) for m in range(60)]
    state = derive_telemetry(truck_history(env, [MovementTime("SHP-1", "loading", at(0))], ("CHILLED",)))
    assert len(state.env_alarms) == 2
    assert [(t.shipment, t.cause, t.alarm) for t in state.tickets] == [
        ("SHP-1", "temperature_excursion", state.env_alarms[0])]


def test_contexts_prefer_the_shipment_loaded_last() -> None:
    got = contexts_of("OWN", [Carriage("S1", at(0), at(50), "P1"), Carriage("S2", at(10), at(20), "P2")])
    assert [(c.start, c.end, c.shipment) for c in got] == [
        (None, at(0), None), (at(0), at(10), "S1"), (at(10), at(20), "S2"), (at(20), at(50), "S1"),
        (at(50), None, None)]


def test_reset_reading_needs_every_limited_channel_inside_by_the_hysteresis() -> None:
    humid = Profile(2, 8, rh_min_pct=30, rh_max_pct=70)
    assert is_reset(CHILLED, 5.0, None)
    assert not is_reset(CHILLED, 7.8, None)  # inside, but within the hysteresis band
    assert not is_reset(humid, 5.0, None)
    assert is_reset(humid, 5.0, 50.0)
    assert is_reset(Profile(None, None), None, None)


def test_battery_low_for_twelve_days_is_one_episode() -> None:
    statuses = tuple(StatusRow("TRK-1", T0 + timedelta(hours=h), 15.0) for h in range(0, 12 * 24, 6))
    state = derive_telemetry(TelemetryHistory(now=at(0), statuses=statuses))
    assert [(b.started_at, b.cleared_at) for b in state.battery_alarms] == [(T0, None)]


def test_wild_first_fix_does_not_reject_the_track() -> None:
    wild = PositionRow("TRK-1", at(0), "p0", 53.5, 13.3)
    good = [PositionRow("TRK-1", at(m), f"p{m}", 52.4, 13.3) for m in range(1, 120)]
    reasons = derive_telemetry(TelemetryHistory(now=at(200), positions=(wild, *good))).position_reasons
    assert reasons[("TRK-1", at(0), "p0")] == "impossible_jump"
    assert sum(r is not None for r in reasons.values()) == 1


def test_shipment_outcome_from_scans_and_the_vehicle_track() -> None:
    dc, cust = (52.40, 13.30), (52.50, 13.40)
    fixes = [PositionRow("TRK-1", at(m), f"p{m}", *dc) for m in range(0, 6)]
    fixes += [PositionRow("TRK-1", at(6 + m), f"q{m}", dc[0] + (cust[0] - dc[0]) * m / 20,
                          dc[1] + (cust[1] - dc[1]) * m / 20) for m in range(1, 21)]
    fixes += [PositionRow("TRK-1", at(27 + m), f"r{m}", *cust) for m in range(5)]
    history = TelemetryHistory(
        now=at(100), devices=(DeviceRow("TRK-1", "gps_tracker", "TRUCK-1"),), positions=tuple(fixes),
        shipments=(ShipmentRow("SHP-1", "TRUCK-1", "GF-CUST", origin_fence="GF-DC", promised_at=at(30)),),
        movements=(MovementTime("SHP-1", "loading", at(1)), MovementTime("SHP-1", "arriving", at(31))),
        geofences={"GF-DC": Circle(*dc, 500), "GF-CUST": Circle(*cust, 300)})
    state = derive_telemetry(history)
    outcome = state.shipments["SHP-1"]
    assert [e.type for e in outcome.state.events] == ["loading", "departed", "arrived", "delivered"]
    assert outcome.state.status == "delivered" and outcome.delivered_late and not outcome.delayed
    assert [(t.shipment, t.cause) for t in state.tickets] == [("SHP-1", "late_delivery")]


def test_each_channel_is_derived_from_its_own_reset_reading() -> None:
    # Humid 0..24 then dry; warm 0..19 then cold. Re-derived from each channel's newest reset
    # (temperature: 19, humidity: 49) the cold episode is whole and no humidity episode is made
    # up from the truncated humid run, unlike a window at the temperature alarm's start.
    profile = Profile(2, 8, rh_max_pct=70)
    readings = [Reading(at(m), 5.0 if m < 20 else 1.0, 80.0 if m < 25 else 50.0) for m in range(51)]
    ctx = Context(None, None, "P", None)
    got = env_episodes("TS-1", None, ctx, profile, readings, temp_from=at(19), rh_from=at(49))
    assert [(a.type, a.started_at) for a in got] == [("temperature_low", at(20))]
    whole = env_episodes("TS-1", None, ctx, profile, readings)
    assert [(a.type, a.started_at) for a in whole] == [("humidity_high", at(0)), ("temperature_low", at(20))]
