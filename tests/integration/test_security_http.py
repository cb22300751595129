"""HTTP abuse as an outside client (issue 10 points 3, 8, 9): body limits before reading, inputs
PostgreSQL cannot store, list caps, malformed Last-Event-ID, who may cancel a shipment."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from starlette.types import Message

from api.limits import BodyLimit
from api.tokens import create_token
from runtime.settings import Settings
from tests.e2e.fixtures import running_api
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import build_world

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


@pytest.fixture
def small_limit(api_settings: Settings) -> Settings:
    return api_settings.model_copy(update={"api_max_body_bytes": LIMIT})


@pytest.fixture
def server(small_limit: Settings, world: psycopg.Connection) -> Iterator[tuple[str, int, str]]:
    token = create_token(world, "admin", "limits")
    with running_api(small_limit) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        yield parts.hostname, parts.port, token


def _response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Read one HTTP/1.1 response (the server closes the connection after it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=60)
    return sock


def test_declared_oversized_body_gets_413_before_any_byte_is_sent(server: tuple[str, int, str]) -> None:
    host, port, token = server
    with _connect(host, port) as sock:
        sock.sendall(f"PUT /api/v1/sites/BIG HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n".encode())
        status, body = _response(sock)  # answered although not one byte of the 10 GB came
    assert status == 413
    assert body["error"]["code"] == "payload_too_large" and str(LIMIT) in body["error"]["message"]


def test_chunked_oversized_body_gets_413_without_waiting_for_its_end(server: tuple[str, int, str]) -> None:
    host, port, token = server
    chunk = b"x" * 4096
    with _connect(host, port) as sock:
        sock.sendall(f"PUT /api/v1/sites/BIG HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for _ in range(LIMIT // len(chunk) + 2):  # just over the limit; the final 0-chunk never comes
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, body = _response(sock)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


def test_a_body_under_the_limit_still_works(server: tuple[str, int, str], world: psycopg.Connection) -> None:
    host, port, token = server
    body = json.dumps({"name": "Small"}).encode()
    with _connect(host, port) as sock:
        sock.sendall(f"PUT /api/v1/sites/SMALL HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     .encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status, _ = _response(sock)
    assert status in (200, 201)
    assert world.execute("SELECT name FROM sites WHERE code = 'SMALL'").fetchone() == ("Small",)


def test_chunked_body_is_read_no_further_than_the_limit() -> None:
    """At the ASGI boundary: an endless chunked body, counted as the middleware pulls it."""
    pulled = 0

    async def endless() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application must not see an over-size body")

    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimit(never_called, max_bytes=LIMIT)(scope, endless, send))
    assert sent[0]["status"] == 413
    assert pulled == LIMIT // 1024 + 1  # the first chunk over the limit, not one more


NUL = "bad\u0000name"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("put", "/api/v1/sites/NUL1", {"name": NUL}),
    ("put", "/api/v1/locations/NUL2", {"site": "DC1", "type": "storage", "name": NUL}),
    ("post", "/api/v1/tickets", {"type": "complaint", "summary": NUL}),
    ("put", "/api/v1/profiles/HUGE", {"temp_min_c": 2, "temp_max_c": 8, "delay_s": 1.6e17}),
    ("put", "/api/v1/profiles/HUGE2", {"temp_min_c": 2, "temp_max_c": 8, "delay_s": 2**70}),
], ids=["site-name", "location-name", "ticket-summary", "delay-1.6e17", "delay-2^70"])
def test_values_postgres_cannot_store_are_422_not_500(world: psycopg.Connection, client_for: ClientFor,
                                                      method: str, path: str, body: dict[str, Any]) -> None:
    response = getattr(client_for("admin"), method)(path, json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "validation_error"), response.text


def test_extreme_but_storable_numbers_are_accepted(world: psycopg.Connection, client_for: ClientFor) -> None:
    response = client_for("admin").put("/api/v1/profiles/WIDE", json={"temp_min_c": -1e308, "temp_max_c": 1e308})
    assert response.status_code == 201, response.text


def test_nul_in_ticket_and_alarm_notes_is_422(world: psycopg.Connection, client_for: ClientFor) -> None:
    alarm_id = world.execute("INSERT INTO alarms (type, severity, state, subject, started_at, message) VALUES "
                             "('temperature_high', 'critical', 'active', 'X', now(), 'm') RETURNING id").fetchone()
    assert alarm_id is not None
    operator = client_for("operator")
    ack = operator.post(f"/api/v1/alarms/{alarm_id[0]}/ack", json={"note": NUL})
    assert (ack.status_code, ack.json()["error"]["code"]) == (422, "validation_error")
    assert world.execute("SELECT acknowledged FROM alarms").fetchone() == (False,)
    ticket = operator.post("/api/v1/tickets", json={"type": "complaint", "summary": "ok"})
    assert ticket.status_code == 201, ticket.text
    note = operator.patch(f"/api/v1/tickets/{ticket.json()['id']}", json={"note": NUL})
    assert (note.status_code, note.json()["error"]["code"]) == (422, "validation_error")
    site = client_for("admin").put("/api/v1/sites/NUL1", json={"name": NUL})
    assert site.status_code == 422
    assert world.execute("SELECT count(*) FROM sites WHERE code = 'NUL1'").fetchone() == (0,)


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/shipments/S-BIG", {"origin": "DOCK-1", "destination": "GF", "customer": "C", "vehicle": "V",
                                 "lines": [{"sku": "SKU-A", "qty": 1}] * 1001}),
    ("/api/v1/geofences/GF-BIG", {"type": "polygon", "coordinates": [[i / 1000, 1.0] for i in range(2001)]}),
    ("/api/v1/devices/GATE-BIG", {"kind": "rfid_gate", "gate": {
        "outer": {"antennas": list(range(65)), "location": "DOCK-1"},
        "inner": {"antennas": [1], "location": "DOCK-1"}}}),
], ids=["shipment-lines", "polygon-vertices", "gate-antennas"])
def test_lists_in_bodies_are_capped(world: psycopg.Connection, client_for: ClientFor, path: str,
                                    body: dict[str, Any]) -> None:
    response = client_for("admin").put(path, json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "validation_error"), response.text
    assert "at most" in response.json()["error"]["message"]


@pytest.mark.parametrize("last_id", ["²", "١٢", "12a", "-1", "99999999999999999999", "1e3"])
def test_malformed_last_event_id_is_400(world: psycopg.Connection, client_for: ClientFor, last_id: str) -> None:
    response = client_for("viewer").get("/api/v1/events/stream", params={"lastEventId": last_id})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request"), response.text
    assert "Last-Event-ID" in response.json()["error"]["message"]


def test_non_ascii_digits_in_the_last_event_id_header_are_400(world: psycopg.Connection,
                                                              client_for: ClientFor) -> None:
    for raw in ("²".encode(), "١٢".encode(), b"\xb2"):  # superscript two, Arabic-Indic digits, latin-1 '²'
        response = client_for("viewer").get("/api/v1/events/stream", headers={"Last-Event-ID": raw})  # type: ignore[dict-item]
        assert response.status_code == 400, (raw, response.text)


def test_only_admins_cancel_shipments(world: psycopg.Connection, client_for: ClientFor) -> None:
    world.execute("INSERT INTO shipments (ref, origin, destination, customer, vehicle, public_token) "
                  "VALUES ('SHP-C', 'STAGE-1', 'GF-CUST', 'CUST-1', 'TRUCK-1', 'tok-shp-c')")
    refused = client_for("operator").post("/api/v1/shipments/SHP-C/cancel")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    assert world.execute("SELECT status FROM shipments WHERE ref = 'SHP-C'").fetchone() != ("cancelled",)
    assert client_for("admin").post("/api/v1/shipments/SHP-C/cancel").status_code == 200


def test_docs_are_served_without_any_cdn(world: psycopg.Connection, client_for: ClientFor) -> None:
    client = client_for("viewer")
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "http://" not in docs.text.replace("http://www.w3.org", "") and "https://" not in docs.text
    assert "cdn" not in docs.text.lower()
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 10_000, asset


@pytest.mark.parametrize("depth", [50, 5_000])
def test_deep_or_long_cursors_are_400(world: psycopg.Connection, client_for: ClientFor, depth: int) -> None:
    import base64

    forged = base64.urlsafe_b64encode(b"[" * depth + b"]" * depth).decode().rstrip("=")
    response = client_for("viewer").get("/api/v1/dead-letters", params={"cursor": forged})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_cursor")
