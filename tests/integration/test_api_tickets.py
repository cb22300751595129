"""After-sales tickets through the HTTP API: open, list, detail with the return's movements,
status workflow, notes and who may do what. Real database; ingest-side rows inserted with SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import build_world

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
Json = dict[str, Any]
TICKET_KEYS = {"id", "type", "status", "shipment", "alarm_id", "opened_at", "summary",
               "notes", "rma", "cause", "updated_at",
               # CONTRACT §4 (after-sales workflow)
               "priority", "assignee", "first_response_due", "resolution_due", "sla_breached", "customer",
               "timeline", "escalated_to", "site", "channel", "contact", "first_response_at", "resolved_at",
               "feedback_score", "feedback_comment"}


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    db.execute("INSERT INTO shipments (ref, origin, destination, customer, vehicle, public_token) "
               "VALUES ('SHP-2', 'STAGE-1', 'GF-CUST', 'CUST-1', 'TRUCK-1', 'tok-shp-2')")
    return db


@pytest.fixture
def anonymous(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as client:
        yield client


def alarm(db: psycopg.Connection, shipment: str | None) -> int:
    row = db.execute("INSERT INTO alarms (type, severity, state, shipment, subject, started_at, message) "
                     "VALUES ('temperature_high', 'critical', 'active', %s, 'ENV-T1', %s, 'too warm') RETURNING id",
                     (shipment, T0)).fetchone()
    assert row is not None
    return int(row[0])


def created(response: Response) -> Json:
    assert response.status_code == 201, response.text
    body: Json = response.json()
    assert set(body) == TICKET_KEYS
    return body


def ok(response: Response) -> Json:
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def error(response: Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# --- opening -------------------------------------------------------------------------------------


def test_open_a_ticket(world: psycopg.Connection, client_for: ClientFor) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    body = created(client_for("operator").post("/api/v1/tickets", json={
        "type": "complaint", "summary": "  Yoghurt arrived warm  ", "shipment": "SHP-1", "note": "customer called"}))
    assert body["type"] == "complaint" and body["status"] == "open"
    assert body["summary"] == "Yoghurt arrived warm"
    assert (body["shipment"], body["alarm_id"], body["rma"], body["cause"]) == ("SHP-1", None, None, None)
    assert datetime.fromisoformat(body["opened_at"]) >= before
    [note] = body["notes"]
    assert (note["by"], note["text"]) == ("test-operator", "customer called")
    assert datetime.fromisoformat(note["at"]) >= before and note["at"].endswith("Z")
    assert ok(client_for("viewer").get(f"/api/v1/tickets/{body['id']}"))["summary"] == "Yoghurt arrived warm"


def test_minimal_ticket_has_no_notes(world: psycopg.Connection, client_for: ClientFor) -> None:
    body = created(client_for("operator").post("/api/v1/tickets", json={"type": "repair", "summary": "scanner"}))
    assert body["notes"] == [] and body["shipment"] is None


def test_alarm_gives_the_ticket_its_shipment(world: psycopg.Connection, client_for: ClientFor) -> None:
    alarm_id = alarm(world, "SHP-1")
    body = created(client_for("operator").post("/api/v1/tickets", json={
        "type": "logistics_exception", "summary": "excursion", "alarm_id": alarm_id}))
    assert (body["alarm_id"], body["shipment"]) == (alarm_id, "SHP-1")


@pytest.mark.parametrize("fields", [{"shipment": "NOPE"}, {"alarm_id": 999}, {"shipment": "SHP-2", "alarm": True}])
def test_unknown_or_mismatched_references_are_422(world: psycopg.Connection, client_for: ClientFor,
                                                  fields: Json) -> None:
    if fields.pop("alarm", False):
        fields["alarm_id"] = alarm(world, "SHP-1")  # an alarm of another shipment
    response = client_for("operator").post("/api/v1/tickets", json={"type": "complaint", "summary": "x", **fields})
    error(response, 422, "invalid_reference")
    assert world.execute("SELECT count(*) FROM tickets").fetchone() == (0,)


@pytest.mark.parametrize("body", [{"type": "refund", "summary": "x"}, {"type": "return"},
                                  {"type": "return", "summary": "   "},
                                  {"type": "return", "summary": "x", "cause": "y"},
                                  {"type": "return", "summary": "x", "rma": "has space"}])
def test_invalid_bodies_are_422(world: psycopg.Connection, client_for: ClientFor, body: Json) -> None:
    error(client_for("operator").post("/api/v1/tickets", json=body), 422, "validation_error")


def test_duplicate_rma_is_409(world: psycopg.Connection, client_for: ClientFor) -> None:
    operator = client_for("operator")
    created(operator.post("/api/v1/tickets", json={"type": "return", "summary": "a", "rma": "RMA-7"}))
    error(operator.post("/api/v1/tickets", json={"type": "return", "summary": "b", "rma": "RMA-7"}), 409, "conflict")


# --- reading -------------------------------------------------------------------------------------


def test_detail_links_the_returns_movements_by_rma(world: psycopg.Connection, client_for: ClientFor) -> None:
    ticket = created(client_for("operator").post("/api/v1/tickets", json={
        "type": "return", "summary": "damaged crate", "shipment": "SHP-1", "rma": "RMA-42"}))
    for minutes, ref, msg in ((5, "RMA-42", "r2"), (1, "RMA-42", "r1"), (3, "RMA-43", "x"), (2, None, "y")):
        world.execute("INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, disposition, ref, "
                      "device_id, msg_id, source) VALUES (%s, 'SKU-A', 1, 'CUST-1', 'RET-1', 'receiving', "
                      "'returned', %s, 'SC-1', %s, 'scan')", (T0 + timedelta(minutes=minutes), ref, msg))
    detail = ok(client_for("viewer").get(f"/api/v1/tickets/{ticket['id']}"))
    assert set(detail) == TICKET_KEYS | {"movements"}
    assert [(m["msg_id"], m["ref"], m["from_location"], m["to_location"]) for m in detail["movements"]] == [
        ("r1", "RMA-42", "CUST-1", "RET-1"), ("r2", "RMA-42", "CUST-1", "RET-1")]
    other = created(client_for("operator").post("/api/v1/tickets", json={"type": "complaint", "summary": "no rma"}))
    assert ok(client_for("viewer").get(f"/api/v1/tickets/{other['id']}"))["movements"] == []


def test_list_filters_and_pages_newest_first(world: psycopg.Connection, client_for: ClientFor) -> None:
    # An automatic ticket as ingest opens it, with its cause.
    world.execute("INSERT INTO tickets (type, shipment, cause, summary, opened_at) VALUES "
                  "('logistics_exception', 'SHP-1', 'temperature_excursion', 'auto', %s)", (T0,))
    operator = client_for("operator")
    ids = [created(operator.post("/api/v1/tickets", json={"type": t, "summary": t, "shipment": s}))["id"]
           for t, s in (("complaint", "SHP-1"), ("return", "SHP-2"), ("complaint", "SHP-2"))]
    ok(operator.patch(f"/api/v1/tickets/{ids[0]}", json={"status": "resolved"}))
    viewer = client_for("viewer")

    def listed(**params: Any) -> list[int]:
        body = ok(viewer.get("/api/v1/tickets", params=params))
        assert set(body) == {"items", "next"}
        return [t["id"] for t in body["items"]]

    assert listed() == [*reversed(ids), 1]
    assert listed(shipment="SHP-1") == [ids[0], 1]
    assert listed(status="resolved") == [ids[0]]
    assert listed(type="complaint", shipment="SHP-2") == [ids[2]]
    automatic = ok(viewer.get("/api/v1/tickets", params={"type": "logistics_exception"}))["items"]
    assert [(t["cause"], t["status"], t["notes"]) for t in automatic] == [("temperature_excursion", "open", [])]
    error(viewer.get("/api/v1/tickets", params={"status": "pending"}), 422, "validation_error")

    seen: list[int] = []
    cursor = None
    while True:
        body = ok(viewer.get("/api/v1/tickets", params={"limit": 1} | ({"cursor": cursor} if cursor else {})))
        seen += [t["id"] for t in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == listed()


def test_unknown_ticket_is_404(world: psycopg.Connection, client_for: ClientFor) -> None:
    error(client_for("viewer").get("/api/v1/tickets/999"), 404, "not_found")
    error(client_for("operator").patch("/api/v1/tickets/999", json={"note": "x"}), 404, "not_found")


# --- workflow and notes --------------------------------------------------------------------------


@pytest.fixture
def ticket(world: psycopg.Connection, client_for: ClientFor) -> int:
    body = created(client_for("operator").post("/api/v1/tickets", json={"type": "complaint", "summary": "s"}))
    return int(body["id"])


def patch(client: TestClient, ticket_id: int, **body: Any) -> Response:
    response: Response = client.patch(f"/api/v1/tickets/{ticket_id}", json=body)
    return response


def test_full_workflow_records_who_and_what(ticket: int, client_for: ClientFor) -> None:
    operator = client_for("operator")
    first = ok(patch(operator, ticket, status="in_progress", note="calling the carrier"))
    assert first["status"] == "in_progress"
    assert ok(patch(operator, ticket, note="carrier confirms"))["status"] == "in_progress"
    ok(patch(operator, ticket, status="resolved"))
    admin = client_for("admin")
    final = ok(patch(admin, ticket, status="closed", note="credit note sent"))
    assert final["status"] == "closed"
    assert [(n["by"], n["text"], n.get("status")) for n in final["notes"]] == [
        ("test-operator", "calling the carrier", "in_progress"),
        ("test-operator", "carrier confirms", None),
        ("test-operator", "status changed from in_progress to resolved", "resolved"),
        ("test-admin", "credit note sent", "closed"),
    ]
    assert final["updated_at"] >= first["updated_at"]
    # History is kept on the detail too, and a closed ticket still takes notes.
    assert len(ok(patch(operator, ticket, note="customer thanked us"))["notes"]) == 5


@pytest.mark.parametrize(("path", "final"), [(["resolved"], "resolved"), (["closed"], "closed"),
                                             (["in_progress", "closed"], "closed")])
def test_allowed_shortcuts(ticket: int, client_for: ClientFor, path: list[str], final: str) -> None:
    operator = client_for("operator")
    for step in path:
        body = ok(patch(operator, ticket, status=step))
    assert body["status"] == final


@pytest.mark.parametrize(("path", "refused"), [(["closed"], "open"), (["closed"], "in_progress"),
                                               (["closed"], "resolved"), (["resolved"], "in_progress"),
                                               (["resolved"], "open"), (["in_progress"], "open")])
def test_backward_moves_are_409(ticket: int, client_for: ClientFor, path: list[str], refused: str) -> None:
    operator = client_for("operator")
    for step in path:
        ok(patch(operator, ticket, status=step))
    error(patch(operator, ticket, status=refused, note="reopen"), 409, "conflict")
    body = ok(client_for("viewer").get(f"/api/v1/tickets/{ticket}"))
    assert body["status"] == path[-1]
    assert all(n["text"] != "reopen" for n in body["notes"])  # a refused update records nothing


def test_same_status_again_is_a_no_op(ticket: int, client_for: ClientFor) -> None:
    operator = client_for("operator")
    once = ok(patch(operator, ticket, status="in_progress"))
    again = ok(patch(operator, ticket, status="in_progress"))
    assert again == once


def test_empty_or_bad_patch_is_422(ticket: int, client_for: ClientFor) -> None:
    operator = client_for("operator")
    error(operator.patch(f"/api/v1/tickets/{ticket}", json={}), 422, "validation_error")
    error(patch(operator, ticket, status="done"), 422, "validation_error")
    error(patch(operator, ticket, note=""), 422, "validation_error")


# --- who may do what -----------------------------------------------------------------------------


def test_auth_matrix(ticket: int, client_for: ClientFor, anonymous: TestClient) -> None:
    new = {"type": "complaint", "summary": "x"}
    calls: dict[str, Callable[[TestClient], Response]] = {
        "list": lambda c: c.get("/api/v1/tickets"),
        "get": lambda c: c.get(f"/api/v1/tickets/{ticket}"),
        "post": lambda c: c.post("/api/v1/tickets", json=new),
        "patch": lambda c: c.patch(f"/api/v1/tickets/{ticket}", json={"note": "n"}),
    }
    viewer, operator = client_for("viewer"), client_for("operator")
    bad_token = TestClient(anonymous.app, headers={"Authorization": "Bearer ct_not-a-token"})
    for name, call in calls.items():
        error(call(anonymous), 401, "unauthorized")
        error(call(bad_token), 401, "unauthorized")
        reading = name in ("list", "get")
        assert call(viewer).status_code == (200 if reading else 403), name
        assert call(operator).status_code == (200 if name != "post" else 201), name
