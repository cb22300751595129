"""Shipments from scans and positions, cold-chain alarms and tickets, through the real pipeline."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.db import connect
from ingest.decode import Inbound
from ingest.telemetry_rules import mark_offline
from tests.integration.db_fixtures import truncate_all
from tests.integration.world import GTIN_B, PREFIX, T0, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration

DC = (52.400, 13.300)
CUSTOMER = (52.500, 13.400)  # GF-CUST: 300 m around it
RECEIVED = T0 + timedelta(days=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def add_fleet(db: psycopg.Connection, promised_minutes: float | None = None) -> None:
    db.execute("INSERT INTO geofences (code, type, lat, lon, radius_m) VALUES ('GF-DC1', 'circle', %s, %s, 500)", DC)
    db.execute("UPDATE sites SET geofence = 'GF-DC1' WHERE code = 'DC1'")
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c, delay_s, hysteresis_c) "
               "VALUES ('CHILLED', 2, 8, 300, 0.5)")
    db.execute("UPDATE shipments SET profile = 'CHILLED', promised_at = %s WHERE ref = 'SHP-1'",
               (at(promised_minutes) if promised_minutes is not None else None,))
    db.execute("INSERT INTO devices (device_id, kind, site, vehicle) VALUES "
               "('TRK-1', 'gps_tracker', 'DC1', 'TRUCK-1'), ('TS-1', 'env_sensor', 'DC1', 'TRUCK-1')")


def position(minutes: float, lat: float, lon: float, speed: float = 0.0, msg: str | None = None) -> Inbound:
    body = {"msg_id": msg or f"p{minutes:08.3f}", "ts": at(minutes).isoformat(), "lat": lat, "lon": lon,
            "speed_kmh": speed}
    return Inbound(f"{PREFIX}/dev/TRK-1/position", orjson.dumps(body), RECEIVED)


def reading(minutes: float, temp: float, device: str = "TS-1") -> Inbound:
    body = {"msg_id": f"e{minutes:08.3f}", "ts": at(minutes).isoformat(), "temp_c": temp}
    return Inbound(f"{PREFIX}/dev/{device}/env", orjson.dumps(body), RECEIVED)


def route(rng: random.Random) -> list[Inbound]:
    """Yard 0-10 min (loading at 5), drive to the customer (about 14 km at ~45 km/h), deliver."""
    msgs: list[Inbound] = [scan("SC-2", "ship-1", gs1(GTIN_B), 5, mode="ship", location="STAGE-1", qty=2,
                                ref="SHP-1")]
    for i in range(30):                                    # 20 s fixes in the yard, GPS noise ~20 m
        msgs.append(position(i / 3, DC[0] + rng.gauss(0, 0.0002), DC[1] + rng.gauss(0, 0.0003)))
    steps = 60
    for i in range(1, steps + 1):                          # 10..30 min on the road
        f = i / steps
        lat = DC[0] + (CUSTOMER[0] - DC[0]) * f + rng.gauss(0, 0.0002)
        lon = DC[1] + (CUSTOMER[1] - DC[1]) * f + rng.gauss(0, 0.0003)
        msgs.append(position(10 + i / 3, lat, lon, 45.0))
    for i in range(1, 16):                                 # parked at the customer 30..35 min
        msgs.append(position(30 + i / 3, CUSTOMER[0] + rng.gauss(0, 0.0002), CUSTOMER[1] + rng.gauss(0, 0.0002)))
    msgs.append(scan("SC-2", "deliver-1", gs1(GTIN_B), 34, mode="deliver", qty=2, ref="SHP-1"))
    return msgs


def shipment(db: psycopg.Connection) -> tuple[object, ...]:
    status = db.execute("SELECT status FROM shipments WHERE ref = 'SHP-1'").fetchone()
    events = db.execute("SELECT type, ts, detail FROM shipment_events WHERE shipment = 'SHP-1' ORDER BY ts, type"
                        ).fetchall()
    return status, events


@pytest.fixture
def fleet(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    add_fleet(db)
    return db


def test_a_route_moves_the_shipment_through_every_status(fleet: psycopg.Connection) -> None:
    msgs = route(random.Random(1))
    ship_scan, deliver_scan = msgs[0], msgs[-1]
    apply(fleet, [ship_scan])
    assert shipment(fleet)[0] == ("loading",)
    apply(fleet, msgs[1:31])                                # still in the yard
    assert shipment(fleet)[0] == ("loading",)
    apply(fleet, msgs[31:60])                               # on the road
    assert shipment(fleet)[0] == ("in_transit",)
    state = fleet.execute("SELECT eta, distance_remaining_km, last_ts FROM shipment_state").fetchone()
    assert state is not None and 3 < state[1] < 10 and state[0] > state[2]
    apply(fleet, msgs[60:-1])
    assert shipment(fleet)[0] == ("arrived",)
    apply(fleet, [deliver_scan])
    status, events = shipment(fleet)
    assert status == ("delivered",)
    types = [e[0] for e in events]
    assert types == ["loading", "departed", "arrived", "delivered"]
    departed = dict((e[0], e[1]) for e in events)["departed"]
    assert at(10) <= departed <= at(12)                     # the first fix outside the yard, not a noisy one
    assert "GF-DC1" in events[1][2] and "GF-CUST" in events[2][2]
    assert fleet.execute("SELECT distance_remaining_km FROM shipment_state").fetchone() == (0.0,)
    # A late, old position (from the yard, before departure) moves nothing back.
    apply(fleet, [position(7.5, DC[0], DC[1], msg="late-yard-fix")])
    assert shipment(fleet) == (status, events)


@pytest.fixture(scope="module")
def in_order(database_url: str) -> tuple[object, ...]:
    with connect(database_url, autocommit=True) as db:
        truncate_all(db)
        build_world(db)
        add_fleet(db)
        apply(db, route(random.Random(7)))
        return shipment(db)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6))
def test_shuffled_route_with_duplicates_gives_the_same_status_and_events(
        database_url: str, in_order: tuple[object, ...], seed: int) -> None:
    rng = random.Random(seed)
    msgs = route(random.Random(7))
    msgs += rng.sample(msgs, 10)
    rng.shuffle(msgs)
    with connect(database_url, autocommit=True) as db:
        truncate_all(db)
        build_world(db)
        add_fleet(db)
        i = 0
        while i < len(msgs):
            n = rng.randint(1, 25)
            apply(db, msgs[i:i + n])
            i += n
        assert shipment(db) == in_order


def test_impossible_jump_is_filtered_and_kept_with_its_reason(fleet: psycopg.Connection) -> None:
    apply(fleet, [position(0, *DC), position(1, 48.1, 11.5, msg="munich"), position(2, DC[0] + 0.001, DC[1])])
    rows = fleet.execute("SELECT msg_id, filter_reason FROM positions ORDER BY ts").fetchall()
    assert rows == [(f"p{0:08.3f}", None), ("munich", "impossible_jump"), (f"p{2:08.3f}", None)]


def chilled_ride(db: psycopg.Connection) -> None:
    apply(db, [scan("SC-2", "ship-1", gs1(GTIN_B), 0, mode="ship", location="STAGE-1", qty=1, ref="SHP-1")])


def alarms(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT type, state, started_at, cleared_at, peak_value, shipment FROM alarms "
                      "WHERE type LIKE 'temperature%%' ORDER BY started_at").fetchall()


def test_excursion_alarm_needs_delay_clears_with_hysteresis_and_opens_one_ticket(fleet: psycopg.Connection) -> None:
    chilled_ride(fleet)
    temps = [5.0] * 10 + [8.0] * 5 + [8.6, 9.4, 9.9, 9.1, 8.7, 8.3, 7.8, 7.2, 6.0] + [5.0] * 5
    apply(fleet, [reading(m, t) for m, t in enumerate(temps)])
    found = alarms(fleet)
    assert len(found) == 1  # exactly 8.0 is in range; 8.3 and 7.8 are back in range but not by 0.5
    type_, state, started, cleared, peak, ship = found[0]
    assert (type_, state, started, cleared, peak, ship) == ("temperature_high", "cleared", at(15), at(22), 9.9,
                                                            "SHP-1")
    tickets = fleet.execute("SELECT type, cause, shipment FROM tickets").fetchall()
    assert tickets == [("logistics_exception", "temperature_excursion", "SHP-1")]
    # A second excursion on the same shipment is a second alarm, still one ticket.
    apply(fleet, [reading(40 + m, 12.0) for m in range(8)] + [reading(48, 5.0)])
    assert len(alarms(fleet)) == 2
    assert fleet.execute("SELECT count(*) FROM tickets").fetchone() == (1,)


def test_a_short_spike_raises_nothing_and_a_flapping_signal_one_alarm(fleet: psycopg.Connection) -> None:
    chilled_ride(fleet)
    spike = [5.0, 5.0, 11.0, 5.0, 5.0]                      # one minute above: below delay_s
    apply(fleet, [reading(m, t) for m, t in enumerate(spike)])
    assert alarms(fleet) == []
    # Over the limit long enough to trigger, then flapping around 8 °C but never back below
    # 8 - 0.5 (the hysteresis), then really back in range.
    flapping = [9.0] * 6 + [7.8, 8.4, 7.9, 8.3, 7.6, 8.6, 7.7, 8.2] * 3 + [6.0, 5.5]
    apply(fleet, [reading(10 + m, t) for m, t in enumerate(flapping)])
    found = alarms(fleet)
    assert len(found) == 1                                  # one alarm, not one per crossing
    type_, state, started, cleared, peak, _ = found[0]
    assert (type_, state, started, peak) == ("temperature_high", "cleared", at(10), 9.0)
    assert cleared == at(10 + len(flapping) - 2)            # only the reading at 6.0 clears it


def test_late_readings_inside_an_evaluated_window_give_the_same_alarms(fleet: psycopg.Connection,
                                                                      database_url: str) -> None:
    chilled_ride(fleet)
    temps = [5.0] * 5 + [9.0] * 8 + [5.0] * 4 + [1.0] * 7 + [5.0] * 3
    msgs = [reading(m, t) for m, t in enumerate(temps)]
    apply(fleet, msgs)
    ordered = alarms(fleet)
    assert [a[0] for a in ordered] == ["temperature_high", "temperature_low"]
    for seed in (1, 2):
        truncate_all(fleet)
        build_world(fleet)
        add_fleet(fleet)
        chilled_ride(fleet)
        shuffled = list(msgs)
        random.Random(seed).shuffle(shuffled)
        for i in range(0, len(shuffled), 4):
            apply(fleet, shuffled[i:i + 4])
        assert alarms(fleet) == ordered


def test_late_delivery_marks_delay_and_opens_a_ticket_once(db: psycopg.Connection) -> None:
    build_world(db)
    add_fleet(db, promised_minutes=20)
    msgs = route(random.Random(3))
    apply(db, msgs[:-1])
    delayed = db.execute("SELECT type, state FROM alarms WHERE type = 'shipment_delayed'").fetchall()
    assert delayed == [("shipment_delayed", "active")]
    assert db.execute("SELECT delayed FROM shipment_state").fetchone() == (True,)
    apply(db, [msgs[-1]])
    apply(db, [scan("SC-2", "deliver-2", gs1(GTIN_B), 35, mode="deliver", qty=1, ref="SHP-1")])
    assert db.execute("SELECT cause FROM tickets").fetchall() == [("late_delivery",)]
    types = [r[0] for r in db.execute("SELECT type FROM shipment_events ORDER BY ts, type")]
    assert "delivered_late" in types
    # The delay is dated in event time (when the ETA or the promise passed), before the delivery.
    assert types.index("delayed") < types.index("delivered")


def test_on_time_delivery_is_not_delayed(db: psycopg.Connection) -> None:
    build_world(db)
    add_fleet(db, promised_minutes=120)
    apply(db, route(random.Random(4)))
    assert db.execute("SELECT count(*) FROM alarms WHERE type = 'shipment_delayed'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM tickets").fetchone() == (0,)


def test_battery_low_with_hysteresis_and_offline_devices(fleet: psycopg.Connection) -> None:
    levels = [40, 30, 21, 19.5, 20.5, 19, 22, 26, 27]
    apply(fleet, [Inbound(f"{PREFIX}/dev/TS-1/status", orjson.dumps(
        {"msg_id": f"h{i}", "ts": at(i * 60).isoformat(), "battery_pct": v}), RECEIVED) for i, v in enumerate(levels)])
    rows = fleet.execute("SELECT state, started_at, cleared_at, peak_value FROM alarms WHERE type = 'battery_low'"
                         ).fetchall()
    assert rows == [("cleared", at(3 * 60), at(7 * 60), 19.0)]
    # Heartbeats came every 60 minutes of device time: that is its expected interval.
    expected = fleet.execute("SELECT expected_interval_s FROM device_state WHERE device_id = 'TS-1'").fetchone()
    assert expected is not None and 3000 < expected[0] <= 3600
    fleet.execute("UPDATE device_state SET last_seen = now() - interval '2 hours' WHERE device_id = 'TS-1'")
    assert mark_offline(fleet, 600, 5.0) == 0    # 2 h of silence is not 5 x 60 min
    fleet.execute("UPDATE device_state SET last_seen = now() - interval '6 hours' WHERE device_id = 'TS-1'")
    assert mark_offline(fleet, 600, 5.0) == 1
    assert mark_offline(fleet, 600, 5.0) == 0  # one active alarm per device
    apply(fleet, [reading(500, 5.0)])     # it speaks again
    assert fleet.execute("SELECT state FROM alarms WHERE type = 'device_offline'").fetchone() == ("cleared",)
