from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.geo import Circle, Dwell, Fix, Polygon, centre, contains, haversine_km
from core.shipments import (
    STATUS_RANK,
    ShipmentPlan,
    ShipmentState,
    advance,
    delivered_late,
    derive,
    eta,
    is_delayed,
    recent_speed_kmh,
)

T0 = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)
M_PER_DEG = 111_195.0
DC = Circle(53.55, 10.00, 300.0)
CUST_LAT, CUST_LON = 53.08, 8.80
CUSTOMER = Polygon(((8.795, 53.077), (8.805, 53.077), (8.805, 53.083), (8.800, 53.083), (8.800, 53.080),
                    (8.795, 53.080)))  # an L-shaped yard, concave
PLAN = ShipmentPlan("SH-1", DC, CUSTOMER, promised_at=T0 + timedelta(hours=4), cancelled_at=None,
                    origin_code="GF-DC1", destination_code="GF-CUST")
DWELL = Dwell()


def jitter(rng: random.Random, lat: float, lon: float, sigma_m: float) -> tuple[float, float]:
    return (lat + rng.gauss(0, sigma_m) / M_PER_DEG,
            lon + rng.gauss(0, sigma_m) / (M_PER_DEG * math.cos(math.radians(lat))))


@dataclass
class Route:
    fixes: list[Fix]
    ship_scans: list[datetime]
    deliver_scans: list[datetime]
    departed: datetime  # ground truth: first fix outside the yard after loading
    arrived: datetime  # first fix inside the customer fence


def generate_route(seed: int) -> Route:
    """A truck at the DC dock, loaded, driving ~100 km to the customer with a rest stop, arriving
    and unloading. Fixes every 30 s (some dropped), GPS noise of ~8 m."""
    rng = random.Random(seed)
    fixes: list[Fix] = []
    t = T0

    def emit(lat: float, lon: float, sigma: float = 8.0) -> None:
        nonlocal t
        if rng.random() > 0.1:  # 10 % of fixes never arrive
            fixes.append(Fix(t, *jitter(rng, lat, lon, sigma)))
        t += timedelta(seconds=30 + rng.uniform(-3, 3))

    for _ in range(80):  # 40 min at the dock
        emit(DC.lat + 0.0004, DC.lon)
    ship_scans = [T0 + timedelta(minutes=m + rng.uniform(0, 1)) for m in (10, 12, 15, 31)]
    start_drive = t
    dest_lat, dest_lon = 53.0785, 8.7975  # the arm of the L nearest to the DC
    total_km = haversine_km(DC.lat + 0.0004, DC.lon, dest_lat, dest_lon)
    speed_kmh = rng.uniform(70, 90)
    driven = 0.0
    stopped = False
    while driven < total_km:
        f = driven / total_km
        emit(DC.lat + 0.0004 + f * (dest_lat - DC.lat - 0.0004), DC.lon + f * (dest_lon - DC.lon))
        if not stopped and driven > total_km / 2:
            stopped = True
            for _ in range(40):  # a 20 min rest stop
                emit(DC.lat + f * (dest_lat - DC.lat), DC.lon + f * (dest_lon - DC.lon))
        driven += speed_kmh * 30 / 3600
    for _ in range(60):  # 30 min in the customer's yard
        emit(dest_lat, dest_lon, 5.0)
    deliver_scans = [t - timedelta(minutes=10), t - timedelta(minutes=5)]
    departed = next(x.ts for x in fixes if x.ts >= start_drive and not contains(DC, x.lat, x.lon))
    arrived = next(x.ts for x in fixes if x.ts > start_drive and contains(CUSTOMER, x.lat, x.lon))
    return Route(fixes, ship_scans, deliver_scans, departed, arrived)


def derive_route(r: Route, plan: ShipmentPlan = PLAN) -> ShipmentState:
    return derive(plan, r.ship_scans, r.deliver_scans, r.fixes, DWELL)


# --- the state machine over a generated route ----------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_route(seed: int) -> None:
    r = generate_route(seed)
    state = derive_route(r)
    assert state.status == "delivered"
    assert [(e.type, e.ts, e.detail) for e in state.events] == [
        ("loading", min(r.ship_scans), "first ship scan"),
        ("departed", r.departed, "left geofence GF-DC1"),
        ("arrived", r.arrived, "entered geofence GF-CUST"),
        ("delivered", min(r.deliver_scans), "first deliver scan"),
    ]
    assert state.last_fix == max(r.fixes, key=lambda f: f.ts)
    assert state.at("arrived") == r.arrived
    assert state.at("cancelled") is None


def test_status_along_the_route() -> None:
    r = generate_route(4)

    def status_at(t: datetime) -> str:
        return derive(PLAN, [s for s in r.ship_scans if s <= t], [s for s in r.deliver_scans if s <= t],
                      [f for f in r.fixes if f.ts <= t], DWELL).status

    assert status_at(T0 + timedelta(minutes=5)) == "planned"
    assert status_at(min(r.ship_scans)) == "loading"
    assert status_at(r.departed) == "loading"  # one fix outside: not yet confirmed by the dwell
    assert status_at(r.departed + timedelta(minutes=2)) == "in_transit"
    assert status_at(r.arrived + timedelta(minutes=3)) == "arrived"
    assert status_at(max(r.deliver_scans)) == "delivered"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 10**6), data=st.data())
def test_shuffled_and_duplicated_inputs_give_the_same_state(seed: int, data: st.DataObject) -> None:
    r = generate_route(seed)
    expected = derive_route(r)
    assert expected.status == "delivered"
    fixes = data.draw(st.permutations(r.fixes)) + data.draw(st.lists(st.sampled_from(r.fixes), max_size=50))
    ships = data.draw(st.permutations(r.ship_scans + r.ship_scans[:2]))
    delivers = data.draw(st.permutations(r.deliver_scans * 2))
    assert derive(PLAN, ships, delivers, fixes, DWELL) == expected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 10**6), data=st.data())
def test_batches_in_random_order_never_move_status_back(seed: int, data: st.DataObject) -> None:
    """The lead's use: data arrives in random order and batches; each batch is derived over all
    history seen so far and stored through ``advance``."""
    r = generate_route(seed)
    items: list[tuple[str, Fix | datetime]] = [("fix", f) for f in r.fixes]
    items += [("ship", s) for s in r.ship_scans] + [("deliver", s) for s in r.deliver_scans]
    items = data.draw(st.permutations(items))
    fixes: list[Fix] = []
    scans: dict[str, list[datetime]] = {"ship": [], "deliver": []}
    stored: ShipmentState | None = None
    ranks = []
    i = 0
    while i < len(items):
        n = data.draw(st.integers(1, 80))
        for kind, value in items[i:i + n]:
            if isinstance(value, Fix):
                fixes.append(value)
            else:
                scans[kind].append(value)
        i += n
        stored = advance(stored, derive(PLAN, scans["ship"], scans["deliver"], fixes, DWELL))
        ranks.append(STATUS_RANK[stored.status])
    assert ranks == sorted(ranks)
    assert stored == derive_route(r)


def test_late_old_positions_never_move_status_back() -> None:
    r = generate_route(8)
    upto = r.arrived + timedelta(minutes=5)
    now_fixes = [f for f in r.fixes if f.ts <= upto]
    before = derive(PLAN, r.ship_scans, [], now_fixes, DWELL)
    assert before.status == "arrived"
    # A tracker flushes its buffer: old positions from the dock and from the road arrive now.
    rng = random.Random(1)
    old = [Fix(T0 + timedelta(seconds=15 + 60 * i), *jitter(rng, DC.lat, DC.lon, 8.0)) for i in range(30)]
    old += [replace(f, ts=f.ts + timedelta(seconds=1)) for f in now_fixes if r.departed < f.ts < r.arrived][::7]
    after = derive(PLAN, r.ship_scans, [], now_fixes + old, DWELL)
    assert after.status == "arrived"
    assert after.events == before.events
    assert after.last_fix == before.last_fix  # old rows do not become the last position


def test_advance_keeps_the_stored_status_when_a_derivation_falls_behind() -> None:
    ahead = ShipmentState("arrived", (), None)
    behind = ShipmentState("in_transit", (), Fix(T0, 53.0, 9.0))
    kept = advance(ahead, behind)
    assert kept.status == "arrived" and kept.last_fix == behind.last_fix
    assert advance(behind, ahead) == ahead
    assert advance(None, behind) == behind
    # Terminal states are equal in rank: late proof of delivery before the cancellation wins.
    delivered = ShipmentState("delivered", (), None)
    assert advance(ShipmentState("cancelled", (), None), delivered) == delivered


# --- rules at the edges --------------------------------------------------------------------------


def fix(minutes: float, lat: float, lon: float) -> Fix:
    return Fix(T0 + timedelta(minutes=minutes), lat, lon)


def at_dc(minutes: float) -> Fix:
    return fix(minutes, DC.lat, DC.lon)


def on_road(minutes: float, km_south: float = 5.0) -> Fix:
    return fix(minutes, DC.lat - km_south / 111.195, DC.lon)


def at_customer(minutes: float) -> Fix:
    return fix(minutes, 53.0785, 8.7975)


def test_nothing_happened_is_planned() -> None:
    state = derive(PLAN, [], [], [at_dc(m) for m in range(10)], DWELL)
    assert state.status == "planned" and state.events == ()


def test_loading_without_positions() -> None:
    state = derive(PLAN, [T0 + timedelta(minutes=3), T0], [], [], DWELL)
    assert state.status == "loading"
    assert [(e.type, e.ts) for e in state.events] == [("loading", T0)]
    assert state.last_fix is None


def test_leaving_the_yard_before_loading_is_not_a_departure() -> None:
    # A yard shunt before loading: out and back in. Then loading, then the real departure.
    fixes = ([at_dc(m) for m in range(0, 5)] + [on_road(m, 2) for m in range(5, 10)] + [at_dc(m) for m in range(10, 30)]
             + [on_road(m, m - 29) for m in range(30, 40)])
    state = derive(PLAN, [T0 + timedelta(minutes=15)], [], fixes, DWELL)
    assert state.status == "in_transit"
    assert state.at("departed") == T0 + timedelta(minutes=30)


def test_vehicle_never_seen_in_the_origin_fence() -> None:
    fixes = [on_road(m, 3 + m) for m in range(0, 20)]
    state = derive(PLAN, [T0 + timedelta(minutes=5, seconds=30)], [], fixes, DWELL)
    assert state.status == "in_transit"
    (_, departed) = state.events
    assert departed.ts == T0 + timedelta(minutes=6)  # the first fix after loading, confirmed later
    assert departed.detail == "outside geofence GF-DC1 after loading"


def test_no_origin_fence() -> None:
    plan = replace(PLAN, origin_fence=None)
    fixes = [at_dc(m) for m in range(0, 20)]
    state = derive(plan, [T0 + timedelta(minutes=5)], [], fixes, DWELL)
    assert state.status == "in_transit"
    assert state.events[1].ts == T0 + timedelta(minutes=5)
    assert state.events[1].detail == "first fix after loading (no origin geofence)"
    # Dwell still applies: one fix after loading is not enough.
    assert derive(plan, [T0 + timedelta(minutes=5)], [], fixes[:6], DWELL).status == "loading"


def test_silent_tracker_departs_and_arrives_at_its_first_fix_at_the_customer() -> None:
    fixes = [at_dc(m) for m in range(0, 10)] + [at_customer(m) for m in range(120, 130)]
    state = derive(PLAN, [T0 + timedelta(minutes=2)], [], fixes, DWELL)
    assert state.status == "arrived"
    assert state.at("departed") == state.at("arrived") == T0 + timedelta(minutes=120)


def test_delivered_without_arrival_is_recorded() -> None:
    fixes = [at_dc(m) for m in range(0, 10)] + [on_road(m, m) for m in range(10, 30)]
    deliver = T0 + timedelta(minutes=90)
    state = derive(PLAN, [T0 + timedelta(minutes=2)], [deliver], fixes, DWELL)
    assert state.status == "delivered"
    assert [e.type for e in state.events] == ["loading", "departed", "delivered"]


def test_deliver_scan_without_anything_else() -> None:
    state = derive(PLAN, [], [T0], [], DWELL)
    assert state.status == "delivered"
    assert [e.type for e in state.events] == ["delivered"]


def test_nothing_after_delivery() -> None:
    # Delivered at the gate before the truck was confirmed inside: the later entry is not an event,
    # and a ship scan after delivery does not reopen loading.
    fixes = [at_dc(m) for m in range(0, 10)] + [on_road(m, m) for m in range(10, 20)] + [
        at_customer(m) for m in range(120, 130)]
    state = derive(PLAN, [T0 + timedelta(minutes=2), T0 + timedelta(minutes=200)],
                   [T0 + timedelta(minutes=119)], fixes, DWELL)
    assert [e.type for e in state.events] == ["loading", "departed", "delivered"]
    assert state.status == "delivered"


def test_cancelled_is_terminal() -> None:
    fixes = [at_dc(m) for m in range(0, 10)] + [on_road(m, m) for m in range(10, 30)]
    plan = replace(PLAN, cancelled_at=T0 + timedelta(minutes=8))
    state = derive(plan, [T0 + timedelta(minutes=2)], [T0 + timedelta(minutes=60)], fixes, DWELL)
    assert state.status == "cancelled"
    assert [(e.type, e.ts, e.detail) for e in state.events] == [
        ("loading", T0 + timedelta(minutes=2), "first ship scan"),
        ("cancelled", T0 + timedelta(minutes=8), "cancelled by API"),
    ]
    planned_then_cancelled = derive(replace(PLAN, cancelled_at=T0), [T0 + timedelta(minutes=2)], [], fixes, DWELL)
    assert [e.type for e in planned_then_cancelled.events] == ["cancelled"]


def test_cancellation_after_delivery_is_ignored() -> None:
    plan = replace(PLAN, cancelled_at=T0 + timedelta(hours=5))
    state = derive(plan, [T0], [T0 + timedelta(hours=3)], [], DWELL)
    assert state.status == "delivered"
    assert [e.type for e in state.events] == ["loading", "delivered"]


# --- ETA and delay -------------------------------------------------------------------------------


def driving(speed_kmh: float, minutes: int, *, reported: bool = False) -> list[Fix]:
    """Fixes every minute, driving south towards nothing in particular, ending at 53.3 N 9.5 E."""
    out = []
    for i in range(minutes + 1):
        back_km = speed_kmh * (minutes - i) / 60
        out.append(Fix(T0 + timedelta(minutes=i), 53.3 + back_km / 111.195, 9.5,
                       speed_kmh if reported else None))
    return out


def test_eta_of_a_moving_vehicle() -> None:
    track = driving(80.0, 40)
    last = track[-1]
    expected_km = haversine_km(last.lat, last.lon, *centre(CUSTOMER))
    when, km = eta(last, CUSTOMER, track)
    assert km == pytest.approx(expected_km)
    assert recent_speed_kmh(last, track) == pytest.approx(80.0, rel=1e-3)
    assert (when - last.ts).total_seconds() / 3600 == pytest.approx(expected_km / 80.0, rel=1e-3)


def test_eta_prefers_reported_speed() -> None:
    track = driving(80.0, 40, reported=True)
    track[-1] = replace(track[-1], speed_kmh=50.0)
    assert recent_speed_kmh(track[-1], track) == pytest.approx((30 * 80 + 50) / 31)


def test_eta_of_a_stopped_vehicle_uses_the_planned_speed() -> None:
    rng = random.Random(2)
    stop = [Fix(T0 + timedelta(minutes=i), *jitter(rng, 53.3, 9.5, 5.0)) for i in range(30)]
    last = stop[-1]
    speed = recent_speed_kmh(last, stop)
    assert speed is not None and speed < 5.0
    when, km = eta(last, CUSTOMER, stop, planned_speed_kmh=60.0)
    assert (when - last.ts).total_seconds() / 3600 == pytest.approx(km / 60.0)
    when2, _ = eta(last, CUSTOMER, stop, planned_speed_kmh=30.0)
    assert when2 > when


def test_eta_window_ignores_old_driving() -> None:
    # Drove fast an hour ago, stopped for the last 40 min: the 30 min window sees the stop.
    old = driving(120.0, 20)
    stopped = [Fix(T0 + timedelta(minutes=20 + i), old[-1].lat, old[-1].lon) for i in range(1, 41)]
    track = old + stopped
    assert recent_speed_kmh(track[-1], track) == 0.0
    when, km = eta(track[-1], CUSTOMER, track)
    assert (when - track[-1].ts).total_seconds() / 3600 == pytest.approx(km / 60.0)


def test_eta_without_history_and_inside_the_destination() -> None:
    last = Fix(T0, 53.3, 9.5)
    when, km = eta(last, CUSTOMER, [])
    assert (when - T0).total_seconds() / 3600 == pytest.approx(km / 60.0)
    inside = Fix(T0, 53.0785, 8.7975)
    assert eta(inside, CUSTOMER, [inside]) == (T0, 0.0)
    with pytest.raises(ValueError):
        eta(last, CUSTOMER, [], planned_speed_kmh=0)


def test_delayed_and_on_time() -> None:
    promised = T0 + timedelta(hours=4)
    early, late = promised - timedelta(minutes=30), promised + timedelta(minutes=1)
    assert not is_delayed("in_transit", early, promised, now=T0)
    assert is_delayed("in_transit", late, promised, now=T0)  # the ETA is past the promise
    assert is_delayed("in_transit", early, promised, now=late)  # the clock is
    assert is_delayed("loading", None, promised, now=late)
    assert not is_delayed("loading", None, promised, now=T0)
    assert not is_delayed("in_transit", promised, promised, now=promised)  # exactly on time
    assert not is_delayed("in_transit", late, None, now=late)  # no promise, no delay
    assert not is_delayed("delivered", late, promised, now=late)
    assert not is_delayed("cancelled", late, promised, now=late)


def test_delivered_late() -> None:
    promised = T0 + timedelta(hours=4)
    assert delivered_late(promised + timedelta(seconds=1), promised)
    assert not delivered_late(promised, promised)
    assert not delivered_late(None, promised)
    assert not delivered_late(promised + timedelta(days=1), None)


def test_generated_route_eta_and_delay() -> None:
    r = generate_route(11)
    mid = [f for f in r.fixes if f.ts <= r.departed + timedelta(minutes=20)]
    when, km = eta(mid[-1], CUSTOMER, mid)
    assert 50 < km < 90
    assert when > mid[-1].ts
    assert not is_delayed("in_transit", when, PLAN.promised_at, now=mid[-1].ts)
    assert is_delayed("in_transit", when, mid[-1].ts, now=mid[-1].ts)
