"""Regressions of issue 9 (telemetry side): each failed on the code before the rules engine.

Two run as an outside client would (real broker, real worker, one MQTT message per reading);
the others drive the real pipeline batch by batch to control which messages share a batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from core.coldchain import Profile
from core.telemetry_rules import DeviceRow, EnvRow, PositionRow, TelemetryHistory, derive_telemetry
from ingest.decode import Inbound
from runtime.settings import Settings
from tests.integration.stack_helpers import count, device, provision, running_worker, stack_settings, wait_until
from tests.integration.world import GTIN_B, PREFIX, T0, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration

RECEIVED = T0 + timedelta(days=20)
SEEDS = [1, 2]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def env(device_id: str, minutes: float, temp: float, rh: float | None = None, probe: str | None = None) -> Inbound:
    body: dict[str, object] = {"msg_id": f"e{minutes:09.3f}{probe or ''}", "ts": at(minutes).isoformat(),
                               "temp_c": temp}
    if rh is not None:
        body["rh_pct"] = rh
    if probe is not None:
        body["probe"] = probe
    return Inbound(f"{PREFIX}/dev/{device_id}/env", orjson.dumps(body), RECEIVED)


def env_alarms(db: psycopg.Connection, device_id: str) -> list[tuple[object, ...]]:
    return db.execute("SELECT type, subject, started_at, cleared_at, shipment FROM alarms WHERE device_id = %s "
                      "AND type <> 'device_offline' ORDER BY started_at, type", (device_id,)).fetchall()


# --- outside clients over MQTT -------------------------------------------------------------------


@pytest.fixture
def cold_room(broker_settings: Settings, database_url: str, db: psycopg.Connection) -> tuple[Settings, str, object]:
    settings = stack_settings(broker_settings, database_url)
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c, delay_s, hysteresis_c) "
               "VALUES ('COLD-ROOM', 2, 8, 300, 0.5)")
    creds = provision(settings, db)
    db.execute("UPDATE devices SET profile = 'COLD-ROOM' WHERE device_id = %s", (creds.device_id,))
    return settings, creds.device_id, creds


def test_overheat_then_freeze_keeps_the_overheat_alarm_over_mqtt(cold_room: tuple[Settings, str, object],
                                                                 db: psycopg.Connection) -> None:
    settings, device_id, creds = cold_room
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    temps = [9.0] * 7 + [1.0] * 30
    with running_worker(settings), device(creds, settings) as d:  # type: ignore[arg-type]
        for i, temp in enumerate(temps):
            # One message a minute in the field: each is stored before the next is sent.
            d.publish("env", {"msg_id": f"m{i}", "ts": (start + timedelta(minutes=i)).isoformat(), "temp_c": temp})
            wait_until(lambda n=i + 1: count(db, "SELECT count(*) FROM env_readings WHERE device_id = %s",
                                             device_id) == n, timeout=60, what=f"reading {i} stored")
    got = [(t, s, c) for t, _, s, c, _ in env_alarms(db, device_id)]
    assert got == [("temperature_high", start, start + timedelta(minutes=7)),
                   ("temperature_low", start + timedelta(minutes=7), None)]


def test_a_probe_out_of_range_alarms_even_when_another_is_fine_over_mqtt(
        cold_room: tuple[Settings, str, object], db: psycopg.Connection) -> None:
    settings, device_id, creds = cold_room
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    with running_worker(settings), device(creds, settings) as d:  # type: ignore[arg-type]
        for i in range(30):
            ts = (start + timedelta(minutes=i)).isoformat()
            d.publish("env", {"msg_id": f"a{i}", "ts": ts, "temp_c": 5.0, "probe": "A"})
            d.publish("env", {"msg_id": f"b{i}", "ts": ts, "temp_c": 9.5, "probe": "B"})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE device_id = %s", device_id) == 60,
                   timeout=90, what="every reading stored")
    assert [(t, s, st) for t, s, st, _, _ in env_alarms(db, device_id)] == [
        ("temperature_high", f"{device_id}/B", start)]


# --- the pipeline, batch by batch ----------------------------------------------------------------


@pytest.fixture
def truck(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c, rh_max_pct, delay_s, hysteresis_c) VALUES "
               "('CHILLED', 2, 8, 70, 300, 0.5), ('FROZEN', -40, -18, NULL, 300, 0.5), "
               "('DRY', 10, 25, NULL, 300, 0.5)")
    db.execute("INSERT INTO devices (device_id, kind, site, vehicle) VALUES ('TS-1', 'env_sensor', 'DC1', 'TRUCK-1'),"
               " ('TRK-1', 'gps_tracker', 'DC1', 'TRUCK-1')")
    return db


def test_a_cleared_alarm_of_another_type_is_not_rederived_from_a_truncated_window(truck: psycopg.Connection) -> None:
    # Humid from 0 to 24 (humidity_high 0..25); cold from 20 on (temperature_low active from 20).
    # A reading at 50 used to widen the window to the active alarm's start (20) only, and the
    # humidity episode re-derived from the truncated readings (20..24) was rewritten to start at 20.
    truck.execute("UPDATE devices SET profile = 'CHILLED' WHERE device_id = 'TS-1'")
    apply(truck, [env("TS-1", m, 5.0 if m < 20 else 1.0, 80.0 if m < 25 else 50.0) for m in range(50)])
    before = env_alarms(truck, "TS-1")
    assert [(t, s, c) for t, _, s, c, _ in before] == [("humidity_high", at(0), at(25)),
                                                        ("temperature_low", at(20), None)]
    apply(truck, [env("TS-1", 50, 1.0, 50.0)])
    assert env_alarms(truck, "TS-1") == before


def test_battery_low_for_twelve_days_keeps_one_alarm_id(truck: psycopg.Connection) -> None:
    ids = set()
    for h in range(0, 12 * 24, 6):
        apply(truck, [Inbound(f"{PREFIX}/dev/TRK-1/status", orjson.dumps(
            {"msg_id": f"h{h}", "ts": (T0 + timedelta(hours=h)).isoformat(), "battery_pct": 15.0}), RECEIVED)])
        ids |= {r[0] for r in truck.execute("SELECT id FROM alarms WHERE type = 'battery_low'")}
    rows = truck.execute("SELECT state, started_at FROM alarms WHERE type = 'battery_low'").fetchall()
    assert rows == [("active", T0)]
    assert len(ids) == 1


def ship(minutes: float) -> Inbound:
    return scan("SC-2", "ship-1", gs1(GTIN_B), minutes, mode="ship", location="STAGE-1", qty=1, ref="SHP-1")


def deliver(minutes: float) -> Inbound:
    return scan("SC-2", "deliver-1", gs1(GTIN_B), minutes, mode="deliver", qty=1, ref="SHP-1")


def test_readings_before_a_late_ship_scan_are_rejudged_when_it_arrives(truck: psycopg.Connection) -> None:
    # The sensor sits in the freezer (its own FROZEN profile: -20 °C is fine), is loaded on a
    # chilled shipment at minute 30 and keeps reading -20: too cold for that shipment from then.
    truck.execute("UPDATE devices SET profile = 'FROZEN' WHERE device_id = 'TS-1'")
    truck.execute("UPDATE shipments SET profile = 'CHILLED' WHERE ref = 'SHP-1'")
    apply(truck, [env("TS-1", m, -20.0) for m in range(60)])
    assert env_alarms(truck, "TS-1") == []
    apply(truck, [ship(30)])  # the scanner was offline: its ship scan arrives after the readings
    assert [(t, s, sh) for t, _, s, _, sh in env_alarms(truck, "TS-1")] == [("temperature_low", at(30), "SHP-1")]
    assert truck.execute("SELECT cause FROM tickets").fetchall() == [("temperature_excursion",)]


def test_a_late_ship_scan_splits_an_open_alarm_at_the_loading(truck: psycopg.Connection) -> None:
    # Too warm all along; the ship scan at 30 arrives late. The sensor's own alarm ends at the
    # loading (same id: it is the same episode, shorter) and the shipment gets its own from 30.
    truck.execute("UPDATE devices SET profile = 'CHILLED' WHERE device_id = 'TS-1'")
    truck.execute("UPDATE shipments SET profile = 'CHILLED' WHERE ref = 'SHP-1'")
    apply(truck, [env("TS-1", m, 9.5) for m in range(60)])
    first = truck.execute("SELECT id FROM alarms WHERE device_id = 'TS-1'").fetchall()
    apply(truck, [ship(30)])
    rows = truck.execute("SELECT id, state, started_at, cleared_at, shipment FROM alarms WHERE device_id = 'TS-1' "
                         "ORDER BY started_at").fetchall()
    assert [r[1:] for r in rows] == [("cleared", at(0), at(30), None), ("active", at(30), None, "SHP-1")]
    assert [(rows[0][0],)] == first


def test_readings_buffered_across_a_delivery_are_judged_in_their_own_context(truck: psycopg.Connection) -> None:
    # A chilled ride from 0 to delivery at 30; the sensor (no profile of its own) was offline and
    # delivers the whole ride in one batch after the delivery: its newest reading is after the
    # delivery, yet the ride's readings are judged with the shipment's profile.
    truck.execute("UPDATE shipments SET profile = 'CHILLED' WHERE ref = 'SHP-1'")
    apply(truck, [ship(0)])
    apply(truck, [deliver(30)])
    apply(truck, [env("TS-1", m, 9.5) for m in range(60)])
    assert [(t, s, c, sh) for t, _, s, c, sh in env_alarms(truck, "TS-1")] == [
        ("temperature_high", at(0), at(30), "SHP-1")]


def test_alarms_use_the_profile_of_the_first_line_with_one(truck: psycopg.Connection) -> None:
    # No profile on the shipment: its first line's item (DRY, 10-25 °C) decides, as it does for
    # the temperature summary; the second line's item is chilled. 15 °C is fine when dry.
    truck.execute("INSERT INTO items (sku, name, gtin, profile) VALUES ('SKU-Z', 'Chilled', '09506000134376', "
                  "'CHILLED'), ('SKU-Y', 'Dry', '09506000134369', 'DRY')")
    truck.execute("""UPDATE shipments SET lines = '[{"sku": "SKU-Y", "qty": 1}, {"sku": "SKU-Z", "qty": 1}]'""")
    apply(truck, [ship(0)])
    apply(truck, [env("TS-1", m, 15.0) for m in range(30)])
    assert env_alarms(truck, "TS-1") == []
    apply(truck, [env("TS-1", 30 + m, 5.0) for m in range(10)])  # too cold for dry goods
    assert [(t, s) for t, _, s, _, _ in env_alarms(truck, "TS-1")] == [("temperature_low", at(30))]


def position(minutes: float, lat: float, lon: float, msg: str | None = None) -> Inbound:
    body = {"msg_id": msg or f"p{minutes:08.3f}", "ts": at(minutes).isoformat(), "lat": lat, "lon": lon}
    return Inbound(f"{PREFIX}/dev/TRK-1/position", orjson.dumps(body), RECEIVED)


def test_one_wild_first_fix_does_not_reject_the_good_track(truck: psycopg.Connection) -> None:
    apply(truck, [position(0, 52.85, 13.3, msg="wild")])  # 50 km north of the truck
    for start in range(1, 121, 20):
        apply(truck, [position(m, 52.40 + m * 1e-5, 13.3) for m in range(start, start + 20)])
    rejected = truck.execute("SELECT msg_id FROM positions WHERE filter_reason IS NOT NULL").fetchall()
    assert rejected == [("wild",)]


def test_the_sql_silence_limit_is_the_core_offline_rule(db: psycopg.Connection) -> None:
    # The API reads "online" through the SQL function; the offline sweep through core.devices.
    from core.devices import silence_limit_s

    cases = [(None, 5.0, 600.0), (3600.0, 5.0, 600.0), (5.0, 5.0, 600.0), (30.0, 3.0, 10.0), (None, 5.0, 10.0)]
    for expected, multiple, fallback in cases:
        row = db.execute("SELECT device_silence_limit_s(%s, %s, %s)", (expected, multiple, fallback)).fetchone()
        assert row is not None and row[0] == silence_limit_s(expected, multiple, fallback)


# --- differential: the windowed ingest equals the core derivation of the whole history -----------


def _batches(rng: random.Random, messages: list[Inbound]) -> list[list[Inbound]]:
    shuffled = messages + rng.sample(messages, len(messages) // 10)  # redeliveries
    rng.shuffle(shuffled)
    out, i = [], 0
    while i < len(shuffled):
        n = rng.choice([1, 1, 2, 5, 20])
        out.append(shuffled[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_env_alarms_in_any_order_equal_the_whole_history_derivation(truck: psycopg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    truck.execute("UPDATE devices SET profile = 'CHILLED' WHERE device_id = 'TS-1'")
    rows: list[EnvRow] = []
    for probe in ("A", "B"):
        temp, rh = 5.0, 60.0
        for m in range(0, 240, 2):
            temp = min(12.0, max(-2.0, temp + rng.choice([-1.5, -0.75, 0.0, 0.75, 1.5])))
            rh = min(90.0, max(40.0, rh + rng.choice([-5.0, 0.0, 5.0])))
            rows.append(EnvRow("TS-1", at(m), temp, rh if rng.random() < 0.7 else None, probe))
    for batch in _batches(rng, [env("TS-1", r.ts.timestamp() / 60 - T0.timestamp() / 60, r.temp_c or 0.0, r.rh_pct,
                                    r.probe) for r in rows]):
        apply(truck, batch)
    profile = Profile(2, 8, rh_max_pct=70, delay_s=300, hysteresis_c=0.5)
    derived = derive_telemetry(TelemetryHistory(now=at(10_000), devices=(DeviceRow("TS-1", "env_sensor", "TRUCK-1",
                                                                                    "CHILLED"),),
                                                env=tuple(rows), profiles={"CHILLED": profile})).env_alarms
    stored = truck.execute("SELECT type, subject, started_at, cleared_at, peak_value FROM alarms "
                           "WHERE device_id = 'TS-1' ORDER BY started_at, subject, type").fetchall()
    assert derived, "the random walk must leave the range"
    assert stored == sorted([(a.type, f"TS-1/{a.probe}", a.started_at, a.cleared_at, a.peak_value) for a in derived],
                            key=lambda x: (x[2], x[1], x[0]))


@pytest.mark.parametrize("seed", SEEDS)
def test_position_reasons_in_any_order_equal_the_whole_history_derivation(truck: psycopg.Connection,
                                                                          seed: int) -> None:
    rng = random.Random(seed)
    rows: list[PositionRow] = []
    for m in range(180):
        lat, lon = 52.40 + m * 2e-4, 13.3
        if rng.random() < 0.05:
            lat += rng.choice([-1, 1]) * 0.5  # a wild fix, 55 km off
        if rng.random() < 0.05:
            lat, lon = 0.0, 0.0  # "no fix yet"
        rows.append(PositionRow("TRK-1", at(m), f"p{m:08.3f}", lat, lon, True, None, RECEIVED))
    messages = [Inbound(f"{PREFIX}/dev/TRK-1/position", orjson.dumps(
        {"msg_id": r.msg_id, "ts": r.ts.isoformat(), "lat": r.lat, "lon": r.lon}), RECEIVED) for r in rows]
    for batch in _batches(rng, messages):
        apply(truck, batch)
    derived = derive_telemetry(TelemetryHistory(now=RECEIVED, positions=tuple(rows))).position_reasons
    stored = {("TRK-1", ts, msg): reason for ts, msg, reason in truck.execute(
        "SELECT ts, msg_id, filter_reason FROM positions WHERE device_id = 'TRK-1'")}
    assert stored == dict(derived)
