"""Live shipment fields, the vehicle's track and cancellation through the HTTP API.

The rows ingest would leave (shipment events and state, positions, env readings) are inserted with
SQL into the real test database; the API must read, combine and shape them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.schemas.common import rfc3339
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import build_world

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
Json = dict[str, Any]


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rfc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    """build_world plus a chilled profile, a second truck, and devices riding the trucks."""
    build_world(db)
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c) VALUES ('CHILLED', 2, 8), ('AMBIENT', 0, 30)")
    db.execute("INSERT INTO locations (code, site, type) VALUES ('TRUCK-2', 'DC1', 'vehicle')")
    db.execute("INSERT INTO devices (device_id, kind, site, vehicle) VALUES "
               "('TRK-1', 'gps_tracker', 'DC1', 'TRUCK-1'), ('TRK-1B', 'gps_tracker', 'DC1', 'TRUCK-1'), "
               "('TRK-2', 'gps_tracker', 'DC1', 'TRUCK-2'), ('ENV-T1', 'env_sensor', 'DC1', 'TRUCK-1'), "
               "('ENV-T2', 'env_sensor', 'DC1', 'TRUCK-2')")
    return db


def event(db: psycopg.Connection, ref: str, type_: str, ts: datetime, detail: str = "") -> None:
    db.execute("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES (%s, %s, %s, %s)",
               (ref, ts, type_, detail or f"{type_} detail"))


def status(db: psycopg.Connection, ref: str, value: str) -> None:
    db.execute("UPDATE shipments SET status = %s WHERE ref = %s", (value, ref))


def position(db: psycopg.Connection, device: str, msg: str, ts: datetime, lat: float | None = 52.0,
             lon: float | None = 13.0, filter_reason: str | None = None, speed: float | None = 50.0) -> None:
    db.execute("INSERT INTO positions (ts, received_at, device_id, msg_id, lat, lon, speed_kmh, heading_deg, source, "
               "fix_valid, filter_reason) VALUES (%s, %s, %s, %s, %s, %s, %s, 90, 'json', %s, %s)",
               (ts, ts, device, msg, lat, lon, speed, lat is not None, filter_reason))


def readings(db: psycopg.Connection, device: str, values: Sequence[tuple[datetime, float]]) -> None:
    with db.cursor() as cur:
        cur.executemany("INSERT INTO env_readings (ts, received_at, device_id, msg_id, temp_c) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        [(ts, ts, device, f"{device}-{i}", v) for i, (ts, v) in enumerate(values)])


def add_shipment(db: psycopg.Connection, ref: str, vehicle: str = "TRUCK-1") -> None:
    db.execute("INSERT INTO shipments (ref, origin, destination, customer, vehicle, public_token) "
               "VALUES (%s, 'STAGE-1', 'GF-CUST', 'CUST-1', %s, %s)", (ref, vehicle, f"tok-{ref}"))


def get(client: TestClient, ref: str = "SHP-1") -> Json:
    response = client.get(f"/api/v1/shipments/{ref}")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


# --- live fields ---------------------------------------------------------------------------------


def test_live_fields_come_from_state_and_events(world: psycopg.Connection, client_for: ClientFor) -> None:
    # Inserted out of order; the two at the same instant keep insertion (id) order.
    event(world, "SHP-1", "departed", at(2), "left geofence GF-DC1")
    event(world, "SHP-1", "loading", at(0), "first ship scan")
    event(world, "SHP-1", "delayed", at(2), "ETA past promise")
    status(world, "SHP-1", "in_transit")
    world.execute("INSERT INTO shipment_state (ref, last_lat, last_lon, last_ts, eta, distance_remaining_km, delayed) "
                  "VALUES ('SHP-1', 52.1, 13.2, %s, %s, 42.5, true)", (at(3), at(4)))

    body = get(client_for("viewer"))
    assert body["status"] == "in_transit"
    assert body["delayed"] is True
    assert body["last_position"] == {"lat": 52.1, "lon": 13.2, "ts": rfc(at(3))}
    assert body["eta"] == rfc(at(4))
    assert body["distance_remaining_km"] == 42.5
    assert body["events"] == [
        {"ts": rfc(at(0)), "type": "loading", "detail": "first ship scan"},
        {"ts": rfc(at(2)), "type": "departed", "detail": "left geofence GF-DC1"},
        {"ts": rfc(at(2)), "type": "delayed", "detail": "ETA past promise"},
    ]
    assert body["temperature"] is None  # no profile


def test_untracked_shipment_has_null_live_fields(world: psycopg.Connection, client_for: ClientFor) -> None:
    body = get(client_for("viewer"))
    assert body["status"] == "planned"
    assert (body["delayed"], body["last_position"], body["eta"], body["distance_remaining_km"], body["events"],
            body["temperature"]) == (False, None, None, None, [], None)


def test_list_pages_carry_each_shipments_own_live_state(world: psycopg.Connection, client_for: ClientFor) -> None:
    for ref in ("SHP-2", "SHP-3"):
        add_shipment(world, ref)
    event(world, "SHP-2", "loading", at(1))
    world.execute("INSERT INTO shipment_state (ref, last_lat, last_lon, last_ts, delayed) "
                  "VALUES ('SHP-3', 1.5, 2.5, %s, false)", (at(5),))
    viewer = client_for("viewer")
    seen: list[Json] = []
    cursor = None
    while True:
        body = viewer.get("/api/v1/shipments", params={"limit": 2} | ({"cursor": cursor} if cursor else {})).json()
        seen += body["items"]
        cursor = body["next"]
        if cursor is None:
            break
    by_ref = {s["ref"]: s for s in seen}
    assert list(by_ref) == ["SHP-1", "SHP-2", "SHP-3"]
    assert by_ref["SHP-1"]["events"] == [] and by_ref["SHP-1"]["last_position"] is None
    assert [e["type"] for e in by_ref["SHP-2"]["events"]] == ["loading"]
    assert by_ref["SHP-3"]["last_position"] == {"lat": 1.5, "lon": 2.5, "ts": rfc(at(5))}


def _known_mkt_trip(db: psycopg.Connection) -> None:
    """18 h at 5 °C then 6 h at 14 °C, hourly, on the truck's sensor between loading and delivery."""
    event(db, "SHP-1", "loading", at(0))
    event(db, "SHP-1", "delivered", at(24))
    status(db, "SHP-1", "delivered")
    readings(db, "ENV-T1", [(at(h), 5.0 if h < 18 else 14.0) for h in range(24)])
    # Outside the window (before loading, after delivery), on another truck, and on a fixed sensor
    # in the warehouse: none of these are the goods' temperature.
    readings(db, "ENV-T1", [(at(-1), 30.0), (at(25), -10.0)])
    readings(db, "ENV-T2", [(at(h), 25.0) for h in range(24)])
    readings(db, "ENV-1", [(at(h), 40.0) for h in range(24)])


def test_temperature_summary_known_mkt(world: psycopg.Connection, client_for: ClientFor) -> None:
    _known_mkt_trip(world)
    # The profile comes from the first line whose item has one (SKU-B has none).
    world.execute("UPDATE items SET profile = 'CHILLED' WHERE sku = 'SKU-A'")
    world.execute("""UPDATE shipments SET lines = '[{"sku": "SKU-B", "qty": 1}, {"sku": "SKU-A", "qty": 2}]'""")
    temperature = get(client_for("viewer"))["temperature"]
    assert temperature["min_c"] == 5.0
    assert temperature["max_c"] == 14.0
    assert temperature["mkt_c"] == pytest.approx(8.29, abs=0.01)
    assert temperature["minutes_out_of_range"] == pytest.approx(360, abs=1)
    assert get(client_for("viewer"))["delivered_at"] == rfc(at(24))


def test_shipment_profile_wins_over_item_profile(world: psycopg.Connection, client_for: ClientFor) -> None:
    _known_mkt_trip(world)
    world.execute("UPDATE items SET profile = 'CHILLED' WHERE sku = 'SKU-A'")
    world.execute("""UPDATE shipments SET profile = 'AMBIENT', lines = '[{"sku": "SKU-A", "qty": 1}]'""")
    temperature = get(client_for("viewer"))["temperature"]
    assert temperature["minutes_out_of_range"] == 0
    assert temperature["mkt_c"] == pytest.approx(8.29, abs=0.01)


@pytest.mark.parametrize(("own", "lines", "item_profiles"), [
    (None, [("SKU-B", None), ("SKU-A", "CHILLED"), ("SKU-C", "AMBIENT")], "CHILLED"),
    (None, [("SKU-C", "AMBIENT"), ("SKU-A", "CHILLED")], "AMBIENT"),
    ("AMBIENT", [("SKU-A", "CHILLED")], "AMBIENT"),
])
def test_the_summary_judges_with_the_profile_the_alarms_use(world: psycopg.Connection, client_for: ClientFor,
                                                             own: str | None, lines: list[tuple[str, str | None]],
                                                             item_profiles: str) -> None:
    """One choice (core.telemetry_rules.choose_profile) for the summary and for ingest's carriages."""
    from ingest.telemetry_store import load_carriages

    _known_mkt_trip(world)
    for sku, profile in lines:
        world.execute("UPDATE items SET profile = %s WHERE sku = %s", (profile, sku))
    world.execute("UPDATE shipments SET profile = %s, lines = %s::jsonb",
                  (own, json.dumps([{"sku": sku, "qty": 1} for sku, _ in lines])))
    world.execute("INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, ref, source) "
                  "VALUES (%s, 'SKU-B', 1, 'STAGE-1', 'TRUCK-1', 'loading', 'SHP-1', 'api')", (at(0),))
    with world.cursor() as cur:
        [carriage] = load_carriages(cur, ["TRUCK-1"], at(-48))["TRUCK-1"]
    assert carriage.profile == item_profiles
    minutes = get(client_for("viewer"))["temperature"]["minutes_out_of_range"]
    assert minutes == (pytest.approx(360, abs=1) if item_profiles == "CHILLED" else 0)


def test_the_summary_takes_the_profile_from_the_core_choice(world: psycopg.Connection, client_for: ClientFor,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No profile rule of its own in SQL: the summary follows whatever the core rule decides."""
    import api.store.shipment_live as live

    _known_mkt_trip(world)
    world.execute("UPDATE items SET profile = 'CHILLED' WHERE sku = 'SKU-A'")
    world.execute("""UPDATE shipments SET profile = 'AMBIENT', lines = '[{"sku": "SKU-A", "qty": 1}]'""")
    assert get(client_for("viewer"))["temperature"]["minutes_out_of_range"] == 0
    monkeypatch.setattr(live, "choose_profile", lambda own, lines: "CHILLED")
    assert get(client_for("viewer"))["temperature"]["minutes_out_of_range"] == pytest.approx(360, abs=1)


def test_several_sensors_report_the_worst(world: psycopg.Connection, client_for: ClientFor) -> None:
    _known_mkt_trip(world)
    world.execute("UPDATE shipments SET profile = 'CHILLED'")
    world.execute("INSERT INTO devices (device_id, kind, vehicle) VALUES ('ENV-T1B', 'env_sensor', 'TRUCK-1')")
    readings(world, "ENV-T1B", [(at(h), 3.0) for h in range(24)])
    temperature = get(client_for("viewer"))["temperature"]
    assert (temperature["min_c"], temperature["max_c"]) == (3.0, 14.0)
    assert temperature["mkt_c"] == pytest.approx(8.29, abs=0.01)
    assert temperature["minutes_out_of_range"] == pytest.approx(360, abs=1)


def test_open_trip_counts_readings_up_to_now(world: psycopg.Connection, client_for: ClientFor) -> None:
    world.execute("UPDATE shipments SET profile = 'CHILLED'")
    now = datetime.now(UTC)
    event(world, "SHP-1", "loading", now - timedelta(hours=3))
    readings(world, "ENV-T1", [(now - timedelta(hours=3 - h), 4.0 + h) for h in range(3)])  # 4, 5, 6
    temperature = get(client_for("viewer"))["temperature"]
    assert (temperature["min_c"], temperature["max_c"], temperature["minutes_out_of_range"]) == (4.0, 6.0, 0)


@pytest.mark.parametrize("case", ["no_profile", "not_loaded", "no_readings"])
def test_temperature_is_null_without_its_inputs(world: psycopg.Connection, client_for: ClientFor, case: str) -> None:
    _known_mkt_trip(world)
    if case != "no_profile":
        world.execute("UPDATE shipments SET profile = 'CHILLED'")
    if case == "not_loaded":
        world.execute("DELETE FROM shipment_events WHERE type = 'loading'")
    if case == "no_readings":
        world.execute("DELETE FROM env_readings WHERE device_id = 'ENV-T1'")
    assert get(client_for("viewer"))["temperature"] is None


# --- the track -----------------------------------------------------------------------------------


@pytest.fixture
def tracked(world: psycopg.Connection) -> psycopg.Connection:
    """SHP-1 loaded at 0 h and delivered at 10 h; positions of every kind around that."""
    event(world, "SHP-1", "loading", at(0))
    event(world, "SHP-1", "delivered", at(10))
    # Inserted out of event-time order, as a tracker flushing its buffer would deliver them.
    position(world, "TRK-1", "m5", at(5), 52.5, 13.5)
    position(world, "TRK-1", "m1", at(1), 52.1, 13.1)
    position(world, "TRK-1B", "b3", at(3), 52.3, 13.3, speed=None)
    position(world, "TRK-1", "m0", at(0), 52.0, 13.0)  # at loading: inside (inclusive)
    position(world, "TRK-1", "m10", at(10), 53.0, 14.0)  # at delivery: inside (inclusive)
    position(world, "TRK-1", "jump", at(4), 10.0, 10.0, filter_reason="impossible_jump")
    position(world, "TRK-1", "nofix", at(6), None, None, filter_reason="invalid_fix")
    position(world, "TRK-1", "before", at(-1), 51.0, 12.0)  # before loading
    position(world, "TRK-1", "after", at(11), 54.0, 15.0)  # after delivery: the truck's next job
    position(world, "TRK-2", "other", at(2), 40.0, 10.0)  # another truck
    position(world, "ENV-T1", "env", at(2), 41.0, 11.0)  # not a tracker
    return world


def track(client: TestClient, ref: str = "SHP-1", **params: Any) -> Json:
    response = client.get(f"/api/v1/shipments/{ref}/track", params=params)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def test_track_is_the_vehicles_usable_positions_in_the_shipments_span(tracked: psycopg.Connection,
                                                                      client_for: ClientFor) -> None:
    body = track(client_for("viewer"))
    assert body["next"] is None
    assert body["items"] == [
        {"ts": rfc(at(0)), "lat": 52.0, "lon": 13.0, "speed_kmh": 50.0, "heading_deg": 90.0, "device_id": "TRK-1"},
        {"ts": rfc(at(1)), "lat": 52.1, "lon": 13.1, "speed_kmh": 50.0, "heading_deg": 90.0, "device_id": "TRK-1"},
        {"ts": rfc(at(3)), "lat": 52.3, "lon": 13.3, "speed_kmh": None, "heading_deg": 90.0, "device_id": "TRK-1B"},
        {"ts": rfc(at(5)), "lat": 52.5, "lon": 13.5, "speed_kmh": 50.0, "heading_deg": 90.0, "device_id": "TRK-1"},
        {"ts": rfc(at(10)), "lat": 53.0, "lon": 14.0, "speed_kmh": 50.0, "heading_deg": 90.0, "device_id": "TRK-1"},
    ]


def test_track_include_filtered_adds_them_with_the_reason(tracked: psycopg.Connection, client_for: ClientFor) -> None:
    items = track(client_for("viewer"), include_filtered="true")["items"]
    assert [(i["ts"], i["filter_reason"]) for i in items] == [
        (rfc(at(0)), None), (rfc(at(1)), None), (rfc(at(3)), None), (rfc(at(4)), "impossible_jump"),
        (rfc(at(5)), None), (rfc(at(6)), "invalid_fix"), (rfc(at(10)), None)]
    assert items[5]["lat"] is None and items[5]["lon"] is None


def test_track_pages_follow_event_time(tracked: psycopg.Connection, client_for: ClientFor) -> None:
    viewer = client_for("viewer")
    whole = track(viewer, include_filtered="true")["items"]
    seen: list[Json] = []
    cursor = None
    while True:
        body = track(viewer, include_filtered="true", limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(body["items"]) <= 2
        seen += body["items"]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == whole
    bad = viewer.get("/api/v1/shipments/SHP-1/track", params={"cursor": "bm9wZQ"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_cursor")


def test_track_of_a_shipment_not_loaded_starts_at_its_creation(world: psycopg.Connection,
                                                              client_for: ClientFor) -> None:
    created = world.execute("SELECT created_at FROM shipments WHERE ref = 'SHP-1'").fetchone()
    assert created is not None
    position(world, "TRK-1", "old", created[0] - timedelta(minutes=5))
    position(world, "TRK-1", "new", created[0] + timedelta(microseconds=1))
    items = track(client_for("viewer"))["items"]
    assert [i["ts"] for i in items] == [rfc3339(created[0] + timedelta(microseconds=1))]


def test_track_of_unknown_shipment_is_404(world: psycopg.Connection, client_for: ClientFor) -> None:
    response = client_for("viewer").get("/api/v1/shipments/NOPE/track")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


# --- cancellation --------------------------------------------------------------------------------


@pytest.fixture
def anonymous(api_settings: Settings) -> Any:
    with TestClient(create_app(api_settings)) as client:
        yield client


def test_cancel_sets_status_time_and_event(world: psycopg.Connection, client_for: ClientFor) -> None:
    event(world, "SHP-1", "loading", at(0))
    status(world, "SHP-1", "loading")
    world.execute("INSERT INTO shipment_state (ref, delayed) VALUES ('SHP-1', true)")
    response = client_for("admin").post("/api/v1/shipments/SHP-1/cancel", json={"reason": "customer withdrew"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["delayed"] is False  # a cancelled shipment is not late any more
    assert [(e["type"], e["detail"]) for e in body["events"]] == [("loading", "loading detail"),
                                                                  ("cancelled", "customer withdrew")]
    row = world.execute("SELECT s.status, s.cancelled_at, e.ts FROM shipments s JOIN shipment_events e "
                        "ON e.shipment = s.ref AND e.type = 'cancelled' WHERE s.ref = 'SHP-1'").fetchone()
    assert row is not None
    assert row[0] == "cancelled" and row[1] == row[2]
    assert body["cancelled_at"] == rfc3339(row[1])
    assert get(client_for("viewer"))["status"] == "cancelled"


def test_cancel_without_body_names_who_cancelled(world: psycopg.Connection, client_for: ClientFor) -> None:
    response = client_for("admin").post("/api/v1/shipments/SHP-1/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["events"][-1]["detail"] == "cancelled by test-admin"


@pytest.mark.parametrize("final", ["delivered", "cancelled"])
def test_cancel_of_a_finished_shipment_is_409(world: psycopg.Connection, client_for: ClientFor, final: str) -> None:
    status(world, "SHP-1", final)
    response = client_for("admin").post("/api/v1/shipments/SHP-1/cancel", json={"reason": "too late"})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict")
    assert world.execute("SELECT count(*) FROM shipment_events").fetchone() == (0,)


def test_cancel_twice_is_409_the_second_time(world: psycopg.Connection, client_for: ClientFor) -> None:
    admin = client_for("admin")
    assert admin.post("/api/v1/shipments/SHP-1/cancel").status_code == 200
    assert admin.post("/api/v1/shipments/SHP-1/cancel").status_code == 409


def test_cancel_needs_an_admin(world: psycopg.Connection, client_for: ClientFor, anonymous: TestClient) -> None:
    assert anonymous.post("/api/v1/shipments/SHP-1/cancel").status_code == 401
    assert client_for("viewer").post("/api/v1/shipments/SHP-1/cancel").status_code == 403
    assert client_for("operator").post("/api/v1/shipments/SHP-1/cancel").status_code == 403
    assert client_for("admin").post("/api/v1/shipments/NOPE/cancel").status_code == 404
    assert world.execute("SELECT status FROM shipments WHERE ref = 'SHP-1'").fetchone() == ("planned",)
    body = client_for("admin").post("/api/v1/shipments/SHP-1/cancel", json={"reason": "x", "extra": 1})
    assert body.status_code == 422


def test_track_needs_a_viewer(world: psycopg.Connection, anonymous: TestClient) -> None:
    assert anonymous.get("/api/v1/shipments/SHP-1/track").status_code == 401
