from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, FormatChecker

from core.epcis import LedgerEntry, cbv_biz_step, document, error_declaration, object_event
from core.epcis_hash import event_hash

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BASE = "urn:cargotrace:location:"
SCHEMA = Path(__file__).parents[2].parent / "shared" / "epcis" / "EPCIS-JSON-Schema.json"


@cache
def validator() -> Draft7Validator:
    checker = FormatChecker()
    assert "uri" in checker.checkers, "install rfc3986-validator: without it URI formats are not checked"
    return Draft7Validator(json.loads(SCHEMA.read_text()), format_checker=checker)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(doc)]


def entry(**kw: object) -> LedgerEntry:
    values: dict[str, object] = dict(id=1, ts=T, recorded_at=T, sku="SKU-A", gtin="09506000134352", qty=Decimal(24),
                                     from_location="SUP", to_location="DOCK-1", lot="L7", serial=None,
                                     expiry=date(2026, 12, 31), biz_step="receiving", disposition="in_progress",
                                     ref="PO-1", source="scan", device_id="SC-1", reverses=None)
    values.update(kw)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def test_lot_receipt_is_a_quantity_observation_without_ilmd() -> None:
    event = object_event(entry(), BASE)
    assert event["type"] == "ObjectEvent" and event["action"] == "OBSERVE"
    assert event["eventTime"] == "2026-11-24T12:00:00.000Z" and event["eventTimeZoneOffset"] == "+00:00"
    assert event["quantityList"] == [{"epcClass": "https://id.gs1.org/01/09506000134352/10/L7", "quantity": 24}]
    assert event["sourceList"] == [{"type": "location", "source": BASE + "SUP"}]
    assert event["destinationList"] == [{"type": "location", "destination": BASE + "DOCK-1"}]
    assert event["bizStep"] == "receiving" and event["disposition"] == "in_progress"
    assert event["bizLocation"] == {"id": BASE + "DOCK-1"}
    # ilmd is allowed only with ADD (commissioning): an OBSERVE event never carries it.
    assert "ilmd" not in event
    assert event["bizTransactionList"] == [{"type": "po", "bizTransaction": "urn:cargotrace:ref:PO-1"}]


def test_serialised_unit_is_an_epc_list() -> None:
    event = object_event(entry(serial="6789", gtin="80614141123458", lot=None, expiry=None, qty=Decimal(1)), BASE)
    assert event["epcList"] == ["https://id.gs1.org/01/80614141123458/21/6789"]
    assert "quantityList" not in event and "ilmd" not in event


def test_digital_link_values_and_location_codes_are_percent_encoded() -> None:
    event = object_event(entry(serial="AB/12%", lot=None, qty=Decimal(1), to_location="BIN A/1"), BASE)
    assert event["epcList"] == ["https://id.gs1.org/01/09506000134352/21/AB%2F12%25"]
    assert event["bizLocation"] == {"id": BASE + "BIN%20A%2F1"}
    lot = object_event(entry(lot="L 7#"), BASE)
    assert lot["quantityList"][0]["epcClass"] == "https://id.gs1.org/01/09506000134352/10/L%207%23"
    assert schema_errors(document([event, lot], T)) == []


@pytest.mark.parametrize(("step", "exported"), [("receiving", "receiving"), ("returning", "receiving"),
                                                ("cycle_counting", "cycle_counting"),
                                                ("putaway", "urn:cargotrace:bizstep:putaway")])
def test_only_cbv_business_steps_are_exported_as_bare_words(step: str, exported: str) -> None:
    assert cbv_biz_step(step) == exported


def test_return_carries_the_rma_and_event_ids_are_content_hashes() -> None:
    event = object_event(entry(disposition="returned", ref="RMA-9", biz_step="returning"), BASE)
    assert event["bizTransactionList"][0]["type"] == "rma" and event["bizStep"] == "receiving"
    assert event["eventID"].startswith("ni:///sha-256;") and event["eventID"].endswith("?ver=CBV2.0")
    assert event["eventID"] == event_hash(event)
    # The id does not depend on the movement id, the record time or the export: only on content.
    same = object_event(entry(id=99, recorded_at=T + timedelta(days=3), disposition="returned", ref="RMA-9",
                              biz_step="returning"), BASE)
    assert same["eventID"] == event["eventID"]
    assert object_event(entry(qty=Decimal(25)), BASE)["eventID"] != object_event(entry(), BASE)["eventID"]


def test_reversal_is_the_original_declared_in_error_with_the_same_id() -> None:
    original = entry(id=5)
    reversal = entry(id=9, recorded_at=datetime(2026, 11, 25, tzinfo=UTC), reverses=5)
    corrective = entry(id=10, qty=Decimal(20))
    event = error_declaration(original, reversal, BASE, [corrective])
    assert event["eventID"] == object_event(original, BASE)["eventID"]
    assert event["errorDeclaration"] == {"declarationTime": "2026-11-25T00:00:00.000Z", "reason": "incorrect_data",
                                         "correctiveEventIDs": [object_event(corrective, BASE)["eventID"]]}
    assert schema_errors(document([event], T)) == []


def test_document_envelope_is_schema_valid() -> None:
    doc = document([object_event(entry(), BASE)], T)
    assert doc["type"] == "EPCISDocument" and doc["schemaVersion"] == "2.0"
    assert doc["@context"] == ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    assert schema_errors(doc) == []


def test_the_schema_check_can_fail() -> None:
    """The validator in these tests rejects what the issue found: ilmd with OBSERVE, 'returning', bare ids."""
    event = object_event(entry(), BASE)
    assert schema_errors(document([{**event, "ilmd": {"cbvmda:lotNumber": "L7"}}], T))
    assert schema_errors(document([{**event, "bizStep": "returning"}], T))
    assert schema_errors(document([{**event, "readPoint": {"id": "DOCK-1"}}], T))
    assert schema_errors(document([{**event, "epcList": ["https://id.gs1.org/01/09506000134352/21/AB/12%"]}], T))
