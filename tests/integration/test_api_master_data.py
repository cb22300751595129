"""Master data through the HTTP API (CONTRACT 2.2) against the real database and, for devices,
the real project broker: credentials the API issues must really connect."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devices.broker_accounts import BrokerAccounts
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.stack_helpers import unique

pytestmark = pytest.mark.integration

Json = dict[str, Any]


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings


@pytest.fixture
def api(client_for: ClientFor) -> TestClient:
    """A client authenticated as admin."""
    return client_for("admin", "master-data-test")


def error(response: Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    message: str = body["error"]["message"]
    return message


def put(api: TestClient, path: str, body: Json, status: int | None = None) -> Json:
    response = api.put(f"/api/v1{path}", json=body)
    assert response.status_code in ((status,) if status else (200, 201)), response.text
    result: Json = response.json()
    return result


def mqtt_login_ok(settings: Settings, username: str, password: str) -> bool:
    """Connect with MQTT 5 to the test broker; True when the broker accepts the credentials."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username,
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    answered = threading.Event()
    accepted: list[bool] = []

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        accepted.append(not rc.is_failure)
        answered.set()

    client.on_connect = on_connect
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=10)
    client.loop_start()
    try:
        assert answered.wait(5), "the broker sent no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return accepted[0]


# --- a small world to refer to -------------------------------------------------------------------

def seed(api: TestClient) -> None:
    put(api, "/geofences/YARD-BER", {"type": "circle", "lat": 52.52, "lon": 13.40, "radius_m": 250})
    put(api, "/geofences/CUST-ZONE", {"type": "polygon",
                                      "coordinates": [[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.0]]})
    put(api, "/sites/BER", {"name": "Berlin DC", "tz": "Europe/Berlin", "geofence": "YARD-BER"})
    put(api, "/sites/HAM", {"name": "Hamburg DC"})
    for code, site, kind in [("BER-DOCK-1", "BER", "dock"), ("BER-STAGE", "BER", "staging"),
                             ("BER-A-01", "BER", "internal"), ("TRUCK-7", "BER", "vehicle"),
                             ("CUST-ACME", "BER", "customer"), ("HAM-A-01", "HAM", "internal")]:
        put(api, f"/locations/{code}", {"site": site, "type": kind})
    put(api, "/profiles/CHILLED", {"temp_min_c": 2, "temp_max_c": 8})
    put(api, "/items/MILK-1L", {"name": "Milk 1 l", "gtin": "4006381333931", "profile": "CHILLED"})
    put(api, "/items/BOX", {"name": "Box"})


# --- every kind: create, read back, replace idempotently, list -----------------------------------

def shipment_body() -> Json:
    return {"origin": "BER-DOCK-1", "destination": "CUST-ZONE", "customer": "CUST-ACME", "vehicle": "TRUCK-7",
            "promised_at": "2026-11-24T13:00:00+01:00", "profile": "CHILLED",
            "lines": [{"sku": "MILK-1L", "qty": 24}, {"sku": "BOX", "qty": 1.5}]}


OBJECTS: list[tuple[str, str, Json]] = [
    ("sites", "MUC", {"name": "Munich DC", "tz": "Europe/Berlin", "geofence": "YARD-BER"}),
    ("locations", "BER-B-02", {"site": "BER", "type": "internal", "name": "Aisle B, bay 2"}),
    ("items", "YOGURT", {"name": "Yogurt", "gtin": "96385074", "profile": "CHILLED"}),
    ("profiles", "FROZEN", {"temp_min_c": -25, "temp_max_c": -18, "rh_min_pct": 10, "rh_max_pct": 90,
                            "delay_s": 600, "hysteresis_c": 1.0}),
    ("geofences", "DEPOT", {"type": "circle", "lat": 48.1, "lon": 11.5, "radius_m": 300}),
    ("geofences", "FIELD", {"type": "polygon", "coordinates": [[11.0, 48.0], [11.2, 48.0], [11.1, 48.2]]}),
    ("shipments", "SH-1001", shipment_body()),
]


@pytest.mark.parametrize(("collection", "code", "body"), OBJECTS, ids=[f"{c}-{k}" for c, k, _ in OBJECTS])
def test_put_creates_then_replaces_idempotently(api: TestClient, collection: str, code: str, body: Json) -> None:
    seed(api)
    before = len(api.get(f"/api/v1/{collection}?limit=1000").json()["items"])
    created = put(api, f"/{collection}/{code}", body, status=201)
    for field, value in body.items():
        if field not in ("promised_at", "gtin", "lines", "coordinates"):
            assert created[field] == value, field
    assert created["created_at"].endswith("Z") and created["updated_at"] == created["created_at"]
    again = put(api, f"/{collection}/{code}", body, status=200)
    assert again == created, "the same PUT twice must give the same object"
    assert api.get(f"/api/v1/{collection}/{code}").json() == created
    listed = api.get(f"/api/v1/{collection}?limit=1000").json()["items"]
    assert len(listed) == before + 1, "a replace must not add a second object"
    assert [o for o in listed if o.get("code", o.get("sku", o.get("ref"))) == code] == [created]


def test_replace_changes_the_object(api: TestClient) -> None:
    seed(api)
    first = put(api, "/locations/BER-A-01", {"site": "BER", "type": "staging", "name": "now staging"}, status=200)
    assert first["type"] == "staging" and first["name"] == "now staging"
    assert first["updated_at"] >= first["created_at"]
    # A geofence may switch its shape; the other shape's fields go away.
    poly = put(api, "/geofences/YARD-BER", {"type": "polygon", "coordinates": [[1, 1], [2, 1], [2, 2]]}, status=200)
    assert poly["type"] == "polygon" and poly["coordinates"] == [[1, 1], [2, 1], [2, 2]]
    assert "lat" not in poly and "radius_m" not in poly


def test_defaults_are_filled(api: TestClient) -> None:
    site = put(api, "/sites/S", {"name": "S"}, status=201)
    assert site["tz"] == "UTC" and site["geofence"] is None
    profile = put(api, "/profiles/P", {"temp_min_c": 2, "temp_max_c": 8}, status=201)
    assert profile["delay_s"] == 300 and profile["hysteresis_c"] == 0.5
    assert profile["rh_min_pct"] is None and profile["rh_max_pct"] is None


def test_get_unknown_is_404(api: TestClient) -> None:
    for collection in ("sites", "locations", "items", "profiles", "geofences", "devices", "shipments"):
        assert "NOPE" in error(api.get(f"/api/v1/{collection}/NOPE"), 404, "not_found")


# --- pagination of every collection --------------------------------------------------------------

_BODIES: dict[str, Callable[[str], Json]] = {
    "sites": lambda c: {"name": c},
    "locations": lambda c: {"site": "BER", "type": "internal"},
    "items": lambda c: {"name": c},
    "profiles": lambda c: {"temp_min_c": 0, "temp_max_c": 5},
    "geofences": lambda c: {"type": "circle", "lat": 1, "lon": 2, "radius_m": 3},
    "devices": lambda c: {"kind": "gps_tracker", "vehicle": "TRUCK-7"},
    "shipments": lambda c: shipment_body(),
}


@pytest.mark.parametrize("collection", ["sites", "locations", "items", "profiles", "geofences", "devices",
                                        "shipments"])
def test_lists_paginate(api: TestClient, db: psycopg.Connection, collection: str) -> None:
    seed(api)
    prefix = unique("pg")  # device accounts outlive the test's database rows: unique ids
    for i in range(5):
        code = f"{prefix}-{i}"
        put(api, f"/{collection}/{code}", _BODIES[collection](code), status=201)
    everything = api.get(f"/api/v1/{collection}", params={"limit": 1000}).json()
    assert everything["next"] is None
    keys = [o.get("code") or o.get("sku") or o.get("ref") or o["device_id"] for o in everything["items"]]
    assert keys == sorted(keys) and len(keys) == len(set(keys))

    seen: list[Json] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get(f"/api/v1/{collection}", params=params).json()
        assert set(page) == {"items", "next"} and len(page["items"]) <= 2
        seen += page["items"]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == everything["items"], "walking the pages gives every object once, in order"
    assert pages == -(-len(keys) // 2)

    error(api.get(f"/api/v1/{collection}", params={"cursor": "not*a*cursor"}), 400, "bad_cursor")
    error(api.get(f"/api/v1/{collection}", params={"limit": 1001}), 422, "validation_error")
    error(api.get(f"/api/v1/{collection}", params={"limit": 0}), 422, "validation_error")


def test_a_cursor_of_another_list_is_refused(api: TestClient) -> None:
    seed(api)
    cursor = api.get("/api/v1/sites", params={"limit": 1}).json()["next"]
    assert cursor is not None
    assert "locations" in error(api.get("/api/v1/locations", params={"cursor": cursor}), 400, "bad_cursor")


# --- validation: every rule answers 4xx and changes nothing --------------------------------------

def assert_refused(api: TestClient, db: psycopg.Connection, path: str, body: Json, status: int, code: str,
                   table: str, *mentions: str) -> str:
    before = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    message = error(api.put(f"/api/v1{path}", json=body), status, code)
    for word in mentions:
        assert word in message, f"{word!r} not in {message!r}"
    assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == before, "a refused PUT changed something"
    return message


def test_code_syntax(api: TestClient, db: psycopg.Connection) -> None:
    assert_refused(api, db, "/sites/-leading-dash", {"name": "x"}, 422, "validation_error", "sites", "code")
    assert_refused(api, db, "/sites/" + "x" * 65, {"name": "x"}, 422, "validation_error", "sites", "code")
    assert_refused(api, db, "/sites/a%20b", {"name": "x"}, 422, "validation_error", "sites", "code")
    assert put(api, "/sites/DE:BER_1.a-b", {"name": "x"}, status=201)["code"] == "DE:BER_1.a-b"


def test_unknown_fields_are_refused(api: TestClient, db: psycopg.Connection) -> None:
    assert_refused(api, db, "/sites/S", {"name": "x", "timezone": "UTC"}, 422, "validation_error", "sites",
                   "timezone")


def test_site_rules(api: TestClient, db: psycopg.Connection) -> None:
    assert_refused(api, db, "/sites/S", {"name": "x", "tz": "Mars/Olympus"}, 422, "validation_error", "sites",
                   "tz", "Mars/Olympus")
    assert_refused(api, db, "/sites/S", {"name": "x", "geofence": "NOWHERE"}, 422, "invalid_reference", "sites",
                   "geofence", "NOWHERE")
    assert_refused(api, db, "/sites/S", {"name": ""}, 422, "validation_error", "sites", "name")


def test_location_rules(api: TestClient, db: psycopg.Connection) -> None:
    seed(api)
    assert_refused(api, db, "/locations/L", {"site": "NOSITE", "type": "internal"}, 422, "invalid_reference",
                   "locations", "site", "NOSITE")
    assert_refused(api, db, "/locations/L", {"site": "BER", "type": "shelf"}, 422, "validation_error",
                   "locations", "type")
    assert_refused(api, db, "/locations/L", {"type": "internal"}, 422, "validation_error", "locations", "site")
    for kind in ("internal", "dock", "staging", "vehicle", "supplier", "customer", "returns", "inventory_loss"):
        assert put(api, f"/locations/L-{kind}", {"site": "HAM", "type": kind}, status=201)["type"] == kind


def test_item_rules(api: TestClient, db: psycopg.Connection) -> None:
    seed(api)
    message = assert_refused(api, db, "/items/I", {"name": "x", "gtin": "40063813339310"}, 422,
                             "validation_error", "items", "gtin", "check digit")
    assert "expected 4" in message
    assert_refused(api, db, "/items/I", {"name": "x", "gtin": "12345"}, 422, "validation_error", "items", "gtin")
    assert_refused(api, db, "/items/I", {"name": "x", "gtin": "40O6381333931"}, 422, "validation_error", "items",
                   "gtin")
    assert_refused(api, db, "/items/I", {"name": "x", "profile": "NOPROFILE"}, 422, "invalid_reference", "items",
                   "profile", "NOPROFILE")
    # The same GTIN in another form is the same GTIN: the conflict names the item that has it.
    assert_refused(api, db, "/items/I", {"name": "x", "gtin": "04006381333931"}, 409, "conflict", "items",
                   "MILK-1L")
    # Replacing the item that owns the GTIN is no conflict.
    assert put(api, "/items/MILK-1L", {"name": "Milk", "gtin": "4006381333931"}, status=200)["name"] == "Milk"


@pytest.mark.parametrize(("given", "stored"), [("96385074", "00000096385074"), ("036000291452", "00036000291452"),
                                               ("4006381333931", "04006381333931"),
                                               ("04006381333931", "04006381333931")])
def test_gtins_are_normalised_to_14_digits(api: TestClient, given: str, stored: str) -> None:
    assert put(api, "/items/G", {"name": "g", "gtin": given}, status=201)["gtin"] == stored
    assert api.get("/api/v1/items/G").json()["gtin"] == stored


@pytest.mark.parametrize(("body", "mention"), [
    ({"temp_min_c": 8, "temp_max_c": 2}, "temp_min_c"),
    ({"temp_min_c": 5, "temp_max_c": 5}, "temp_min_c"),
    ({"temp_min_c": 2, "temp_max_c": 8, "rh_min_pct": -1}, "rh_min_pct"),
    ({"temp_min_c": 2, "temp_max_c": 8, "rh_max_pct": 101}, "rh_max_pct"),
    ({"temp_min_c": 2, "temp_max_c": 8, "rh_min_pct": 60, "rh_max_pct": 40}, "rh_min_pct"),
    ({"temp_min_c": 2, "temp_max_c": 8, "delay_s": -1}, "delay_s"),
    ({"temp_min_c": 2, "temp_max_c": 8, "hysteresis_c": -0.1}, "hysteresis_c"),
    ({"temp_max_c": 8}, "temp_min_c"),
])
def test_profile_rules(api: TestClient, db: psycopg.Connection, body: Json, mention: str) -> None:
    assert_refused(api, db, "/profiles/P", body, 422, "validation_error", "profiles", mention)


@pytest.mark.parametrize(("body", "mention"), [
    ({"type": "polygon", "coordinates": [[13.0, 52.0], [13.1, 52.0]]}, "3 distinct"),
    ({"type": "polygon", "coordinates": [[13.0, 52.0], [13.1, 52.0], [13.0, 52.0]]}, "3 distinct"),
    ({"type": "polygon", "coordinates": [[13.0, 52.0], [13.1, 52.0], [200, 52.1]]}, "coordinates"),
    ({"type": "polygon", "coordinates": [[13.0, 52.0], [13.1, 52.0], [13.1, 95]]}, "coordinates"),
    ({"type": "polygon", "coordinates": [[13.0, 52.0, 1], [13.1, 52.0], [13.1, 52.1]]}, "coordinates"),
    ({"type": "circle", "lat": 91, "lon": 13, "radius_m": 10}, "lat"),
    ({"type": "circle", "lat": 52, "lon": -181, "radius_m": 10}, "lon"),
    ({"type": "circle", "lat": 52, "lon": 13, "radius_m": 0}, "radius_m"),
    ({"type": "circle", "lat": 52, "lon": 13}, "radius_m"),
    ({"type": "square", "lat": 52, "lon": 13}, "type"),
])
def test_geofence_rules(api: TestClient, db: psycopg.Connection, body: Json, mention: str) -> None:
    assert_refused(api, db, "/geofences/G", body, 422, "validation_error", "geofences", mention)


def test_shipment_rules(api: TestClient, db: psycopg.Connection) -> None:
    seed(api)

    def refused(change: Json, status: int, code: str, *mentions: str) -> None:
        assert_refused(api, db, "/shipments/SH-9", {**shipment_body(), **change}, status, code, "shipments",
                       *mentions)

    refused({"origin": "NOLOC"}, 422, "invalid_reference", "origin", "NOLOC")
    refused({"destination": "NOFENCE"}, 422, "invalid_reference", "destination", "NOFENCE")
    refused({"customer": "BER-A-01"}, 422, "invalid_reference", "customer", "internal")
    refused({"vehicle": "BER-STAGE"}, 422, "invalid_reference", "vehicle", "staging")
    refused({"profile": "NOPROFILE"}, 422, "invalid_reference", "profile")
    refused({"lines": [{"sku": "NOSKU", "qty": 1}]}, 422, "invalid_reference", "NOSKU")
    refused({"lines": [{"sku": "BOX", "qty": 0}]}, 422, "validation_error", "qty")
    refused({"promised_at": "2026-11-24T13:00:00"}, 422, "validation_error", "promised_at")
    refused({"status": "delivered"}, 422, "validation_error", "status")


def test_shipment_keeps_token_and_status_on_replace(api: TestClient, db: psycopg.Connection) -> None:
    seed(api)
    created = put(api, "/shipments/SH-1", shipment_body(), status=201)
    assert created["status"] == "planned"
    assert len(created["public_token"]) >= 32
    assert created["promised_at"] == "2026-11-24T12:00:00Z", "times come back in UTC"
    assert created["lines"] == [{"sku": "MILK-1L", "qty": 24}, {"sku": "BOX", "qty": 1.5}]
    not_yet_tracked: Json = {"delayed": False, "last_position": None, "eta": None, "distance_remaining_km": None,
                             "events": [], "temperature": None}
    for field, value in not_yet_tracked.items():
        assert created[field] == value
    db.execute("UPDATE shipments SET status = 'in_transit' WHERE ref = 'SH-1'")
    replaced = put(api, "/shipments/SH-1", {**shipment_body(), "lines": [{"sku": "BOX", "qty": 2}]}, status=200)
    assert replaced["public_token"] == created["public_token"]
    assert replaced["status"] == "in_transit", "PUT never changes the status"
    assert replaced["lines"] == [{"sku": "BOX", "qty": 2}]
    other = put(api, "/shipments/SH-2", shipment_body(), status=201)
    assert other["public_token"] != created["public_token"]


# --- devices -------------------------------------------------------------------------------------

def gate_body() -> Json:
    return {"kind": "rfid_gate", "site": "BER",
            "gate": {"outer": {"antennas": [1, 2], "location": "BER-DOCK-1"},
                     "inner": {"antennas": [3, 4], "location": "BER-STAGE"}, "rssi_floor_dbm": -70}}


def test_device_create_issues_working_credentials(api: TestClient, settings: Settings) -> None:
    seed(api)
    device_id = unique("scanner")
    body = {"kind": "scanner", "site": "BER", "location": "BER-DOCK-1", "mode": "receive"}
    created = put(api, f"/devices/{device_id}", body, status=201)
    assert created["device_id"] == device_id and created["kind"] == "scanner" and created["mode"] == "receive"
    assert created["mqtt_username"] == device_id
    assert created["mqtt_host"] == settings.mqtt_host and created["mqtt_port"] == settings.mqtt_port
    assert created["topic_prefix"] == settings.topic_prefix
    password = created["mqtt_password"]
    assert mqtt_login_ok(settings, device_id, password)
    assert not mqtt_login_ok(settings, device_id, password + "x")

    # Replacing an existing device never shows a password, and the old one keeps working.
    again = put(api, f"/devices/{device_id}", body, status=200)
    assert "mqtt_password" not in again
    assert again == api.get(f"/api/v1/devices/{device_id}").json()
    assert {k: v for k, v in created.items() if not k.startswith("mqtt_") and k != "topic_prefix"} == again
    changed = put(api, f"/devices/{device_id}", {**body, "mode": "pick"}, status=200)
    assert changed["mode"] == "pick" and "mqtt_password" not in changed
    assert mqtt_login_ok(settings, device_id, password)


def test_rotate_secret_and_delete(api: TestClient, settings: Settings) -> None:
    seed(api)
    device_id = unique("tracker")
    old = put(api, f"/devices/{device_id}", {"kind": "gps_tracker", "vehicle": "TRUCK-7"}, status=201)
    rotated = api.post(f"/api/v1/devices/{device_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["device_id"] == device_id and new["mqtt_username"] == device_id
    assert new["mqtt_password"] != old["mqtt_password"]
    assert not mqtt_login_ok(settings, device_id, old["mqtt_password"])
    assert mqtt_login_ok(settings, device_id, new["mqtt_password"])

    deleted = api.delete(f"/api/v1/devices/{device_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert not mqtt_login_ok(settings, device_id, new["mqtt_password"])
    error(api.get(f"/api/v1/devices/{device_id}"), 404, "not_found")
    error(api.delete(f"/api/v1/devices/{device_id}"), 404, "not_found")
    error(api.post(f"/api/v1/devices/{device_id}/rotate-secret"), 404, "not_found")


def test_gate_device(api: TestClient) -> None:
    seed(api)
    device_id = unique("gate")
    created = put(api, f"/devices/{device_id}", gate_body(), status=201)
    assert created["gate"] == gate_body()["gate"]


@pytest.mark.parametrize(("body", "status", "code", "mention"), [
    ({"kind": "drone"}, 422, "validation_error", "kind"),
    ({"kind": "scanner", "site": "NOSITE"}, 422, "invalid_reference", "NOSITE"),
    ({"kind": "scanner", "location": "NOLOC"}, 422, "invalid_reference", "NOLOC"),
    ({"kind": "scanner", "site": "HAM", "location": "BER-DOCK-1"}, 422, "invalid_reference", "HAM"),
    ({"kind": "scanner", "mode": "steal"}, 422, "validation_error", "mode"),
    ({"kind": "env_sensor", "mode": "receive"}, 422, "validation_error", "mode"),
    ({"kind": "gps_tracker", "vehicle": "BER-A-01"}, 422, "invalid_reference", "vehicle"),
    ({"kind": "gps_tracker", "vehicle": "NOTRUCK"}, 422, "invalid_reference", "NOTRUCK"),
    ({"kind": "env_sensor", "profile": "NOPROFILE"}, 422, "invalid_reference", "NOPROFILE"),
    ({"kind": "rfid_gate"}, 422, "validation_error", "gate"),
    ({"kind": "scanner", "gate": gate_body()["gate"]}, 422, "validation_error", "gate"),
    ({"kind": "rfid_gate", "gate": {"outer": {"antennas": [1, 2], "location": "BER-DOCK-1"},
                                    "inner": {"antennas": [2, 3], "location": "BER-STAGE"}}},
     422, "validation_error", "[2]"),
    ({"kind": "rfid_gate", "gate": {"outer": {"antennas": [], "location": "BER-DOCK-1"},
                                    "inner": {"antennas": [3], "location": "BER-STAGE"}}},
     422, "validation_error", "antennas"),
    ({"kind": "rfid_gate", "gate": {"outer": {"antennas": [1], "location": "NOLOC"},
                                    "inner": {"antennas": [3], "location": "BER-STAGE"}}},
     422, "invalid_reference", "gate.outer.location"),
])
def test_device_rules(api: TestClient, db: psycopg.Connection, settings: Settings, body: Json, status: int,
                      code: str, mention: str) -> None:
    seed(api)
    device_id = unique("bad")
    assert_refused(api, db, f"/devices/{device_id}", body, status, code, "devices", mention)
    with BrokerAccounts(settings) as accounts:
        assert not accounts.device_exists(device_id), "a refused device must get no broker account"


def test_device_id_syntax(api: TestClient, db: psycopg.Connection) -> None:
    assert_refused(api, db, "/devices/has:colon", {"kind": "scanner"}, 422, "validation_error", "devices",
                   "device_id")


def test_device_liveness(api: TestClient, db: psycopg.Connection, settings: Settings) -> None:
    seed(api)
    fresh, stale, silent = unique("fresh"), unique("stale"), unique("silent")
    for device_id in (fresh, stale, silent):
        put(api, f"/devices/{device_id}", {"kind": "env_sensor", "location": "BER-A-01"}, status=201)
    now = datetime.now(UTC)
    seen_fresh = now - timedelta(seconds=30)
    db.execute("INSERT INTO device_state (device_id, last_seen, last_ts) VALUES (%s, %s, %s), (%s, %s, %s)",
               (fresh, seen_fresh, seen_fresh,
                stale, now - timedelta(seconds=settings.device_offline_after_s + 60), now - timedelta(hours=1)))
    # The latest status by device time wins, even when an older reading arrived later.
    db.execute(
        "INSERT INTO device_status (ts, received_at, ts_source, device_id, msg_id, battery_pct) VALUES "
        "(%s, %s, 'device', %s, 'm1', 81), (%s, %s, 'device', %s, 'm2', 97), (%s, %s, 'device', %s, 'm3', NULL)",
        (now - timedelta(minutes=5), now - timedelta(minutes=5), fresh,
         now - timedelta(hours=2), now - timedelta(seconds=40), fresh,
         now - timedelta(minutes=1), now - timedelta(minutes=1), fresh))

    got = api.get(f"/api/v1/devices/{fresh}").json()
    assert got["online"] is True
    assert got["battery_pct"] == 81
    assert datetime.fromisoformat(got["last_seen"]) == seen_fresh
    assert got["last_seen"].endswith("Z")

    got = api.get(f"/api/v1/devices/{stale}").json()
    assert got["online"] is False and got["last_seen"] is not None and got["battery_pct"] is None

    got = api.get(f"/api/v1/devices/{silent}").json()
    assert (got["online"], got["last_seen"], got["battery_pct"]) == (False, None, None)

    listed = {d["device_id"]: d for d in api.get("/api/v1/devices").json()["items"]}
    assert listed[fresh]["online"] is True and listed[stale]["online"] is False
