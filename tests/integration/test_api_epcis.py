"""EPCIS 2.0 export of the ledger the real pipeline wrote."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.api_fixtures import ClientFor
from tests.integration.world import GTIN_A, GTIN_B, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration


def test_epcis_document_of_receipts_moves_and_a_corrected_count(db: psycopg.Connection,
                                                                client_for: ClientFor) -> None:
    build_world(db)
    apply(db, [scan("SC-1", "e1", gs1(GTIN_A, lot="L7", expiry="261231"), 0, qty=24),
               scan("SC-1", "e2", gs1(GTIN_B, serial="SN-1"), 1),
               scan("SC-2", "e3", gs1(GTIN_B, serial="SN-1"), 2, mode="putaway", location="DOCK-1",
                    to_location="BIN-A1")])
    apply(db, [scan("SC-2", "e4", gs1(GTIN_B), 10, mode="count", qty=0)])     # book 1 → adjust 1 to loss
    apply(db, [scan("SC-2", "e5", gs1(GTIN_B, serial="SN-1"), 5, mode="move", to_location="BIN-A2")])  # late
    viewer = client_for("viewer")
    response = viewer.get("/api/v1/epcis/events")
    assert response.status_code == 200 and response.headers["content-type"] == "application/ld+json"
    doc = response.json()
    assert doc["type"] == "EPCISDocument" and doc["schemaVersion"] == "2.0"
    events = doc["epcisBody"]["eventList"]
    plain = [e for e in events if "errorDeclaration" not in e]
    declared = [e for e in events if "errorDeclaration" in e]
    assert [e["bizStep"] for e in plain] == ["receiving", "receiving", "storing", "cycle_counting", "storing"]
    assert plain[0]["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{GTIN_A}/10/L7", "quantity": 24}]
    assert plain[1]["epcList"] == [f"https://id.gs1.org/01/{GTIN_B}/21/SN-1"]
    assert plain[2]["sourceList"][0]["source"].endswith(":DOCK-1")
    # The late move left BIN-A1 empty before the count, so the count's adjustment was re-decided:
    # the first adjustment is declared in error, pointing at nothing (the count now agrees).
    assert len(declared) == 1 and declared[0]["eventID"] == plain[3]["eventID"]
    assert declared[0]["errorDeclaration"]["reason"] == "incorrect_data"

    paged = viewer.get("/api/v1/epcis/events", params={"limit": 2})
    assert len(paged.json()["epcisBody"]["eventList"]) == 2 and 'rel="next"' in paged.headers["link"]
    token = paged.headers["gs1-next-page-token"]
    rest = viewer.get("/api/v1/epcis/events", params={"nextPageToken": token}).json()["epcisBody"]["eventList"]
    assert [e["eventID"] for e in rest] == [e["eventID"] for e in events[2:]]
    later = viewer.get("/api/v1/epcis/events", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert later["epcisBody"]["eventList"] == []


def test_epcis_needs_a_token(client_for: ClientFor) -> None:
    from fastapi.testclient import TestClient

    anonymous: TestClient = client_for("viewer")
    anonymous.headers.pop("Authorization")
    assert anonymous.get("/api/v1/epcis/events").status_code == 401
