"""The ingest path end to end: real devices' credentials, the project's Mosquitto, real TimescaleDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from devices.broker_accounts import BrokerAccounts
from ingest.worker import IngestWorker
from runtime.settings import Settings
from tests.integration.stack_helpers import (
    count,
    device,
    provision,
    running_worker,
    stack_settings,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


@pytest.fixture
def settings(broker_settings: Settings, database_url: str, db: psycopg.Connection) -> Settings:
    return stack_settings(broker_settings, database_url)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def test_every_kind_is_stored_with_device_and_receive_time(settings: Settings, db: psycopg.Connection) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    creds = provision(settings, db, kind="scanner")
    # A scan is stored once it can be stock: the scanner's dock, its site's supplier, the item.
    db.execute("INSERT INTO sites (code, name) VALUES ('S1', 'Site')")
    db.execute("INSERT INTO locations (code, site, type) VALUES ('DOCK-T', 'S1', 'dock'), ('SUP-T', 'S1', 'supplier')")
    db.execute("INSERT INTO items (sku, name, gtin) VALUES ('SKU-T', 'Test item', '09506000134352')")
    db.execute("UPDATE devices SET location = 'DOCK-T' WHERE device_id = %s", (creds.device_id,))
    with running_worker(settings), device(creds, settings) as d:
        d.publish("env", {"msg_id": "e1", "ts": iso(now - timedelta(minutes=3)), "temp_c": 4.25, "rh_pct": 61})
        d.publish("position", {"msg_id": "p1", "ts": iso(now), "lat": 52.52, "lon": 13.405, "speed_kmh": 63})
        d.publish("position", {"msg_id": "p2", "ts": iso(now), "nmea": RMC})
        d.publish("scan", {"msg_id": "s1", "code": "]C10109506000134352" "10ABC123\x1d17261231", "mode": "receive"})
        d.publish("rfid", {"msg_id": "r1", "ts": iso(now), "reads": [
            {"epc": "3074257BF7194E4000001A85", "antenna": 1, "rssi": -52.5},
            {"epc": "3074257BF7194E4000001A85", "antenna": 2, "rssi": -48, "ts": iso(now + timedelta(seconds=1))}]})
        d.publish("status", {"msg_id": "h1", "battery_pct": 87, "fw": "1.4.2", "uptime_s": 3600})
        wait_until(lambda: count(db, "SELECT count(*) FROM message_ids") == 6, what="six messages")
    dev = creds.device_id
    ts, received, temp = db.execute("SELECT ts, received_at, temp_c FROM env_readings WHERE device_id = %s",
                                    (dev,)).fetchone()  # type: ignore[misc]
    assert ts == now - timedelta(minutes=3) and received > ts and temp == 4.25
    rows = db.execute("SELECT msg_id, source, lat, lon, fix_valid FROM positions ORDER BY msg_id").fetchall()
    assert [(r[0], r[1], round(r[2], 4), round(r[3], 4), r[4]) for r in rows] == [
        ("p1", "json", 52.52, 13.405, True), ("p2", "nmea", 48.1173, 11.5167, True)]
    scan = db.execute("SELECT code, mode, ts_source, ts = received_at FROM scans").fetchone()
    assert scan == ("]C10109506000134352" "10ABC123\x1d17261231", "receive", "server", True)
    reads = db.execute("SELECT read_no, epc, antenna, rssi, ts FROM rfid_reads ORDER BY read_no").fetchall()
    assert [(r[0], r[2], r[3]) for r in reads] == [(0, 1, -52.5), (1, 2, -48.0)]
    assert reads[1][4] == now + timedelta(seconds=1)
    status = db.execute("SELECT battery_pct, fw, uptime_s, ts_source FROM device_status").fetchone()
    assert status == (87.0, "1.4.2", 3600, "server")
    assert count(db, "SELECT messages FROM device_state WHERE device_id = %s", dev) == 6
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    assert db.execute("SELECT sku, qty, from_location, to_location, lot FROM movements").fetchall() == [
        ("SKU-T", 1, "SUP-T", "DOCK-T", "ABC123")]


def test_bad_input_is_dead_lettered_and_nothing_else_is_lost(settings: Settings, db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    creds = provision(settings, db)
    # A device the broker knows but the registry does not (e.g. removed from the registry only).
    ghost = unique("ghost")
    with BrokerAccounts(settings) as accounts:
        ghost_password = accounts.add_device(ghost)
    with running_worker(settings), device(creds, settings) as d:
        d.publish("env", b"{not json")
        d.publish("env", b"\xff\xfe binary")
        d.publish("env", {"msg_id": "w1", "ts": iso(now), "temp_c": "warm"})
        d.publish("env", {"msg_id": "f1", "ts": iso(now + timedelta(minutes=10)), "temp_c": 3})
        d.publish("position", {"msg_id": "m1", "ts": iso(now), "lon": 3})
        d.publish("env", b'{"msg_id": "big", "ts": 1, "pad": "' + b"x" * (300 * 1024) + b'"}')
        d.publish("env", [{"msg_id": "ok1", "ts": iso(now), "temp_c": 1}, {"msg_id": "bad", "ts": iso(now)},
                          {"msg_id": "ok2", "ts": iso(now), "temp_c": 2}])
        from devices.provisioning import Credentials
        ghost_creds = Credentials(ghost, ghost, ghost_password, settings.mqtt_host, settings.mqtt_port,
                                  settings.topic_prefix)
        with device(ghost_creds, settings) as g:
            g.publish("env", {"msg_id": "g1", "ts": iso(now), "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM dead_letters") == 8, what="eight dead letters")
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 2, what="the two valid readings")
    letters = db.execute("SELECT reason, device_id, element_index, payload_size, length(payload), topic "
                         "FROM dead_letters ORDER BY id").fetchall()
    reasons = sorted(r[0] for r in letters)
    assert reasons == sorted(["invalid_json", "invalid_json", "invalid_field", "ts_in_future", "missing_field",
                              "payload_too_large", "missing_field", "unknown_device"])
    big = next(r for r in letters if r[0] == "payload_too_large")
    assert big[3] > 300 * 1024 and big[4] == 64 * 1024  # size recorded, a bounded prefix kept
    element = next(r for r in letters if r[2] is not None)
    assert element[2] == 1
    stored = db.execute("SELECT payload FROM dead_letters WHERE element_index = 1").fetchone()
    assert stored is not None and orjson.loads(bytes(stored[0])) == {"msg_id": "bad", "ts": iso(now)}
    ghost_row = next(r for r in letters if r[0] == "unknown_device")
    assert ghost_row[1] == ghost and ghost_row[5].endswith(f"/{ghost}/env")
    assert sorted(r[0] for r in db.execute("SELECT msg_id FROM env_readings")) == ["ok1", "ok2"]


def test_duplicates_and_redelivered_bad_payloads_are_applied_once(settings: Settings,
                                                                  db: psycopg.Connection) -> None:
    now = iso(datetime.now(UTC))
    creds = provision(settings, db)
    with running_worker(settings), device(creds, settings) as d:
        for _ in range(3):
            d.publish("env", {"msg_id": "same", "ts": now, "temp_c": 5})
        # An offline buffer flush that repeats an already delivered message.
        d.publish("env", [{"msg_id": "same", "ts": now, "temp_c": 5}, {"msg_id": "new", "ts": now, "temp_c": 6}])
        d.publish("env", b"garbage")
        d.publish("env", b"garbage")
        wait_until(lambda: count(db, "SELECT sum(occurrences) FROM dead_letters") == 2, what="both garbage copies")
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 2, what="two readings")
    assert sorted(r[0] for r in db.execute("SELECT msg_id FROM env_readings")) == ["new", "same"]
    assert count(db, "SELECT count(*) FROM dead_letters") == 1
    assert count(db, "SELECT messages FROM device_state") == 2


def test_messages_not_acked_before_a_crash_are_redelivered_and_applied_once(
        settings: Settings, db: psycopg.Connection) -> None:
    """Crash after commit but before the PUBACKs: the broker redelivers, identity de-duplicates.
    Crash before commit: the broker redelivers, and the messages are stored then."""
    creds = provision(settings, db)
    now = datetime.now(UTC)
    first = IngestWorker(settings, 0)
    first.connect()
    with device(creds, settings) as d:
        for i in range(50):
            d.publish("env", {"msg_id": f"a{i}", "ts": iso(now), "temp_c": i})
    batch: list = []
    wait_until(lambda: bool(batch.extend(first._take()[0]) or len(batch) >= 50), what="50 messages taken")
    committed = first.apply(batch[:30])  # committed, never acked; the other 20 not even committed
    assert len(committed.applied) == 30
    first._client.disconnect()  # the "crash": the session keeps all 50 un-acked in flight
    first._client.loop_stop()
    assert count(db, "SELECT count(*) FROM env_readings") == 30

    with running_worker(settings, 0) as second:
        wait_until(lambda: second.counters.applied + second.counters.duplicates >= 50, what="redelivery")
    assert second.counters.duplicates == 30 and second.counters.applied == 20
    assert count(db, "SELECT count(*) FROM env_readings") == 50
    assert count(db, "SELECT count(DISTINCT msg_id) FROM env_readings") == 50


def test_backlog_queued_while_workers_are_down_is_drained_by_both(settings: Settings,
                                                                  db: psycopg.Connection) -> None:
    creds = [provision(settings, db) for _ in range(4)]
    # Create the persistent sessions, then stop the workers.
    for i in range(2):
        with running_worker(settings, i):
            pass
    now = iso(datetime.now(UTC))
    for c in creds:
        with device(c, settings) as d:
            for i in range(300):
                d.publish("env", {"msg_id": f"m{i}", "ts": now, "temp_c": i % 30})
    assert count(db, "SELECT count(*) FROM env_readings") == 0
    with running_worker(settings, 0) as w0, running_worker(settings, 1) as w1:
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 1200, timeout=30, what="backlog")
    assert w0.counters.applied > 0 and w1.counters.applied > 0  # the shared subscription split it
    assert w0.counters.applied + w1.counters.applied == 1200


def test_database_connection_loss_delays_but_loses_nothing(settings: Settings, db: psycopg.Connection) -> None:
    creds = provision(settings, db)
    now = iso(datetime.now(UTC))
    with running_worker(settings) as worker, device(creds, settings) as d:
        for i in range(100):
            d.publish("env", {"msg_id": f"x{i}", "ts": now, "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 100, what="first hundred")
        killed = count(db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = %s", worker.client_id)
        assert killed == 1
        for i in range(100, 200):
            d.publish("env", {"msg_id": f"x{i}", "ts": now, "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 200, what="all after reconnect")
    assert count(db, "SELECT count(DISTINCT msg_id) FROM env_readings") == 200


def test_device_state_keeps_newest_device_time_not_last_received(settings: Settings,
                                                                 db: psycopg.Connection) -> None:
    creds = provision(settings, db)
    newest = datetime.now(UTC).replace(microsecond=0)
    with running_worker(settings), device(creds, settings) as d:
        d.publish("env", {"msg_id": "new", "ts": iso(newest), "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 1, what="first")
        d.publish("env", {"msg_id": "old", "ts": iso(newest - timedelta(hours=2)), "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 2, what="late reading")
    row = db.execute("SELECT last_ts, messages FROM device_state").fetchone()
    assert row == (newest, 2)



def test_retained_downlink_configs_are_not_taken_for_device_data(settings: Settings,
                                                                  db: psycopg.Connection) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    creds = provision(settings, db)
    service = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("svc"), protocol=mqtt.MQTTv5)
    service.username_pw_set(settings.mqtt_service_user, settings.mqtt_service_password)
    service.connect(settings.mqtt_host, settings.mqtt_port)
    service.loop_start()
    info = service.publish(f"{settings.topic_prefix}/dev/{creds.device_id}/config", b'{"mode":"pick"}', qos=1,
                           retain=True)
    info.wait_for_publish(10)
    with running_worker(settings) as worker, device(creds, settings) as d:
        service.publish(f"{settings.topic_prefix}/dev/{creds.device_id}/config", b'{"mode":"ship"}', qos=1,
                        retain=True).wait_for_publish(10)
        d.publish("env", {"msg_id": "after", "ts": iso(datetime.now(UTC)), "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 1, what="the reading")
    service.disconnect()
    service.loop_stop()
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    assert worker.counters.dead_letters == 0


def test_a_worker_keeps_committing_across_rfid_sweeps_and_closes_passages(
        settings: Settings, db: psycopg.Connection) -> None:
    """Regression: the periodic sweep once left a transaction open on the worker's connection, so
    nothing after the first sweep was committed and the gate lock was held for ever."""
    from tests.integration.stack_helpers import wait_until
    from tests.integration.world import build_world

    build_world(db)
    gate_creds = BrokerAccounts(settings)
    with gate_creds as accounts:
        password = accounts.add_device("GATE-1")
    from devices.provisioning import Credentials
    gate = Credentials("GATE-1", "GATE-1", password, settings.mqtt_host, settings.mqtt_port, settings.topic_prefix)
    sensor = provision(settings, db)
    fast = settings.model_copy(update={"rfid_sweep_interval_s": 0.2})
    now = datetime.now(UTC)
    reads = [{"epc": "3074257BF7194E4000001A85", "antenna": a, "rssi": r,
              "ts": iso(now + timedelta(milliseconds=ms))}
             for a, r, ms in [(1, -60, 0), (1, -48, 300), (2, -55, 600), (3, -58, 900), (3, -46, 1200), (4, -57, 1500)]]
    with running_worker(fast), device(sensor, settings) as s, device(gate, settings) as g:
        s.publish("env", {"msg_id": "before", "ts": iso(now), "temp_c": 1})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 1, what="first reading")
        g.publish("rfid", {"msg_id": "pass-1", "ts": iso(now), "reads": reads})
        import time
        time.sleep(1.0)  # several sweeps run meanwhile
        s.publish("env", {"msg_id": "after", "ts": iso(now), "temp_c": 2})
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 2, what="a reading after sweeps")
        wait_until(lambda: count(db, "SELECT count(*) FROM movements WHERE device_id = 'GATE-1'") == 1,
                   timeout=20, what="the passage's movement")
    assert db.execute("SELECT from_location, to_location, serial FROM movements").fetchone() == (
        "DOOR-OUT", "DOOR-IN", "6789")
