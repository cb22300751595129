"""ERP reads through the HTTP API (CONTRACT 2.3): stock, movements, dead letters and alarms.

Rows are inserted with SQL (as ingest and the ledger writer would leave them); the API must filter,
order, page and shape them as the contract says.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.integration.api_fixtures import ClientFor

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Json = dict[str, Any]


@pytest.fixture
def viewer(client_for: ClientFor) -> TestClient:
    return client_for("viewer", "erp")


@pytest.fixture
def operator(client_for: ClientFor) -> TestClient:
    return client_for("operator", "night-shift")


def items(response: Response) -> list[Json]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next"}
    result: list[Json] = body["items"]
    return result


def walk(client: TestClient, path: str, limit: int, **params: Any) -> list[Json]:
    """Every item of a list, following ``next`` with pages of ``limit``."""
    seen: list[Json] = []
    cursor = None
    while True:
        query = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        body = client.get(path, params=query).json()
        assert len(body["items"]) <= limit
        seen += body["items"]
        cursor = body["next"]
        if cursor is None:
            return seen


def bad_request(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# --- stock ---------------------------------------------------------------------------------------

@pytest.fixture
def balances(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO sites (code, name) VALUES ('BER', 'Berlin'), ('HAM', 'Hamburg')")
    db.execute("INSERT INTO locations (code, site, type) VALUES ('BER-A', 'BER', 'internal'), "
               "('BER-B', 'BER', 'internal'), ('HAM-A', 'HAM', 'internal')")
    rows = [("MILK", "BER-A", "", Decimal(12), None), ("MILK", "BER-A", "L7", Decimal("2.5"), "2026-12-31"),
            ("MILK", "HAM-A", "", Decimal(4), None), ("BOX", "BER-B", "", Decimal(0), None),
            ("BOX", "BER-A", "", Decimal(-1), None), ("TAPE", "HAM-A", "L1", Decimal(0), None)]
    with db.cursor() as cur:
        cur.executemany("INSERT INTO balances (sku, location, lot, qty, expiry) VALUES (%s, %s, %s, %s, %s)", rows)


@pytest.mark.usefixtures("balances")
def test_stock_lists_non_zero_balances_with_null_lot(viewer: TestClient) -> None:
    got = items(viewer.get("/api/v1/stock"))
    assert [(s["sku"], s["location"], s["lot"], s["qty"]) for s in got] == [
        ("BOX", "BER-A", None, -1), ("MILK", "BER-A", None, 12), ("MILK", "BER-A", "L7", 2.5),
        ("MILK", "HAM-A", None, 4)]
    lot = next(s for s in got if s["lot"] == "L7")
    assert lot["expiry"] == "2026-12-31"
    assert isinstance(lot["qty"], float) and isinstance(got[1]["qty"], int), "quantities are JSON numbers"


@pytest.mark.usefixtures("balances")
def test_stock_filters(viewer: TestClient) -> None:
    def keys(**params: str) -> list[tuple[str, str, str | None]]:
        return [(s["sku"], s["location"], s["lot"]) for s in items(viewer.get("/api/v1/stock", params=params))]

    assert keys(sku="MILK") == [("MILK", "BER-A", None), ("MILK", "BER-A", "L7"), ("MILK", "HAM-A", None)]
    assert keys(location="HAM-A") == [("MILK", "HAM-A", None)]
    assert keys(site="BER") == [("BOX", "BER-A", None), ("MILK", "BER-A", None), ("MILK", "BER-A", "L7")]
    assert keys(site="HAM", sku="MILK") == [("MILK", "HAM-A", None)]
    assert keys(sku="TAPE") == [], "a zero balance is not stock"
    assert keys(site="NOWHERE") == []


@pytest.mark.usefixtures("balances")
def test_stock_pages(viewer: TestClient) -> None:
    assert walk(viewer, "/api/v1/stock", 1) == items(viewer.get("/api/v1/stock"))
    assert walk(viewer, "/api/v1/stock", 2, site="BER") == items(viewer.get("/api/v1/stock", params={"site": "BER"}))
    bad_request(viewer.get("/api/v1/stock", params={"cursor": "!!"}), 400, "bad_cursor")
    bad_request(viewer.get("/api/v1/stock", params={"limit": 1001}), 422, "validation_error")


# --- movements -----------------------------------------------------------------------------------

@pytest.fixture
def movements(db: psycopg.Connection) -> list[int]:
    """Six movements; ids 3 and 4 share an event time; 6 reverses 5 and was recorded last."""
    rows = [
        (T0, "MILK", 10, "SUP-1", "BER-DOCK", "L7", None, "receiving", "PO-1", "scan-1", "m1", None, "scan"),
        (T0 + timedelta(minutes=5), "MILK", 10, "BER-DOCK", "BER-A", "L7", None, "storing", None, "scan-1", "m2",
         None, "scan"),
        (T0 + timedelta(minutes=9), "BOX", 1, "BER-A", "BER-STAGE", None, "SN-1", "picking", "SH-1", "scan-2", "m3",
         None, "scan"),
        (T0 + timedelta(minutes=9), "MILK", Decimal("2.5"), "BER-A", "BER-STAGE", "L7", None, "picking", "SH-1",
         "scan-2", "m4", None, "scan"),
        (T0 + timedelta(minutes=2), "MILK", 1, "BER-A", "LOSS", None, None, "cycle_counting", None, None, None, None,
         "count"),
    ]
    ids = []
    with db.cursor() as cur:
        for row in rows:
            got = cur.execute(
                "INSERT INTO movements (ts, sku, qty, from_location, to_location, lot, serial, biz_step, ref, "
                "device_id, msg_id, reverses, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING id", row).fetchone()
            assert got is not None
            ids.append(int(got[0]))
        got = cur.execute(
            "INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, source, reverses) "
            "VALUES (%s, 'MILK', 1, 'LOSS', 'BER-A', 'cycle_counting', 'correction', %s) RETURNING id",
            (T0 + timedelta(minutes=2), ids[4])).fetchone()
        assert got is not None
        ids.append(int(got[0]))
    return ids


def test_movements_newest_first_with_contract_fields(viewer: TestClient, movements: list[int]) -> None:
    got = items(viewer.get("/api/v1/movements"))
    # ts DESC, then id DESC for equal times.
    assert [m["id"] for m in got] == [movements[3], movements[2], movements[1], movements[5], movements[4],
                                      movements[0]]
    first = got[0]
    for field in ("id", "ts", "sku", "qty", "from_location", "to_location", "lot", "serial", "biz_step", "ref",
                  "device_id", "msg_id", "reverses"):
        assert field in first, field
    assert first["ts"] == "2026-11-24T12:09:00Z"
    assert first["qty"] == 2.5 and got[1]["qty"] == 1
    assert (first["from_location"], first["to_location"], first["lot"], first["ref"]) == \
        ("BER-A", "BER-STAGE", "L7", "SH-1")
    assert got[1]["serial"] == "SN-1"
    correction = next(m for m in got if m["source"] == "correction")
    assert correction["reverses"] == movements[4]
    assert correction["recorded_at"].endswith("Z")


def test_movement_filters(viewer: TestClient, movements: list[int]) -> None:
    def ids(**params: str) -> list[int]:
        return [m["id"] for m in items(viewer.get("/api/v1/movements", params=params))]

    assert ids(sku="BOX") == [movements[2]]
    assert ids(ref="SH-1") == [movements[3], movements[2]]
    # location matches either side
    assert ids(location="BER-DOCK") == [movements[1], movements[0]]
    assert ids(location="LOSS") == [movements[5], movements[4]]
    # since inclusive, until exclusive, on event time
    assert ids(since="2026-11-24T12:05:00Z") == [movements[3], movements[2], movements[1]]
    assert ids(until="2026-11-24T12:05:00Z") == [movements[5], movements[4], movements[0]]
    assert ids(since="2026-11-24T13:02:00+01:00", until="2026-11-24T12:09:00Z", sku="MILK") == \
        [movements[1], movements[5], movements[4]]
    bad_request(viewer.get("/api/v1/movements", params={"since": "2026-11-24T12:00:00"}), 422, "validation_error")
    bad_request(viewer.get("/api/v1/movements", params={"since": "yesterday"}), 422, "validation_error")
    bad_request(viewer.get("/api/v1/movements", params={"since": "2026-11-24T13:00:00Z",
                                                        "until": "2026-11-24T12:00:00Z"}), 422, "validation_error")


def test_movements_page_stably(viewer: TestClient, movements: list[int], db: psycopg.Connection) -> None:
    everything = items(viewer.get("/api/v1/movements"))
    for limit in (1, 2, 4):
        assert walk(viewer, "/api/v1/movements", limit) == everything
    assert walk(viewer, "/api/v1/movements", 1, sku="MILK") == [m for m in everything if m["sku"] == "MILK"]

    # A movement appended after the first page was read does not shift the pages that follow.
    first = viewer.get("/api/v1/movements", params={"limit": 2}).json()
    db.execute("INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, source) "
               "VALUES (%s, 'NEW', 1, 'A', 'B', 'storing', 'api')", (T0 + timedelta(hours=1),))
    rest = _from_cursor(viewer, first["next"])
    assert first["items"] + rest == everything
    bad_request(viewer.get("/api/v1/movements", params={"cursor": "WyJtb3ZlbWVudHMiLCJ4Il0"}), 400, "bad_cursor")


def _from_cursor(client: TestClient, cursor: str) -> list[Json]:
    seen: list[Json] = []
    next_cursor: str | None = cursor
    while next_cursor:
        body = client.get("/api/v1/movements", params={"limit": 2, "cursor": next_cursor}).json()
        seen += body["items"]
        next_cursor = body["next"]
    return seen


# --- dead letters --------------------------------------------------------------------------------

def _dead_letter(db: psycopg.Connection, received_at: datetime, device: str | None, reason: str,
                 payload: bytes) -> int:
    row = db.execute(
        "INSERT INTO dead_letters (received_at, last_received_at, topic, device_id, reason, detail, payload, "
        "payload_size, fingerprint, occurrences, element_index) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 2, 0) RETURNING id",
        (received_at, received_at + timedelta(minutes=1), f"cargotrace/v1/dev/{device}/scan", device, reason,
         f"{reason} details", payload, len(payload), received_at.isoformat().encode() + payload)).fetchone()
    assert row is not None
    return int(row[0])


def test_dead_letters(viewer: TestClient, db: psycopg.Connection) -> None:
    text = _dead_letter(db, T0, "scan-1", "malformed_json", b'{"msg_id": "m1", "code": ')
    binary_payload = b"\xff\xfe\x00\x81 not utf-8"
    binary = _dead_letter(db, T0 + timedelta(minutes=1), "scan-2", "malformed_json", binary_payload)
    unknown = _dead_letter(db, T0 + timedelta(minutes=2), None, "unknown_device", '{"ü": 1}'.encode())

    got = items(viewer.get("/api/v1/dead-letters"))
    assert [d["id"] for d in got] == [unknown, binary, text], "newest first"
    by_id = {d["id"]: d for d in got}
    assert by_id[text]["payload"] == '{"msg_id": "m1", "code": ' and by_id[text]["payload_encoding"] == "utf-8"
    assert by_id[unknown]["payload"] == '{"ü": 1}'
    assert by_id[binary]["payload_encoding"] == "base64"
    assert base64.b64decode(by_id[binary]["payload"]) == binary_payload
    first = by_id[text]
    assert (first["received_at"], first["topic"], first["device_id"], first["reason"]) == \
        ("2026-11-24T12:00:00Z", "cargotrace/v1/dev/scan-1/scan", "scan-1", "malformed_json")
    assert (first["detail"], first["occurrences"], first["element_index"], first["payload_size"]) == \
        ("malformed_json details", 2, 0, 25)
    assert (first["replayed_at"], first["replay_result"]) == (None, None)

    assert [d["id"] for d in items(viewer.get("/api/v1/dead-letters", params={"device": "scan-2"}))] == [binary]
    assert [d["id"] for d in items(viewer.get("/api/v1/dead-letters", params={"reason": "unknown_device"}))] == \
        [unknown]
    assert walk(viewer, "/api/v1/dead-letters", 1) == got


# --- alarms --------------------------------------------------------------------------------------

@pytest.fixture
def alarms(db: psycopg.Connection) -> dict[str, int]:
    rows = {
        "hot": ("temperature_high", "critical", "active", "env-1", "SH-1", "TRUCK-7", "env-1", T0, None, 9.5),
        "offline": ("device_offline", "warning", "cleared", "scan-1", None, None, "scan-1",
                    T0 - timedelta(hours=1), T0 - timedelta(minutes=30), None),
        "battery": ("battery_low", "warning", "active", "scan-1", None, None, "scan-1",
                    T0 + timedelta(minutes=1), None, 7.0),
    }
    ids = {}
    for name, row in rows.items():
        got = db.execute(
            "INSERT INTO alarms (type, severity, state, device_id, shipment, location, subject, started_at, "
            "cleared_at, peak_value, message) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (*row, f"{name} alarm")).fetchone()
        assert got is not None
        ids[name] = int(got[0])
    return ids


def test_alarm_listing_and_filters(viewer: TestClient, alarms: dict[str, int]) -> None:
    got = items(viewer.get("/api/v1/alarms"))
    assert [a["id"] for a in got] == [alarms["battery"], alarms["hot"], alarms["offline"]], "newest first"
    hot = next(a for a in got if a["id"] == alarms["hot"])
    assert {k: hot[k] for k in ("type", "severity", "state", "acknowledged", "device_id", "shipment", "location",
                                "started_at", "cleared_at", "peak_value", "message")} == {
        "type": "temperature_high", "severity": "critical", "state": "active", "acknowledged": False,
        "device_id": "env-1", "shipment": "SH-1", "location": "TRUCK-7", "started_at": "2026-11-24T12:00:00Z",
        "cleared_at": None, "peak_value": 9.5, "message": "hot alarm"}

    def ids(**params: str) -> list[int]:
        return [a["id"] for a in items(viewer.get("/api/v1/alarms", params=params))]

    assert ids(state="active") == [alarms["battery"], alarms["hot"]]
    assert ids(state="cleared") == [alarms["offline"]]
    assert ids(type="temperature_high") == [alarms["hot"]]
    assert ids(device="scan-1") == [alarms["battery"], alarms["offline"]]
    assert ids(device="scan-1", state="active") == [alarms["battery"]]
    assert ids(shipment="SH-1") == [alarms["hot"]]
    assert walk(viewer, "/api/v1/alarms", 1) == got
    bad_request(viewer.get("/api/v1/alarms", params={"state": "open"}), 422, "validation_error")


def test_operator_acknowledges_an_alarm(operator: TestClient, viewer: TestClient, db: psycopg.Connection,
                                        alarms: dict[str, int]) -> None:
    response = operator.post(f"/api/v1/alarms/{alarms['hot']}/ack", json={"note": "truck door closed"})
    assert response.status_code == 200, response.text
    acked = response.json()
    assert acked["id"] == alarms["hot"] and acked["acknowledged"] is True and acked["state"] == "active"
    assert acked["ack_by"] == "night-shift" and acked["ack_note"] == "truck door closed"
    assert acked["ack_at"].endswith("Z")
    row = db.execute("SELECT acknowledged, ack_by, ack_note, ack_at IS NOT NULL FROM alarms WHERE id = %s",
                     (alarms["hot"],)).fetchone()
    assert row == (True, "night-shift", "truck door closed", True)
    assert viewer.get(f"/api/v1/alarms/{alarms['hot']}").json() == acked

    # A retry (or a second operator) keeps the first acknowledgement.
    again = operator.post(f"/api/v1/alarms/{alarms['hot']}/ack", json={"note": "second"})
    assert again.status_code == 200 and again.json() == acked

    # The note is optional; no body at all works.
    bare = operator.post(f"/api/v1/alarms/{alarms['battery']}/ack")
    assert bare.status_code == 200 and bare.json()["acknowledged"] is True and bare.json()["ack_note"] is None
    assert [a["id"] for a in items(viewer.get("/api/v1/alarms", params={"state": "active"}))] == \
        [alarms["battery"], alarms["hot"]], "acknowledging does not clear"

    bad_request(operator.post("/api/v1/alarms/999999/ack"), 404, "not_found")
    bad_request(operator.post("/api/v1/alarms/abc/ack"), 422, "validation_error")
    bad_request(operator.post(f"/api/v1/alarms/{alarms['offline']}/ack", json={"note": 5}), 422, "validation_error")
    assert db.execute("SELECT acknowledged FROM alarms WHERE id = %s", (alarms["offline"],)).fetchone() == (False,)
