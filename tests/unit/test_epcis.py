from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from core.epcis import LedgerEntry, document, error_declaration, event_id, object_event

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BASE = "urn:cargotrace:location:"


def entry(**kw: object) -> LedgerEntry:
    values: dict[str, object] = dict(id=1, ts=T, recorded_at=T, sku="SKU-A", gtin="09506000134352", qty=Decimal(24),
                                     from_location="SUP", to_location="DOCK-1", lot="L7", serial=None,
                                     expiry=date(2026, 12, 31), biz_step="receiving", disposition="in_progress",
                                     ref="PO-1", source="scan", device_id="SC-1", reverses=None)
    values.update(kw)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def test_lot_receipt_is_a_quantity_event_with_source_destination_and_ilmd() -> None:
    event = object_event(entry(), BASE, "site")
    assert event["type"] == "ObjectEvent" and event["action"] == "OBSERVE"
    assert event["eventTime"] == "2026-11-24T12:00:00Z" and event["eventTimeZoneOffset"] == "+00:00"
    assert event["quantityList"] == [{"epcClass": "https://id.gs1.org/01/09506000134352/10/L7", "quantity": 24}]
    assert event["sourceList"] == [{"type": "location", "source": BASE + "SUP"}]
    assert event["destinationList"] == [{"type": "location", "destination": BASE + "DOCK-1"}]
    assert event["bizStep"] == "receiving" and event["disposition"] == "in_progress"
    assert event["bizLocation"] == {"id": BASE + "DOCK-1"}
    assert event["ilmd"] == {"cbvmda:lotNumber": "L7", "cbvmda:itemExpirationDate": "2026-12-31"}
    assert event["bizTransactionList"] == [{"type": "po", "bizTransaction": "urn:cargotrace:ref:PO-1"}]


def test_serialised_unit_is_an_epc_list() -> None:
    event = object_event(entry(serial="6789", gtin="80614141123458", lot=None, expiry=None, qty=Decimal(1)), BASE, "s")
    assert event["epcList"] == ["https://id.gs1.org/01/80614141123458/21/6789"]
    assert "quantityList" not in event and "ilmd" not in event


def test_return_carries_the_rma_and_event_ids_are_stable() -> None:
    event = object_event(entry(disposition="returned", ref="RMA-9"), BASE, "s")
    assert event["bizTransactionList"][0]["type"] == "rma"
    assert event_id(1, "s") == event_id(1, "s") != event_id(2, "s") != event_id(1, "other")


def test_reversal_is_the_original_declared_in_error() -> None:
    original = entry(id=5)
    reversal = entry(id=9, recorded_at=datetime(2026, 11, 25, tzinfo=UTC), reverses=5)
    event = error_declaration(original, reversal, BASE, "s", [10])
    assert event["eventID"] == event_id(5, "s")
    assert event["errorDeclaration"] == {"declarationTime": "2026-11-25T00:00:00Z", "reason": "incorrect_data",
                                         "correctiveEventIDs": [event_id(10, "s")]}


def test_document_envelope() -> None:
    doc = document([], T)
    assert doc["type"] == "EPCISDocument" and doc["schemaVersion"] == "2.0"
    assert doc["@context"][0].endswith("epcis-context.jsonld") and doc["epcisBody"] == {"eventList": []}
