"""After-sales through the HTTP API on the real database: returns (RMA) from request to close with
a real return scan through the ingest pipeline, repairs with parts and warranty, the ticket
workflow with round-robin assignment and SLA breach in event time, the customer's side on the
tracking token, and the service report. Every refusal the issue names is asserted."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from api.store import tickets as ticket_store
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import GTIN_A, GTIN_B, apply, balances, build_world, gs1, scan

pytestmark = pytest.mark.integration
Json = dict[str, Any]


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    db.execute("INSERT INTO locations (code, site, type) VALUES ('BENCH-1', 'DC1', 'repair'), "
               "('USED-1', 'DC1', 'consumed')")
    db.execute("UPDATE items SET warranty_months = 12 WHERE sku = 'SKU-B'")
    return db


@pytest.fixture
def anonymous(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as client:
        yield client


def body(response: Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    out: Json = response.json()
    return out


def refused(response: Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_return_from_request_to_close(world: psycopg.Connection, client_for: ClientFor) -> None:
    op, viewer = client_for("operator", "ann"), client_for("viewer", "vic")
    rma = body(op.post("/api/v1/rmas", json={"customer": "CUST-1", "shipment": "SHP-1", "lines": [
        {"sku": "SKU-A", "qty": 2, "reason": "damaged in transit"}]}), 201)
    ref = rma["ref"]
    assert (rma["status"], rma["returns_location"], rma["created_by"]) == ("requested", "RET-1", "ann")
    # a viewer may not approve; nothing is inspected before it was received
    refused(viewer.post(f"/api/v1/rmas/{ref}/approve"), 403, "needs the operator role")
    refused(op.post(f"/api/v1/rmas/{ref}/inspect", json={"lines": [
        {"sku": "SKU-A", "qty": 1, "disposition": "restock"}]}), 409, "after they are received")
    assert body(op.post(f"/api/v1/rmas/{ref}/approve", json={"reason": "photos show crushed boxes"}))[
        "status"] == "approved"
    refused(op.post(f"/api/v1/rmas/{ref}/reject", json={"reason": "late"}), 409, "only a requested RMA")
    # the goods come back: a real return scan through the ingest pipeline, plus an item not on the RMA
    result = apply(world, [scan("SC-2", "r1", gs1(GTIN_A, lot="L1"), 60, mode="return", location="RET-1",
                                ref=ref, qty=2),
                           scan("SC-2", "r2", gs1(GTIN_B), 61, mode="return", location="RET-1", ref=ref)])
    assert (len(result.applied), result.dead_letters) == (2, 0)
    got = body(viewer.get(f"/api/v1/rmas/{ref}"))
    assert got["status"] == "received"
    assert [(r["sku"], r["qty"], r["line"], r["exception"]) for r in got["receipts"]] == [
        ("SKU-A", 2, 0, None), ("SKU-B", 1, None, f"SKU-B is not on RMA {ref}")]
    alarm = world.execute("SELECT type, state, message FROM alarms WHERE id = %s",
                          (got["receipts"][1]["alarm_id"],)).fetchone()
    assert alarm == ("receipt_exception", "active", f"SKU-B is not on RMA {ref}")
    # inspection: one restocked, one scrapped; each a movement out of the returns location
    refused(op.post(f"/api/v1/rmas/{ref}/inspect", json={"lines": [
        {"sku": "SKU-A", "lot": "L1", "qty": 3, "disposition": "restock"}]}), 409, "only 2 received")
    done = body(op.post(f"/api/v1/rmas/{ref}/inspect", json={"lines": [
        {"sku": "SKU-A", "lot": "L1", "qty": 1, "disposition": "restock"},
        {"sku": "SKU-A", "lot": "L1", "qty": 1, "disposition": "scrap"}]}))
    assert [(i["disposition"], i["to_location"], i["inspected_by"]) for i in done["inspections"]] == [
        ("restock", "BIN-A1", "ann"), ("scrap", "LOSS-1", "ann")]
    stock = balances(world)
    assert stock[("SKU-A", "BIN-A1", "L1")] == 1 and stock[("SKU-A", "LOSS-1", "L1")] == 1
    assert ("SKU-A", "RET-1", "L1") not in stock  # both units left the returns area
    # SKU-B (the unexpected one) was never inspected, so the RMA is not yet fully inspected
    assert done["status"] == "received"
    done = body(op.post(f"/api/v1/rmas/{ref}/inspect", json={"lines": [
        {"sku": "SKU-B", "qty": 1, "disposition": "return_to_supplier"}]}))
    assert done["status"] == "inspected"
    refused(op.post(f"/api/v1/rmas/{ref}/settle", json={"refund": {"amount": 0, "currency": "EUR"}}), 422,
            "amount")
    settled = body(op.post(f"/api/v1/rmas/{ref}/settle", json={"refund": {"amount": "19.90", "currency": "EUR"},
                                                              "replacement_order": "ORD-9"}))
    assert settled["refund"] == {"amount": 19.9, "currency": "EUR", "status": "pending"}
    assert body(op.post(f"/api/v1/rmas/{ref}/close"))["status"] == "closed"
    movements = body(viewer.get("/api/v1/movements", params={"ref": ref}))["items"]
    assert sorted((m["from_location"], m["to_location"]) for m in movements) == [
        ("CUST-1", "RET-1"), ("CUST-1", "RET-1"), ("RET-1", "BIN-A1"), ("RET-1", "LOSS-1"), ("RET-1", "SUP-ACME")]


def test_rma_needs_an_order_or_shipment_and_a_customer(world: psycopg.Connection, client_for: ClientFor) -> None:
    op = client_for("operator")
    lines = [{"sku": "SKU-A", "qty": 1, "reason": "x"}]
    refused(op.post("/api/v1/rmas", json={"customer": "CUST-1", "lines": lines}), 422, "order or the shipment")
    refused(op.post("/api/v1/rmas", json={"customer": "BIN-A1", "shipment": "SHP-1", "lines": lines}), 422,
            "not a location of type customer")
    rejected = body(op.post("/api/v1/rmas", json={"customer": "CUST-1", "order": "ORD-1", "lines": lines}), 201)
    assert body(op.post(f"/api/v1/rmas/{rejected['ref']}/reject", json={"reason": "out of policy"}))[
        "decision_reason"] == "out of policy"
    refused(op.post(f"/api/v1/rmas/{rejected['ref']}/inspect", json={"lines": [
        {"sku": "SKU-A", "qty": 1, "disposition": "scrap"}]}), 409, "rejected")


def _deliver_serial(db: psycopg.Connection, at: datetime) -> None:
    db.execute("INSERT INTO movements (ts, sku, qty, from_location, to_location, serial, biz_step, source) "
               "VALUES (%s, 'SKU-B', 1, 'TRUCK-1', 'CUST-1', 'SN1', 'arriving', 'scan')", (at,))


def test_repair_with_parts_and_warranty(world: psycopg.Connection, client_for: ClientFor) -> None:
    item = client_for("admin").put("/api/v1/items/SKU-B", json={"name": "Cheese", "gtin": GTIN_B,
                                                                 "warranty_months": 12})
    assert item.status_code == 200 and item.json()["warranty_months"] == 12, item.text
    op = client_for("operator", "rita")
    delivered = datetime.now(UTC) - timedelta(days=200)
    _deliver_serial(world, delivered)
    apply(world, [scan("SC-1", "p1", gs1(GTIN_A, lot="L1"), 0, qty=5), scan("SC-1", "p2", gs1(GTIN_A, lot="L2"), 1,
                                                                           qty=5),
                  scan("SC-2", "p3", gs1(GTIN_A, lot="L1"), 2, mode="move", location="DOCK-1",
                       to_location="BIN-A1", qty=5),
                  scan("SC-2", "p4", gs1(GTIN_A, lot="L2"), 3, mode="move", location="DOCK-1",
                       to_location="BIN-A2", qty=5)])
    ticket = body(op.post("/api/v1/tickets", json={"type": "repair", "summary": "does not start",
                                                   "shipment": "SHP-1"}), 201)
    repair = body(op.post("/api/v1/repairs", json={"ticket": ticket["id"], "sku": "SKU-B", "serial": "SN1",
                                                   "fault": "no power"}), 201)
    assert repair["site"] == "DC1" and repair["status"] == "open"
    assert repair["warranty"]["covered"] is True
    assert repair["warranty"]["until"] > datetime.now(UTC).date().isoformat()
    returned = body(op.post("/api/v1/rmas", json={"customer": "CUST-1", "shipment": "SHP-1", "lines": [
        {"sku": "SKU-B", "qty": 1, "serial": "SN1", "reason": "no power"}]}), 201)
    assert returned["lines"][0]["delivered_at"] == delivered.isoformat().replace("+00:00", "Z")
    never = body(op.post("/api/v1/repairs", json={"ticket": ticket["id"], "sku": "SKU-B", "serial": "SN-X",
                                                  "fault": "noise"}), 201)
    assert never["warranty"] == {"until": None, "covered": False}
    rid = repair["id"]
    with_part = body(op.post(f"/api/v1/repairs/{rid}/parts", json={"sku": "SKU-A", "qty": 2, "lot": "L2"}))
    assert [(p["lot"], p["qty"], p["from_location"], p["to_location"]) for p in with_part["parts"]] == [
        ("L2", 2, "BIN-A2", "USED-1")]
    refused(op.post(f"/api/v1/repairs/{rid}/parts", json={"sku": "SKU-A", "qty": 4, "lot": "L2"}), 409,
            "4 × SKU-A lot L2 needed, 3 on hand")
    assert balances(world)[("SKU-A", "BIN-A2", "L2")] == 3  # the refused request moved nothing
    assert body(op.patch(f"/api/v1/repairs/{rid}", json={"status": "done"}))["status"] == "done"
    refused(op.post(f"/api/v1/repairs/{rid}/parts", json={"sku": "SKU-A", "qty": 1}), 409, "is done")
    refused(op.patch(f"/api/v1/repairs/{rid}", json={"status": "in_progress"}), 409, "cannot become")
    # ingest may delete an untouched automatic ticket (its alarm withdrawn by late data): the repair stays
    world.execute("DELETE FROM tickets WHERE id = %s", (ticket["id"],))
    assert body(op.get(f"/api/v1/repairs/{rid}"))["ticket"] is None


def test_round_robin_assignment_and_sla_breach_in_event_time(world: psycopg.Connection,
                                                             client_for: ClientFor) -> None:
    admin, op = client_for("admin", "boss"), client_for("operator", "ann")
    body(admin.put("/api/v1/assignment-rules/complaint/DC1", json={"agents": ["ann", "bob"], "escalate_to": "lead"}))
    opened = [body(op.post("/api/v1/tickets", json={"type": "complaint", "summary": f"c{i}", "shipment": "SHP-1",
                                                    "priority": 1}), 201) for i in range(3)]
    assert [t["assignee"] for t in opened] == ["ann", "bob", "ann"]
    # the three were opened three hours ago (event time): shift their clocks, as a ticket opened then would be
    world.execute("UPDATE tickets SET opened_at = opened_at - interval '3 hours', first_response_due = "
                  "first_response_due - interval '3 hours', resolution_due = resolution_due - interval '3 hours'")
    first, second, third = (body(op.get(f"/api/v1/tickets/{t['id']}")) for t in opened)
    opened_at = datetime.fromisoformat(first["opened_at"])
    fr_due = datetime.fromisoformat(first["first_response_due"])
    assert fr_due - opened_at == timedelta(hours=1)  # complaint, priority 1
    # ticket 2: a reply made at 30 min (event time) and written up now: it met its target
    body(op.post(f"/api/v1/tickets/{second['id']}/notes", json={
        "text": "called the customer", "ts": (opened_at + timedelta(minutes=30)).isoformat()}), 201)
    # ticket 3: answered at 2 h, after its due time: a late reply is a breach too
    body(op.post(f"/api/v1/tickets/{third['id']}/notes", json={
        "text": "sorry for the wait", "ts": (opened_at + timedelta(hours=2)).isoformat()}), 201)
    # ticket 1: no reply at all. Before the due time the sweep finds nothing on it...
    assert ticket_store.sweep_breaches(world, fr_due - timedelta(minutes=1)) == 1  # (ticket 3's late reply)
    assert not body(op.get(f"/api/v1/tickets/{first['id']}"))["sla_breached"]
    # ...once the due time has passed, the breach is raised, dated at the due time, and escalated
    assert ticket_store.sweep_breaches(world, datetime.now(UTC)) == 1
    t1 = body(op.get(f"/api/v1/tickets/{first['id']}"))
    assert t1["sla_breached"] and t1["escalated_to"] == "lead" and t1["assignee"] == "ann"
    assert (t1["timeline"][-1]["author"], t1["timeline"][-1]["kind"], t1["timeline"][-1]["text"]) == (
        "system", "assignment", "escalated to lead")
    alarm = world.execute("SELECT started_at, state FROM alarms WHERE type = 'sla_breach' AND subject = %s",
                          (f"ticket:{first['id']}:first_response",)).fetchone()
    assert alarm == (fr_due, "active")  # event time: the due time, not when the sweep ran
    assert not body(op.get(f"/api/v1/tickets/{second['id']}"))["sla_breached"]
    assert body(op.get(f"/api/v1/tickets/{third['id']}"))["sla_breached"]
    assert ticket_store.sweep_breaches(world, datetime.now(UTC)) == 0  # raised once
    # 600 older tickets served in time (more than a sweep's page) do not hide a newly overdue one
    world.execute("INSERT INTO tickets (type, summary, opened_at, first_response_due, resolution_due, "
                  "first_response_at, resolved_at, status) SELECT 'complaint', 'old', now() - interval '9 days', "
                  "now() - interval '8 days', now() - interval '7 days', now() - interval '9 days', "
                  "now() - interval '8 days', 'closed' FROM generate_series(1, 600)")
    overdue = body(op.post("/api/v1/tickets", json={"type": "complaint", "summary": "late", "priority": 1}), 201)
    world.execute("UPDATE tickets SET first_response_due = now() - interval '1 minute' WHERE id = %s",
                  (overdue["id"],))
    assert ticket_store.sweep_breaches(world, datetime.now(UTC)) == 1
    assert body(op.get(f"/api/v1/tickets/{overdue['id']}"))["sla_breached"]
    # ticket 3's alarm was born cleared at its late reply; ticket 1's clears when someone answers
    late_reply = opened_at + timedelta(hours=2)
    assert world.execute("SELECT state, cleared_at FROM alarms WHERE subject = %s",
                         (f"ticket:{third['id']}:first_response",)).fetchone() == ("cleared", late_reply)
    body(op.post(f"/api/v1/tickets/{first['id']}/notes", json={"text": "on it"}), 201)
    assert ticket_store.sweep_breaches(world, datetime.now(UTC)) == 0
    assert world.execute("SELECT state FROM alarms WHERE subject = %s",
                         (f"ticket:{first['id']}:first_response",)).fetchone() == ("cleared",)
    refused(op.post(f"/api/v1/tickets/{third['id']}/notes", json={"text": "x", "ts": (
        datetime.now(UTC) + timedelta(hours=1)).isoformat()}), 422, "future")
    refused(op.post(f"/api/v1/tickets/{third['id']}/notes", json={"text": "x", "ts": (
        datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()}), 422, "future")
    # the workflow refuses what it does not allow
    body(op.patch(f"/api/v1/tickets/{second['id']}", json={"status": "waiting_customer"}))
    body(op.patch(f"/api/v1/tickets/{second['id']}", json={"status": "closed"}))
    refused(op.patch(f"/api/v1/tickets/{second['id']}", json={"status": "in_progress"}), 409,
            "closed ticket stays closed")


def test_automatic_ticket_is_taken_in_with_dues_and_assignee(world: psycopg.Connection,
                                                             client_for: ClientFor) -> None:
    body(client_for("admin").put("/api/v1/assignment-rules/logistics_exception/*", json={"agents": ["zoe"]}))
    world.execute("INSERT INTO tickets (type, shipment, cause, summary) VALUES "
                  "('logistics_exception', 'SHP-1', 'late_delivery', 'late')")
    assert ticket_store.intake(world, datetime.now(UTC)) == 1
    t = body(client_for("viewer").get("/api/v1/tickets"))["items"][0]
    assert (t["assignee"], t["customer"], t["site"], t["channel"]) == ("zoe", "CUST-1", "DC1", "automatic")
    assert t["first_response_due"] is not None


def test_customer_reports_a_problem_and_gives_feedback_once(world: psycopg.Connection, client_for: ClientFor,
                                                            anonymous: TestClient) -> None:
    op = client_for("operator", "ann")
    issue = body(anonymous.post("/api/v1/track/tok-shp-1/issues", json={"summary": "box arrived crushed",
                                                                        "contact": "kim@example.com"}), 201)
    assert set(issue) == {"id", "type", "status", "opened_at", "summary", "feedback_given"}
    staff_view = body(op.get(f"/api/v1/tickets/{issue['id']}"))
    assert (staff_view["type"], staff_view["shipment"], staff_view["channel"], staff_view["customer"],
            staff_view["contact"]) == ("complaint", "SHP-1", "public", "CUST-1", "kim@example.com")
    refused(anonymous.post("/api/v1/track/not-a-token/issues", json={"summary": "x", "contact": "a@b.c"}), 404,
            "no shipment")
    # feedback before resolution is refused, after it taken once
    refused(anonymous.post("/api/v1/track/tok-shp-1/feedback", json={"ticket": issue["id"], "score": 5}), 409,
            "once it is resolved")
    body(op.patch(f"/api/v1/tickets/{issue['id']}", json={"status": "resolved", "note": "replacement sent"}))
    given = body(anonymous.post("/api/v1/track/tok-shp-1/feedback", json={"ticket": issue["id"], "score": 4,
                                                                          "comment": "quick"}), 201)
    assert given["feedback_given"] is True
    refused(anonymous.post("/api/v1/track/tok-shp-1/feedback", json={"ticket": issue["id"], "score": 1}), 409,
            "already given")
    refused(anonymous.post("/api/v1/track/tok-shp-1/feedback", json={"ticket": issue["id"], "score": 9}), 422, "")
    # another shipment's token cannot reach this ticket
    world.execute("INSERT INTO shipments (ref, origin, destination, customer, vehicle, public_token) "
                  "VALUES ('SHP-2', 'STAGE-1', 'GF-CUST', 'CUST-1', 'TRUCK-1', 'tok-shp-2')")
    refused(anonymous.post("/api/v1/track/tok-shp-2/feedback", json={"ticket": issue["id"], "score": 3}), 404,
            "no ticket")
    listed = body(anonymous.get("/api/v1/track/tok-shp-1/tickets"))
    assert listed == [{**issue, "status": "resolved", "feedback_given": True}]
    assert body(anonymous.get("/api/v1/track/tok-shp-1"))["tickets"] == listed  # the tracking view lists them too
    # rate limit: 3 reports per hour per shipment (the first one counts)
    for i in range(2):
        body(anonymous.post("/api/v1/track/tok-shp-1/issues", json={"summary": f"more {i}", "contact": "k@x.io"}),
             201)
    limited = anonymous.post("/api/v1/track/tok-shp-1/issues", json={"summary": "again", "contact": "k@x.io"})
    refused(limited, 429, "at most 3 reports per hour")
    assert limited.headers["retry-after"] == "3600"


def test_service_report_json_and_csv(world: psycopg.Connection, client_for: ClientFor,
                                     anonymous: TestClient) -> None:
    op = client_for("operator", "ann")
    a = body(anonymous.post("/api/v1/track/tok-shp-1/issues", json={"summary": "late", "contact": "k@x.io"}), 201)
    body(op.post("/api/v1/tickets", json={"type": "repair", "summary": "r", "shipment": "SHP-1"}), 201)
    body(op.patch(f"/api/v1/tickets/{a['id']}", json={"status": "resolved"}))
    body(anonymous.post("/api/v1/track/tok-shp-1/feedback", json={"ticket": a["id"], "score": 2}), 201)
    body(op.post("/api/v1/rmas", json={"customer": "CUST-1", "shipment": "SHP-1", "lines": [
        {"sku": "SKU-A", "qty": 2, "reason": "damaged"}, {"sku": "SKU-B", "qty": 1, "reason": "wrong item"}]}), 201)
    report = body(op.get("/api/v1/reports/service", params={"site": "DC1"}))
    assert report["opened_by_type"] == {"complaint": 1, "repair": 1}
    assert report["resolved_by_type"] == {"complaint": 1}
    assert report["by_status"] == {"open": 1, "resolved": 1}
    assert report["sla_met_pct"] == 100.0 and report["mean_feedback"] == 2.0 and report["backlog"] == 1
    assert report["median_first_response_s"] is not None and report["median_first_response_s"] >= 0
    assert report["returns"] == [{"sku": "SKU-A", "reason": "damaged", "qty": 2.0},
                                 {"sku": "SKU-B", "reason": "wrong item", "qty": 1.0}]
    assert body(op.get("/api/v1/reports/service", params={"site": "ELSEWHERE"}))["opened_by_type"] == {}
    exported = op.get("/api/v1/reports/service", params={"format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["section", "key", "value"]
    assert ["summary", "mean_feedback", "2.0"] in rows and ["returns", "SKU-A/damaged", "2.0"] in rows
    refused(op.get("/api/v1/reports/service", params={"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}),
            422, "after from")
    # a time without an offset is UTC, not a 500
    refused(op.get("/api/v1/reports/service", params={"from": "2026-12-02T00:00:00", "to": "2026-12-01T00:00:00Z"}),
            422, "after from")
