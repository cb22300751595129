"""Orders, tasks, purchase orders and replenishment through the HTTP API, on the real database, with
stock received through the real ingest pipeline."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.errors import ApiError
from api.store import orders as store
from ingest.db import connect
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import GTIN_A, GTIN_B, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration
Json = dict[str, Any]


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    # Two lots of SKU-A on two shelves: L-LATE (expires 2027-01-31, received first), L-SOON (2026-12-31).
    apply(db, [scan("SC-1", "r1", gs1(GTIN_A, lot="L-LATE", expiry="270131"), 0, qty=5, location="BIN-A1"),
               scan("SC-1", "r2", gs1(GTIN_A, lot="L-SOON", expiry="261231"), 1, qty=5, location="BIN-A2"),
               scan("SC-1", "r3", gs1(GTIN_B), 2, qty=10, location="BIN-A1")])
    return db


@pytest.fixture
def operator(client_for: ClientFor, world: psycopg.Connection) -> TestClient:
    return client_for("operator")


def ok(response: Any, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def order(client: TestClient, ref: str, lines: list[Json], **extra: object) -> Json:
    return ok(client.put(f"/api/v1/orders/{ref}", json={"customer": "CUST-1", "site": "DC1", "lines": lines,
                                                        **extra}), 201)


def test_release_allocates_fefo_reserves_and_makes_tasks_for_the_scanners_in_turn(operator: TestClient) -> None:
    created = order(operator, "SO-1", [{"sku": "SKU-A", "qty": 7}])
    assert created["status"] == "open" and created["lines"][0]["allocated"] == 0
    released = ok(operator.post("/api/v1/orders/SO-1/release"))
    assert released["status"] == "allocated"
    line = released["lines"][0]
    assert (line["qty"], line["allocated"], line["backordered"]) == (7, 7, 0)
    tasks = released["tasks"]
    assert [(t["lot"], t["qty"], t["from_location"], t["to_location"]) for t in tasks] == [
        ("L-SOON", 5, "BIN-A2", "STAGE-1"), ("L-LATE", 2, "BIN-A1", "STAGE-1")]
    assert sorted(t["device_id"] for t in tasks) == ["SC-1", "SC-2"]
    assert all(t["status"] == "open" and t["gtin"] == GTIN_A for t in tasks)
    stock = {(s["location"], s["lot"]): s for s in ok(operator.get("/api/v1/stock?sku=SKU-A&site=DC1"))["items"]}
    assert (stock[("BIN-A2", "L-SOON")]["reserved"], stock[("BIN-A2", "L-SOON")]["available"]) == (5, 0)
    assert (stock[("BIN-A1", "L-LATE")]["reserved"], stock[("BIN-A1", "L-LATE")]["available"]) == (2, 3)
    # a retried release changes nothing
    again = ok(operator.post("/api/v1/orders/SO-1/release"))
    assert [t["task_id"] for t in again["tasks"]] == [t["task_id"] for t in tasks]
    assert ok(operator.get("/api/v1/tasks?device=SC-1"))["items"][0]["ref"] == "SO-1"


def test_requested_lot_named_device_backorder_and_cancel(operator: TestClient) -> None:
    order(operator, "SO-2", [{"sku": "SKU-A", "qty": 6, "lot": "L-LATE"}, {"sku": "SKU-B", "qty": 3}])
    released = ok(operator.post("/api/v1/orders/SO-2/release", json={"device": "SC-2"}))
    assert released["status"] == "backordered"
    assert [(ln["allocated"], ln["backordered"]) for ln in released["lines"]] == [(5, 1), (3, 0)]
    assert {t["device_id"] for t in released["tasks"]} == {"SC-2"}
    assert {t["lot"] for t in released["tasks"] if t["sku"] == "SKU-A"} == {"L-LATE"}
    assert ok(operator.put("/api/v1/orders/SO-2", json={"customer": "CUST-1", "site": "DC1",
                                                        "lines": [{"sku": "SKU-A", "qty": 1}]}), 409)
    cancelled = ok(operator.post("/api/v1/orders/SO-2/cancel"))
    assert cancelled["status"] == "cancelled"
    assert {t["status"] for t in cancelled["tasks"]} == {"cancelled"}
    assert all(s["reserved"] == 0 for s in ok(operator.get("/api/v1/stock?site=DC1"))["items"])


def test_backorder_filled_in_priority_then_requested_at_order(operator: TestClient, world: psycopg.Connection) -> None:
    from datetime import UTC, datetime

    from ingest.tasks_store import fill_backorders
    for ref, prio, at in (("LOW", 4, "2026-11-20T07:00:00Z"), ("HIGH-LATE", 1, "2026-11-20T09:00:00Z"),
                          ("HIGH-EARLY", 1, "2026-11-20T08:00:00Z")):
        order(operator, ref, [{"sku": "SKU-B", "qty": 10}], priority=prio, requested_at=at)
    ok(operator.post("/api/v1/orders/LOW/release"))          # takes all 10 on hand
    for ref in ("HIGH-LATE", "HIGH-EARLY"):
        assert ok(operator.post(f"/api/v1/orders/{ref}/release"))["status"] == "backordered"
    # the receipt onto a shelf fills the backorders in the same ingest transaction
    apply(world, [scan("SC-1", "r9", gs1(GTIN_B), 30, qty=12, location="BIN-A2")])
    with world.transaction(), world.cursor() as cur:
        assert fill_backorders(cur, "DC1", ["SKU-B"], datetime.now(UTC)) == []  # nothing left to fill
    early = ok(operator.get("/api/v1/orders/HIGH-EARLY"))["lines"][0]
    late = ok(operator.get("/api/v1/orders/HIGH-LATE"))["lines"][0]
    assert (early["allocated"], early["backordered"], late["allocated"], late["backordered"]) == (10, 0, 2, 8)


def test_bad_requests_are_4xx(operator: TestClient) -> None:
    base = {"customer": "CUST-1", "site": "DC1", "lines": [{"sku": "SKU-A", "qty": 1}]}
    assert operator.put("/api/v1/orders/X", json={**base, "lines": [{"sku": "NOPE", "qty": 1}]}).status_code == 422
    assert operator.put("/api/v1/orders/X", json={**base, "customer": "BIN-A1"}).json()["error"]["code"] == \
        "invalid_reference"
    assert operator.put("/api/v1/orders/X", json={**base, "lines": []}).status_code == 422
    assert operator.put("/api/v1/orders/X", json={**base, "priority": 9}).status_code == 422
    assert operator.post("/api/v1/orders/NOPE/release").status_code == 404
    ok(operator.put("/api/v1/orders/X", json=base), 201)
    assert operator.post("/api/v1/orders/X/release", json={"device": "ENV-1"}).status_code == 422
    assert ok(operator.put("/api/v1/orders/X", json=base))["status"] == "open"  # replace while open: 200


def test_viewer_reads_but_cannot_write(client_for: ClientFor, world: psycopg.Connection) -> None:
    viewer = client_for("viewer")
    assert viewer.put("/api/v1/orders/V", json={"customer": "CUST-1", "site": "DC1",
                                                "lines": [{"sku": "SKU-A", "qty": 1}]}).status_code == 403
    assert ok(viewer.get("/api/v1/orders"))["items"] == []


def test_public_order_tracking_shows_status_and_nothing_else(operator: TestClient, api_settings: Settings) -> None:
    created = order(operator, "SO-T", [{"sku": "SKU-A", "qty": 2}])
    ok(operator.post("/api/v1/orders/SO-T/release"))
    with TestClient(create_app(api_settings)) as anonymous:
        body = ok(anonymous.get(f"/api/v1/track/order/{created['public_token']}"))
        assert set(body) == {"status", "shipments", "events"}
        assert body["status"] == "allocated"
        assert "SO-T" not in str(body) and "CUST-1" not in str(body) and "SKU-A" not in str(body)
        missing = anonymous.get("/api/v1/track/order/not-a-token")
        assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
        assert anonymous.get("/api/v1/orders/SO-T").status_code == 401


def test_purchase_order_receiving_with_exceptions(operator: TestClient, world: psycopg.Connection) -> None:
    po = ok(operator.put("/api/v1/purchase-orders/PO-1", json={"supplier": "SUP-ACME", "site": "DC1",
                                                               "lines": [{"sku": "SKU-A", "qty": 10}]}), 201)
    assert po["status"] == "open"
    apply(world, [scan("SC-1", "p1", gs1(GTIN_A, lot="L9"), 40, qty=6, ref="PO-1"),
                  scan("SC-1", "p2", gs1(GTIN_A, lot="L9"), 41, qty=6, ref="PO-1"),
                  scan("SC-1", "p3", gs1(GTIN_B), 42, qty=2, ref="PO-1")])
    po = ok(operator.get("/api/v1/purchase-orders/PO-1"))
    assert po["status"] == "received"
    assert po["lines"] == [{"sku": "SKU-A", "qty": 10, "received": 12}]
    assert [(e["kind"], e["sku"], e["excess"], e["msg_id"]) for e in po["exceptions"]] == [
        ("over_receipt", "SKU-A", 2, "p2"), ("unexpected_item", "SKU-B", 2, "p3")]
    assert operator.put("/api/v1/purchase-orders/PO-2", json={"supplier": "CUST-1", "site": "DC1",
                                                              "lines": [{"sku": "SKU-A", "qty": 1}]}).status_code == 422


def test_replenishment_suggests_below_the_reorder_point(operator: TestClient, client_for: ClientFor) -> None:
    admin = client_for("admin")
    item = ok(admin.put("/api/v1/items/SKU-A", json={"name": "Yoghurt 6x", "gtin": GTIN_A, "reorder_point": 12,
                                                     "reorder_qty": 20, "lead_time_days": 3}))
    assert (item["reorder_point"], item["reorder_qty"], item["lead_time_days"]) == (12, 20, 3)
    assert admin.put("/api/v1/items/SKU-A", json={"name": "x", "gtin": GTIN_A, "reorder_qty": 0}).status_code == 422
    ok(admin.put("/api/v1/items/SKU-B", json={"name": "Cheese", "gtin": GTIN_B, "reorder_point": 50}))
    ok(admin.put("/api/v1/items/SKU-B/sites/DC1", json={"reorder_point": 5}), 201)  # this site needs less
    assert operator.put("/api/v1/items/SKU-B/sites/DC1", json={"reorder_point": 5}).status_code == 403
    rows = {r["sku"]: r for r in ok(operator.get("/api/v1/replenishment?site=DC1"))["items"]}
    a, b = rows["SKU-A"], rows["SKU-B"]
    assert (a["available"], a["reorder_point"], a["suggested_qty"]) == (10, 12, 20)
    assert (b["available"], b["reorder_point"], b["suggested_qty"]) == (10, 5, 0)


def _release_in_thread(url: str, ref: str, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    try:
        with connect(url, autocommit=True) as conn:
            barrier.wait(timeout=60)
            store.release(conn, ref, None)
    except (ApiError, psycopg.Error, threading.BrokenBarrierError) as exc:  # reported by the main thread
        errors.append(exc)


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    yield database_url


def test_two_concurrent_releases_never_over_allocate(operator: TestClient, world: psycopg.Connection,
                                                     url: str) -> None:
    """Two connections release two orders for the same 10 units at the same moment, several rounds."""
    for round_ in range(4):
        refs = [f"C{round_}-1", f"C{round_}-2"]
        for ref in refs:
            order(operator, ref, [{"sku": "SKU-B", "qty": 8}])
        barrier, errors = threading.Barrier(2), []
        threads = [threading.Thread(target=_release_in_thread, args=(url, ref, barrier, errors)) for ref in refs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        lines = [ok(operator.get(f"/api/v1/orders/{ref}"))["lines"][0] for ref in refs]
        assert sorted(ln["allocated"] for ln in lines) == [2, 8] if round_ == 0 else \
            [ln["allocated"] for ln in lines] == [0, 0]
        over = world.execute("SELECT b.sku, b.location, b.qty, sum(r.qty) FROM reservations r JOIN balances b "
                             "USING (sku, location, lot) GROUP BY 1, 2, 3 HAVING sum(r.qty) > b.qty").fetchall()
        assert over == []
        reserved = world.execute("SELECT sum(qty) FROM reservations WHERE sku = 'SKU-B'").fetchone()
        assert reserved == (Decimal(10),)
