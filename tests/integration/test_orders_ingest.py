"""Scans working pick tasks through the real ingest pipeline: refusals move nothing and owe feedback,
short picks backorder, arrivals fill backorders, loading and delivery drive the order's status."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.decode import Inbound
from tests.integration.api_fixtures import ClientFor
from tests.integration.db_fixtures import truncate_all
from tests.integration.world import GTIN_A, GTIN_B, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration
Json = dict[str, Any]
SOON = gs1(GTIN_A, lot="L-SOON", expiry="261231")
LATE = gs1(GTIN_A, lot="L-LATE", expiry="270131")


def stock_up(db: psycopg.Connection) -> None:
    build_world(db)
    apply(db, [scan("SC-1", "r1", LATE, 0, qty=5, location="BIN-A1"),
               scan("SC-1", "r2", SOON, 1, qty=5, location="BIN-A2"),
               scan("SC-1", "r3", gs1(GTIN_B), 2, qty=10, location="BIN-A1")])


@pytest.fixture
def operator(client_for: ClientFor, db: psycopg.Connection) -> TestClient:
    stock_up(db)
    return client_for("operator")


def ok(response: Any) -> Json:
    assert response.status_code in (200, 201), response.text
    body: Json = response.json()
    return body


def release(client: TestClient, ref: str, qty: int = 7) -> Json:
    ok(client.put(f"/api/v1/orders/{ref}", json={"customer": "CUST-1", "site": "DC1", "shipments": ["SHP-1"],
                                                 "lines": [{"sku": "SKU-A", "qty": qty}]}))
    return ok(client.post(f"/api/v1/orders/{ref}/release", json={"device": "SC-2"}))


def pick(msg: str, code: str, where: str, minutes: float, qty: int, **extra: object) -> Inbound:
    return scan("SC-2", msg, code, minutes, mode="pick", location=where, qty=qty, **extra)


def feedback(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT msg_id, ok, reason, task_id FROM scan_feedback ORDER BY id").fetchall()


def moved(db: psycopg.Connection, msg: str) -> int:
    row = db.execute("SELECT count(*) FROM movements WHERE msg_id = %s", (msg,)).fetchone()
    return int(row[0]) if row else 0


def test_wrong_item_lot_and_bin_are_refused_with_feedback_and_move_nothing(operator: TestClient,
                                                                           db: psycopg.Connection) -> None:
    tasks = release(operator, "SO-1")["tasks"]
    soon = next(t for t in tasks if t["lot"] == "L-SOON")
    other_lot = gs1(GTIN_A, lot="L-X", expiry="270131")
    apply(db, [pick("w-bin", SOON, "BIN-A1", 10, 5), pick("w-lot", other_lot, "BIN-A2", 11, 5),
               pick("w-item", gs1(GTIN_B), "BIN-A1", 12, 1)])
    assert [(m, o, r) for m, o, r, _ in feedback(db)] == [
        ("w-bin", False, "wrong_bin"), ("w-lot", False, "wrong_lot"), ("w-item", False, "wrong_item")]
    assert sum(moved(db, m) for m in ("w-bin", "w-lot", "w-item")) == 0
    assert db.execute("SELECT count(*) FROM scans WHERE msg_id LIKE 'w-%'").fetchone() == (3,)  # stored, not dead
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    apply(db, [pick("good", SOON, "BIN-A2", 13, 5)])
    assert feedback(db)[-1] == ("good", True, "done", soon["task_id"])
    assert moved(db, "good") == 1
    order = ok(operator.get("/api/v1/orders/SO-1"))
    assert order["status"] == "picking"
    assert order["lines"][0]["picked"] == 5
    done = next(t for t in order["tasks"] if t["task_id"] == soon["task_id"])
    # the refusals are recorded against the task the scanner was sent to (its first open task for a wrong item)
    assert done["status"] == "done" and [s["msg_id"] for s in done["scans"]] == ["w-bin", "w-lot", "w-item", "good"]
    assert [s["ok"] for s in done["scans"]] == [False, False, False, True]
    assert db.execute("SELECT coalesce(sum(qty), 0) FROM reservations WHERE task_id = %s",
                      (soon["task_id"],)).fetchone() == (Decimal(0),)
    # every change of SC-2's list raised its version
    versions = db.execute("SELECT version FROM device_task_versions WHERE device_id = 'SC-2'").fetchone()
    assert versions is not None and versions[0] >= 2


def test_short_pick_backorders_the_rest_and_an_arrival_fills_it(operator: TestClient, db: psycopg.Connection) -> None:
    release(operator, "SO-2")
    apply(db, [pick("p1", SOON, "BIN-A2", 10, 5), pick("p2", LATE, "BIN-A1", 11, 1, short=True)])
    assert [(m, o, r) for m, o, r, _ in feedback(db)] == [("p1", True, "done"), ("p2", True, "short")]
    order = ok(operator.get("/api/v1/orders/SO-2"))
    assert order["status"] == "partially_picked"
    assert (order["lines"][0]["picked"], order["lines"][0]["backordered"]) == (6, 1)
    # 3 more arrive on a shelf: the backorder is allocated and a new task appears for a scanner
    apply(db, [scan("SC-1", "r9", LATE, 20, qty=3, location="BIN-A1")])
    order = ok(operator.get("/api/v1/orders/SO-2"))
    assert order["lines"][0]["backordered"] == 0
    new = [t for t in order["tasks"] if t["status"] == "open"]
    assert len(new) == 1 and new[0]["qty"] == 1 and new[0]["lot"] == "L-LATE"


def test_task_closed_short_through_the_api(operator: TestClient, db: psycopg.Connection) -> None:
    tasks = release(operator, "SO-3")["tasks"]
    late = next(t for t in tasks if t["lot"] == "L-LATE")
    closed = ok(operator.post(f"/api/v1/tasks/{late['task_id']}/short"))
    assert closed["status"] == "short"
    assert operator.post(f"/api/v1/tasks/{late['task_id']}/short").status_code == 409
    assert ok(operator.get("/api/v1/orders/SO-3"))["lines"][0]["backordered"] == 2


def _full_day() -> list[Inbound]:
    return [pick("p1", SOON, "BIN-A2", 10, 5), pick("p2", LATE, "BIN-A1", 11, 2),
            scan("SC-2", "s1", SOON, 30, mode="ship", location="STAGE-1", qty=5, ref="SHP-1"),
            scan("SC-2", "s2", LATE, 31, mode="ship", location="STAGE-1", qty=2, ref="SHP-1"),
            scan("SC-2", "d1", SOON, 90, mode="deliver", qty=5, ref="SHP-1", location="TRUCK-1")]


def _state(client: TestClient) -> tuple[object, ...]:
    o = ok(client.get("/api/v1/orders/SO-4"))
    return (o["status"], [(ln["allocated"], ln["picked"], ln["shipped"], ln["delivered"]) for ln in o["lines"]],
            o["shipments"], [(e["ts"], e["type"], e["detail"]) for e in o["events"] if e["type"] != "released"
                             and e["type"] != "allocated"])


def test_order_status_follows_picks_loading_and_delivery_whatever_the_arrival_order(
        client_for: ClientFor, db: psycopg.Connection) -> None:
    results = []
    for seed in (None, 1, 2):
        truncate_all(db)
        stock_up(db)
        client = client_for("operator")
        assert len(release(client, "SO-4")["tasks"]) == 2
        messages = _full_day()
        if seed is None:
            for m in messages:
                apply(db, [m])
        else:
            rng = random.Random(seed)
            messages = messages + [messages[rng.randrange(len(messages))] for _ in range(2)]
            rng.shuffle(messages)
            for i in range(0, len(messages), 2):
                apply(db, messages[i:i + 2])
        results.append(_state(client))
    assert results[0][0] == "delivered"
    assert results[0][1] == [(7, 7, 7, 7)]
    assert results[1] == results[0] and results[2] == results[0]


def alarms(db: psycopg.Connection) -> set[tuple[str, str, str | None]]:
    return {(r[0], r[1], r[2]) for r in db.execute("SELECT type, state, lot FROM alarms WHERE type = ANY(%s)",
                                                    (["stock_low", "lot_expiring", "receipt_exception"],))}


def test_early_warnings_and_receipt_exceptions_open_and_clear(db: psycopg.Connection) -> None:
    from datetime import date, timedelta
    build_world(db)
    db.execute("UPDATE items SET reorder_point = 12 WHERE sku = 'SKU-A'")
    db.execute("INSERT INTO purchase_orders (ref, supplier, site, lines) VALUES ('PO-9', 'SUP-ACME', 'DC1', "
               "'[{\"sku\": \"SKU-A\", \"qty\": 4}]')")
    soon = (date.today() + timedelta(days=10)).strftime("%y%m%d")
    apply(db, [scan("SC-1", "r1", gs1(GTIN_A, lot="L-OLD", expiry=soon), 0, qty=5, location="BIN-A1", ref="PO-9")])
    assert alarms(db) == {("stock_low", "active", None), ("lot_expiring", "active", "L-OLD"),
                          ("receipt_exception", "active", None)}
    apply(db, [scan("SC-1", "r2", LATE, 1, qty=15, location="BIN-A1"),
               scan("SC-2", "m1", gs1(GTIN_A, lot="L-OLD", expiry=soon), 2, mode="move", location="BIN-A1",
                    to_location="LOSS-1", qty=5)])
    assert alarms(db) == {("stock_low", "cleared", None), ("lot_expiring", "cleared", "L-OLD"),
                          ("receipt_exception", "active", None)}


def test_stock_out_risk_from_the_consumption_forecast(db: psycopg.Connection) -> None:
    """10 a day picked over the last 10 days, 50 left, 7 days of lead time: 5 days of cover is a risk.
    The forecast looks back from today, so these scans are dated relative to now (received now)."""
    from datetime import UTC, datetime, timedelta

    import orjson
    build_world(db)
    db.execute("UPDATE items SET lead_time_days = 7 WHERE sku = 'SKU-B'")
    now = datetime.now(UTC)

    def recent(device: str, msg: str, days_ago: int, **fields: object) -> Inbound:
        body = {"msg_id": msg, "code": gs1(GTIN_B), "ts": (now - timedelta(days=days_ago, minutes=5)).isoformat(),
                **fields}
        return Inbound(f"cargotrace/v1/dev/{device}/scan", orjson.dumps(body), now)

    apply(db, [recent("SC-1", "r1", 12, qty=150, location="BIN-A1")])
    apply(db, [recent("SC-2", f"p{d}", d, mode="pick", location="BIN-A1", qty=10) for d in range(10, 0, -1)])
    risk = db.execute("SELECT state, peak_value FROM alarms WHERE type = 'stock_out_risk'").fetchall()
    assert len(risk) == 1 and risk[0][0] == "active" and 4.5 < risk[0][1] < 5.5  # days of cover
    apply(db, [recent("SC-1", "r2", 0, qty=200, location="BIN-A1")])
    assert db.execute("SELECT state FROM alarms WHERE type = 'stock_out_risk'").fetchall() == [("cleared",)]


def test_the_expiry_warning_horizon_is_a_setting(db: psycopg.Connection) -> None:
    from datetime import date, timedelta

    from runtime.settings import Settings
    build_world(db)
    in_ten_days = (date.today() + timedelta(days=10)).strftime("%y%m%d")
    apply(db, [scan("SC-1", "r1", gs1(GTIN_A, lot="L-10", expiry=in_ten_days), 0, qty=5, location="BIN-A1")],
          Settings(expiry_warning_days=7))
    assert alarms(db) == set()
    apply(db, [scan("SC-1", "r2", gs1(GTIN_A, lot="L-10", expiry=in_ten_days), 1, qty=5, location="BIN-A1")],
          Settings(expiry_warning_days=14))
    assert alarms(db) == {("lot_expiring", "active", "L-10")}
