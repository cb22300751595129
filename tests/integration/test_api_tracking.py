"""The public tracking endpoint `GET /api/v1/track/{public_token}`: no auth, exactly the customer's
view of one shipment, nothing internal, and no way to tell a near miss from a wild guess."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from core.geo import haversine_km
from runtime.settings import Settings
from tests.integration.world import build_world

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
TOKEN = "tok-shp-1"
PUBLIC_KEYS = {"status", "eta", "delivered_at", "events", "progress_pct", "tickets"}
Json = dict[str, Any]


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rfc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def public(db: psycopg.Connection, api_settings: Settings) -> Iterator[TestClient]:
    """A client with no token at all, the way a customer's browser calls the page."""
    build_world(db)
    db.execute("INSERT INTO devices (device_id, kind, site, vehicle) VALUES "
               "('TRK-1', 'gps_tracker', 'DC1', 'TRUCK-1'), ('ENV-T1', 'env_sensor', 'DC1', 'TRUCK-1')")
    # Another shipment on the same truck: its reference must never show on SHP-1's page.
    db.execute("INSERT INTO shipments (ref, origin, destination, customer, vehicle, public_token) "
               "VALUES ('SHP-OTHER-77', 'STAGE-1', 'GF-CUST', 'CUST-1', 'TRUCK-1', 'tok-other')")
    with TestClient(create_app(api_settings)) as client:
        yield client


def event(db: psycopg.Connection, type_: str, hours: float, detail: str, ref: str = "SHP-1") -> None:
    db.execute("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES (%s, %s, %s, %s)",
               (ref, at(hours), type_, detail))


def status(db: psycopg.Connection, value: str, ref: str = "SHP-1") -> None:
    db.execute("UPDATE shipments SET status = %s WHERE ref = %s", (value, ref))


def state(db: psycopg.Connection, **values: Any) -> None:
    columns = ", ".join(values)
    placeholders = ", ".join(["%s"] * len(values))
    db.execute(f"INSERT INTO shipment_state (ref, {columns}) VALUES ('SHP-1', {placeholders})",
               tuple(values.values()))


def position(db: psycopg.Connection, msg: str, hours: float, lat: float, lon: float) -> None:
    db.execute("INSERT INTO positions (ts, received_at, device_id, msg_id, lat, lon, source, fix_valid) "
               "VALUES (%s, %s, 'TRK-1', %s, %s, %s, 'json', true)", (at(hours), at(hours), msg, lat, lon))


def track(client: TestClient, token: str = TOKEN) -> Json:
    response = client.get(f"/api/v1/track/{token}")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: Json = response.json()
    assert set(body) == PUBLIC_KEYS
    return body


def not_found(response: Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == {"error": {"code": "not_found", "message": "no shipment is tracked under this link"}}
    assert response.headers["cache-control"] == "no-store"


# --- what the customer sees ----------------------------------------------------------------------


def test_planned_shipment(public: TestClient) -> None:
    assert track(public) == {"status": "planned", "eta": None, "delivered_at": None, "events": [],
                             "progress_pct": 0, "tickets": []}


def test_in_transit_with_known_distances(db: psycopg.Connection, public: TestClient) -> None:
    event(db, "loading", 0, "first ship scan")
    event(db, "departed", 1, "left geofence GF-DC1")
    status(db, "in_transit")
    # The first usable fix after loading is where the trip starts; the destination is GF-CUST
    # (centre 52.5, 13.4). A quarter of that distance remains: 10 + 80 * 0.75 = 70 %.
    position(db, "p0", 0.5, 52.9, 13.9)
    initial = haversine_km(52.9, 13.9, 52.5, 13.4)
    state(db, last_lat=52.6, last_lon=13.5, last_ts=at(2), eta=at(3), distance_remaining_km=initial / 4)
    body = track(public)
    assert body["status"] == "in_transit"
    assert body["eta"] == rfc(at(3))
    assert body["progress_pct"] == 70
    assert body["events"] == [{"ts": rfc(at(0)), "type": "loading", "detail": "Loading"},
                              {"ts": rfc(at(1)), "type": "departed", "detail": "On the way"}]


def test_in_transit_without_distances_is_halfway(db: psycopg.Connection, public: TestClient) -> None:
    event(db, "loading", 0, "first ship scan")
    event(db, "departed", 1, "first fix after loading (no origin geofence)")
    status(db, "in_transit")
    assert track(public)["progress_pct"] == 50


@pytest.mark.parametrize(("value", "progress"), [("loading", 10), ("arrived", 95)])
def test_fixed_steps(db: psycopg.Connection, public: TestClient, value: str, progress: int) -> None:
    status(db, value)
    assert track(public)["progress_pct"] == progress


def test_delivered_late(db: psycopg.Connection, public: TestClient) -> None:
    for type_, hours in (("loading", 0), ("departed", 1), ("delayed", 2), ("arrived", 5), ("delivered", 6),
                         ("delivered_late", 6)):
        event(db, type_, hours, f"internal detail of {type_} via TRUCK-1")
    status(db, "delivered")
    state(db, eta=at(5), delivered_at=at(6), distance_remaining_km=0.0, delayed=False)
    body = track(public)
    assert (body["status"], body["eta"], body["delivered_at"], body["progress_pct"]) == (
        "delivered", None, rfc(at(6)), 100)
    assert [(e["type"], e["detail"]) for e in body["events"]] == [
        ("loading", "Loading"), ("departed", "On the way"), ("delayed", "Running late"),
        ("arrived", "Arrived at destination"), ("delivered", "Delivered"),
        ("delivered_late", "Delivered after the promised time")]


def test_cancelled_has_no_progress(db: psycopg.Connection, public: TestClient) -> None:
    event(db, "loading", 0, "first ship scan")
    event(db, "cancelled", 1, "cancelled by night-shift: CUST-1 refused SKU-A")
    status(db, "cancelled")
    state(db, eta=at(3))
    body = track(public)
    assert (body["status"], body["eta"], body["progress_pct"]) == ("cancelled", None, None)
    assert body["events"][-1] == {"ts": rfc(at(1)), "type": "cancelled", "detail": "Cancelled"}


def test_nothing_internal_leaks(db: psycopg.Connection, public: TestClient) -> None:
    """Every kind of internal data exists for this shipment; none of it may reach the page."""
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c) VALUES ('CHILLED', 2, 8)")
    db.execute("""UPDATE shipments SET profile = 'CHILLED', lines = '[{"sku": "SKU-A", "qty": 3}]' """
               "WHERE ref = 'SHP-1'")
    event(db, "loading", 0, "first ship scan by SC-1 at STAGE-1 for SHP-OTHER-77")
    event(db, "departed", 1, "left geofence GF-DC1 on TRUCK-1 (TRK-1)")
    event(db, "arrived", 3, "entered geofence GF-CUST at CUST-1")
    event(db, "delayed", 2, "ETA past promise; ENV-T1 reports 9.5")
    status(db, "arrived")
    position(db, "p0", 0.5, 52.987654, 13.876543)
    db.execute("INSERT INTO env_readings (ts, received_at, device_id, msg_id, temp_c) VALUES (%s, %s, 'ENV-T1', "
               "'e1', 9.87654)", (at(1), at(1)))
    state(db, last_lat=52.512345, last_lon=13.412345, last_ts=at(3), eta=at(3), distance_remaining_km=0.123456)
    response = public.get(f"/api/v1/track/{TOKEN}")
    assert set(response.json()) == PUBLIC_KEYS
    text = response.text
    for secret in ("SHP-1", "SHP-OTHER-77", "tok-other", TOKEN, "TRUCK", "STAGE", "CUST", "GF-", "DC1", "TRK",
                   "ENV", "SC-1", "SKU", "CHILLED", "52.", "13.", "9.87", "0.123", "geofence", "scan",
                   "public_token", "vehicle", "origin", "customer", "temperature", "\"lat\"", "\"lon\""):
        assert secret not in text, f"{secret!r} leaked into {text}"
    assert all(set(e) == {"ts", "type", "detail"} for e in response.json()["events"])


# --- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["tok-shp-2", "tok-shp-", "tok-shp-1x", "TOK-SHP-1", "tok", "x" * 129,
                                   "x" * 2000, "tok-shp-1%00", "%20tok-shp-1"])
def test_unknown_tokens_are_404(public: TestClient, token: str) -> None:
    response = public.get(f"/api/v1/track/{token}")
    not_found(response)
    assert token not in response.text


def test_no_other_way_in(public: TestClient) -> None:
    assert public.get("/api/v1/track").status_code == 404
    assert public.get("/api/v1/track/", params={"token": TOKEN}).status_code == 404
    assert public.get("/api/v1/track", params={"public_token": TOKEN}).status_code == 404
    assert public.post(f"/api/v1/track/{TOKEN}").status_code == 405


def test_public_even_with_a_bad_authorization_header(public: TestClient) -> None:
    response = public.get(f"/api/v1/track/{TOKEN}", headers={"Authorization": "Bearer ct_nonsense"})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"


def test_each_token_shows_its_own_shipment(db: psycopg.Connection, public: TestClient) -> None:
    status(db, "arrived", ref="SHP-OTHER-77")
    assert track(public, "tok-other")["status"] == "arrived"
    assert track(public)["status"] == "planned"
