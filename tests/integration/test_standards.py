"""Issue 11 through the real pipeline and API: a day of traffic exported as EPCIS 2.0 and checked
against GS1's JSON Schema with URI format checking; the EPCIS query parameters and paging; the
shipment's sensor data and the rule that keeps exported ids fixed; a driver's handheld delivery;
AI (37) = 0 as a clear dead letter; cumulative_s through PUT /profiles."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from core.epcis_hash import event_hash
from devices.broker_accounts import BrokerAccounts
from ingest.decode import Inbound
from runtime.settings import Settings
from simulators.scenarios import plan_scenario
from simulators.scenarios.base import ScenarioOptions
from tests.integration.world import GTIN_A, GTIN_B, PREFIX, T0, apply, build_world, gs1, scan
from tests.unit.test_epcis import schema_errors

pytestmark = pytest.mark.integration

BASE = "urn:cargotrace:location:"
SERIAL = "AB/12%"  # needs percent-encoding in a Digital Link


def reading(minutes: float, temp: float, received: datetime | None = None) -> Inbound:
    body = {"msg_id": f"e{minutes:08.3f}", "ts": (T0 + timedelta(minutes=minutes)).isoformat(), "temp_c": temp}
    return Inbound(f"{PREFIX}/dev/TS-1/env", orjson.dumps(body), received or T0 + timedelta(days=1))


def day_of_traffic(db: psycopg.Connection) -> None:
    build_world(db)
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c, delay_s, hysteresis_c) "
               "VALUES ('CHILLED', 2, 8, 300, 0.5)")
    db.execute("UPDATE shipments SET profile = 'CHILLED', lines = %s WHERE ref = 'SHP-1'",
               (orjson.dumps([{"sku": "SKU-B", "qty": 2}]).decode(),))
    # A driver's handheld: a scanner with no location and no default mode.
    db.execute("INSERT INTO devices (device_id, kind, site, vehicle) VALUES ('TS-1', 'env_sensor', 'DC1', 'TRUCK-1')")
    db.execute("INSERT INTO devices (device_id, kind, site) VALUES ('HH-1', 'scanner', 'DC1')")
    apply(db, [scan("SC-1", "r1", gs1(GTIN_A, lot="L7", expiry="261231"), 0, qty=24),
               scan("SC-1", "r2", gs1(GTIN_B, serial=SERIAL), 1),
               scan("SC-1", "r3", gs1(GTIN_B), 1.5, qty=4),
               scan("SC-2", "p1", gs1(GTIN_B, serial=SERIAL), 2, mode="putaway", location="DOCK-1",
                    to_location="BIN-A1")])
    apply(db, [scan("SC-2", "c1", gs1(GTIN_B), 10, mode="count", qty=0)])
    apply(db, [scan("SC-2", "m1", gs1(GTIN_B, serial=SERIAL), 5, mode="move", to_location="BIN-A2")])  # late
    apply(db, [scan("SC-2", "s1", gs1(GTIN_B), 20, mode="ship", location="DOCK-1", qty=2, ref="SHP-1")])
    trip = [reading(20 + m, 5.0) for m in range(0, 10)] + [reading(30 + m, 11.0) for m in range(0, 8)] + \
           [reading(38 + m, 5.0) for m in range(0, 10)]
    apply(db, trip)
    apply(db, [scan("HH-1", "d1", gs1(GTIN_B), 50, mode="deliver", qty=2, ref="SHP-1")])
    apply(db, [scan("SC-1", "ret1", gs1(GTIN_A, lot="L7"), 70, mode="return", location="RET-1", qty=1,
                    ref="RMA-1")])


def client(db: psycopg.Connection, api_settings: Settings, grace_s: int) -> TestClient:
    settings = api_settings.model_copy(update={"epcis_sensor_grace_s": grace_s})
    token = create_token(db, "viewer", "standards")
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})


def all_pages(api: TestClient, limit: int, **params: Any) -> tuple[list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    pages = 0
    response = api.get("/api/v1/epcis/events", params={"limit": limit, **params})
    while True:
        assert response.status_code == 200, response.text
        doc = response.json()
        assert schema_errors(doc) == [], schema_errors(doc)[:5]
        events.extend(doc["epcisBody"]["eventList"])
        pages += 1
        token = response.headers.get("gs1-next-page-token")
        if token is None:
            return events, pages
        response = api.get("/api/v1/epcis/events", params={"nextPageToken": token, "limit": limit})


def test_a_day_of_traffic_exports_schema_valid_epcis_with_hash_ids_and_sensor_data(
        db: psycopg.Connection, api_settings: Settings) -> None:
    day_of_traffic(db)
    assert db.execute("SELECT status FROM shipments WHERE ref = 'SHP-1'").fetchone() == ("delivered",)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    with client(db, api_settings, grace_s=0) as api:
        events, pages = all_pages(api, limit=3)
        assert pages >= 4
        whole = api.get("/api/v1/epcis/events").json()
        assert schema_errors(whole) == []
    assert [e["eventID"] for e in events] == [e["eventID"] for e in whole["epcisBody"]["eventList"]]
    plain = [e for e in events if "errorDeclaration" not in e]
    assert len({e["eventID"] for e in plain}) == len(plain)
    for e in events:
        assert e["eventID"] == event_hash(e) and e["eventID"].endswith("?ver=CBV2.0")
        assert "ilmd" not in e and e["action"] == "OBSERVE"
    steps = [e["bizStep"] for e in plain]
    assert {"receiving", "storing", "cycle_counting", "loading", "arriving", "sensor_reporting"} <= set(steps)
    assert f"https://id.gs1.org/01/{GTIN_B}/21/AB%2F12%25" in {epc for e in plain for epc in e.get("epcList", [])}
    returned = [e for e in plain if e.get("disposition") == "returned"]
    assert returned and returned[0]["bizStep"] == "receiving"
    assert returned[0]["bizTransactionList"] == [{"type": "rma", "bizTransaction": "urn:cargotrace:ref:RMA-1"}]
    declared = [e for e in events if "errorDeclaration" in e]
    assert declared and all(d["eventID"] in {p["eventID"] for p in plain} for d in declared)
    # The handheld's delivery went from the truck to the customer.
    (delivery,) = [e for e in plain if e["bizStep"] == "arriving"]
    assert delivery["sourceList"][0]["source"] == BASE + "TRUCK-1" and delivery["bizLocation"]["id"] == BASE + "CUST-1"
    (sensors,) = [e for e in plain if e["bizStep"] == "sensor_reporting"]
    assert sensors["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{GTIN_B}", "quantity": 2}]
    reports = [r for element in sensors["sensorElementList"] for r in element["sensorReport"]]
    assert {"type": "Temperature", "minValue": 5, "maxValue": 11, "meanValue": 6.71, "uom": "CEL"} in reports
    assert any(r.get("exception") == "ALARM_CONDITION" and r.get("maxValue") == 11 for r in reports)


def test_sensor_data_waits_for_the_window_and_a_late_reading_never_changes_an_exported_event(
        db: psycopg.Connection, api_settings: Settings) -> None:
    day_of_traffic(db)
    with client(db, api_settings, grace_s=3600) as api:  # delivered just now: the window is open
        steps = [e["bizStep"] for e in api.get("/api/v1/epcis/events").json()["epcisBody"]["eventList"]]
        assert "arriving" in steps and "sensor_reporting" not in steps
    with client(db, api_settings, grace_s=0) as api:
        first = api.get("/api/v1/epcis/events", params={"EQ_bizStep": "sensor_reporting"}).json()
        (published,) = first["epcisBody"]["eventList"]
        again = api.get("/api/v1/epcis/events", params={"EQ_bizStep": "sensor_reporting"}).json()
        assert again["epcisBody"]["eventList"] == [published]  # polled again: byte for byte the same event
        # A buffered reading of the trip arrives now, after the window was closed and exported.
        apply(db, [reading(45.5, 14.0, received=datetime.now(UTC))])
        later = api.get("/api/v1/epcis/events", params={"EQ_bizStep": "sensor_reporting"}).json()
    assert schema_errors(later) == []
    original, declared, corrective = later["epcisBody"]["eventList"]
    assert original == published and "errorDeclaration" not in original
    assert declared["eventID"] == published["eventID"] == event_hash(declared) == event_hash(published)
    assert {k: v for k, v in declared.items() if k not in ("errorDeclaration", "recordTime")} == \
        {k: v for k, v in published.items() if k != "recordTime"}
    assert declared["errorDeclaration"]["correctiveEventIDs"] == [corrective["eventID"]]
    assert corrective["eventID"] != published["eventID"] and corrective["eventID"] == event_hash(corrective)
    reports = [r for element in corrective["sensorElementList"] for r in element["sensorReport"]]
    assert any(r.get("maxValue") == 14 for r in reports)


def test_query_parameters_select_what_the_standard_says(db: psycopg.Connection, api_settings: Settings) -> None:
    day_of_traffic(db)
    with client(db, api_settings, grace_s=0) as api:
        def ids(**params: Any) -> list[str]:
            response = api.get("/api/v1/epcis/events", params=params)
            assert response.status_code == 200, response.text
            assert schema_errors(response.json()) == []
            return [e["eventID"] for e in response.json()["epcisBody"]["eventList"]]

        def events(**params: Any) -> list[dict[str, Any]]:
            return list(api.get("/api/v1/epcis/events", params=params).json()["epcisBody"]["eventList"])

        everything = events()
        assert ids(eventType="ObjectEvent") == [e["eventID"] for e in everything]
        assert ids(eventType="AggregationEvent") == []
        assert ids(eventType="AggregationEvent,ObjectEvent") == [e["eventID"] for e in everything]
        window = events(GE_eventTime=(T0 + timedelta(minutes=1)).isoformat(),
                        LT_eventTime=(T0 + timedelta(minutes=2)).isoformat())
        assert {e["eventTime"] for e in window} == {"2026-11-20T08:01:00.000Z", "2026-11-20T08:01:30.000Z"}
        for step in ("receiving", "https://ref.gs1.org/cbv/BizStep-receiving", "urn:epcglobal:cbv:bizstep:receiving"):
            assert {e["bizStep"] for e in events(EQ_bizStep=step)} == {"receiving"}
        assert {e["disposition"] for e in events(EQ_bizStep="receiving")} >= {"in_progress", "returned"}
        at_customer = events(EQ_bizLocation=BASE + "CUST-1")
        assert {e["bizStep"] for e in at_customer} == {"arriving", "sensor_reporting"}
        epc = f"https://id.gs1.org/01/{GTIN_B}/21/AB%2F12%25"
        serial = events(MATCH_epc=epc)
        assert serial and all(e["epcList"] == [epc] for e in serial)
        assert [e["bizStep"] for e in serial if "errorDeclaration" not in e] == ["receiving", "storing", "storing"]
        assert ids(MATCH_epc=f"https://example.com/01/{GTIN_B}/21/AB%2F12%25") == [e["eventID"] for e in serial]
        lot = events(MATCH_epcClass=f"https://id.gs1.org/01/{GTIN_A}/10/L7")
        assert [e["bizStep"] for e in lot] == ["receiving", "receiving"]
        plain_b = events(MATCH_epcClass=f"https://id.gs1.org/01/{GTIN_B}")
        assert {e["bizStep"] for e in plain_b} >= {"receiving", "loading", "arriving", "sensor_reporting"}
        assert ids(MATCH_epcClass=f"https://id.gs1.org/01/{GTIN_A}/10/NOPE") == []
        combined = events(EQ_bizStep="receiving", MATCH_epcClass=f"https://id.gs1.org/01/{GTIN_A}/10/L7",
                          LT_eventTime=(T0 + timedelta(minutes=60)).isoformat())
        assert len(combined) == 1 and combined[0]["quantityList"][0]["quantity"] == 24
        # Paging keeps the query: the token alone continues it.
        first = api.get("/api/v1/epcis/events", params={"EQ_bizStep": "receiving", "limit": 1})
        token = first.headers["gs1-next-page-token"]
        rest, _ = all_pages(api, 100, nextPageToken=token)
        assert [first.json()["epcisBody"]["eventList"][0]["eventID"], *(e["eventID"] for e in rest)] == \
            ids(EQ_bizStep="receiving")
        assert 'rel="next"' in first.headers["link"] and "nextPageToken=" in first.headers["link"]


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),   # signature changed
    lambda t: "A" + t,                                     # body changed
    lambda t: t.split(".")[0],                             # signature dropped
    lambda t: "not-a-token",
])
def test_a_tampered_next_page_token_is_a_400(db: psycopg.Connection, api_settings: Settings,
                                             mangle: Callable[[str], str]) -> None:
    day_of_traffic(db)
    with client(db, api_settings, grace_s=0) as api:
        token = api.get("/api/v1/epcis/events", params={"limit": 1}).headers["gs1-next-page-token"]
        response = api.get("/api/v1/epcis/events", params={"nextPageToken": mangle(token)})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_cursor"


@pytest.mark.parametrize(("params", "fragment"), [({"GE_eventTime": "yesterday"}, "GE_eventTime"),
                                                  ({"LT_eventTime": "2026-01-01T00:00:00"}, "offset"),
                                                  ({"eventType": "Banana"}, "eventType")])
def test_a_malformed_query_parameter_is_a_400(db: psycopg.Connection, api_settings: Settings,
                                              params: dict[str, str], fragment: str) -> None:
    with client(db, api_settings, grace_s=0) as api:
        response = api.get("/api/v1/epcis/events", params=params)
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]


def test_zero_count_is_a_clear_dead_letter_and_nothing_else_is_lost(db: psycopg.Connection) -> None:
    build_world(db)
    apply(db, [scan("SC-1", "z1", "]C101" + GTIN_A + "370", 0),
               scan("SC-1", "z2", gs1(GTIN_B), 1, qty=3)])
    assert db.execute("SELECT reason FROM dead_letters").fetchall() == [("invalid_count",)]
    assert db.execute("SELECT count(*), sum(qty) FROM movements").fetchone() == (1, 3)


def test_handheld_delivery_without_location_delivers_the_shipment(db: psycopg.Connection) -> None:
    build_world(db)
    db.execute("INSERT INTO devices (device_id, kind, site) VALUES ('HH-1', 'scanner', 'DC1')")
    apply(db, [scan("SC-2", "s1", gs1(GTIN_B), 0, mode="ship", location="STAGE-1", qty=2, ref="SHP-1"),
               scan("HH-1", "d1", gs1(GTIN_B), 30, mode="deliver", qty=2, ref="SHP-1")])
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    assert db.execute("SELECT status FROM shipments WHERE ref = 'SHP-1'").fetchone() == ("delivered",)
    assert db.execute("SELECT from_location, to_location FROM movements WHERE biz_step = 'arriving'").fetchall() == \
        [("TRUCK-1", "CUST-1")]


def test_cumulative_s_is_settable_through_put_profiles(client_for: Callable[..., TestClient]) -> None:
    admin = client_for("admin")
    created = admin.put("/api/v1/profiles/FROZEN", json={"temp_min_c": -25, "temp_max_c": -18, "cumulative_s": 600})
    assert created.status_code == 201 and created.json()["cumulative_s"] == 600
    assert admin.get("/api/v1/profiles/FROZEN").json()["cumulative_s"] == 600
    cleared = admin.put("/api/v1/profiles/FROZEN", json={"temp_min_c": -25, "temp_max_c": -18})
    assert cleared.status_code == 200 and cleared.json()["cumulative_s"] is None
    assert admin.put("/api/v1/profiles/FROZEN", json={"temp_min_c": -25, "temp_max_c": -18,
                                                      "cumulative_s": 0}).status_code == 422


def test_the_simulated_normal_day_exports_schema_valid_epcis(db: psycopg.Connection, api_settings: Settings,
                                                              client_for: Callable[..., TestClient]) -> None:
    """The simulators' normal day (DC receipts and putaways, picks, trips with reefer sensors,
    deliveries, an RFID gate, a customer return), provisioned through the API and played through
    the pipeline in time order; its whole export is valid against GS1's schema."""
    now = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    _, plan = plan_scenario("normal-day", ScenarioOptions(seed=7, speedup=600, duration_s=22, run_id="std"), now)
    admin = client_for("admin")
    for path, body in plan.master:
        assert admin.put(f"/api/v1{path}", json=dict(body)).status_code in (200, 201), path
    with BrokerAccounts(api_settings) as accounts:  # the session broker may know these ids from another test
        for device in plan.devices:
            accounts.remove_device(device.device_id)
    for device in plan.devices:
        assert admin.put(f"/api/v1/devices/{device.device_id}", json=dict(device.body)).status_code in (200, 201)
    messages = sorted((m for stream in plan.streams.values() for m in stream), key=lambda m: m.at)
    inbound = [Inbound(f"{PREFIX}/dev/{m.device_id}/{m.kind}", m.payload, m.at) for m in messages]
    for start in range(0, len(inbound), 500):
        apply(db, inbound[start:start + 500])
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    with client(db, api_settings, grace_s=0) as api:
        events, _ = all_pages(api, limit=200)
    plain = [e for e in events if "errorDeclaration" not in e]
    assert len(plain) == db.execute("SELECT count(*) FROM movements WHERE reverses IS NULL").fetchone()[0] + \
        db.execute("SELECT count(*) FROM shipments WHERE status = 'delivered'").fetchone()[0]
    assert len({e["eventID"] for e in plain}) == len(plain)
    steps = {e["bizStep"] for e in plain}
    assert {"receiving", "storing", "picking", "loading", "arriving", "sensor_reporting"} <= steps
    assert any(e.get("disposition") == "returned" for e in plain)
    assert all(e["eventID"] == event_hash(e) for e in events)
