"""The stock ledger as GS1 EPCIS 2.0 ObjectEvents (JSON-LD), for trading partners.

Identifiers use GS1 Digital Link URIs (https://id.gs1.org/01/{gtin}/21/{serial}), which EPCIS 2.0
accepts for instances and classes and which need no company-prefix length. Locations have no
GLN in this system, so they are URNs under a configurable base. A reversed movement is exported
the EPCIS way: the original event again, with an ``errorDeclaration`` naming its correction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
_EVENT_NS: Final = uuid.UUID("6f1f6d2a-4b0c-4f49-9d5e-2f6c8a0e7b11")  # stable event ids across exports
DIGITAL_LINK: Final = "https://id.gs1.org"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    ts: datetime
    recorded_at: datetime
    sku: str
    gtin: str | None
    qty: Decimal
    from_location: str
    to_location: str
    lot: str | None
    serial: str | None
    expiry: date | None
    biz_step: str
    disposition: str | None
    ref: str | None
    source: str
    device_id: str | None
    reverses: int | None


def event_id(movement_id: int, site: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_EVENT_NS, f'{site}/movement/{movement_id}')}"


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _what(e: LedgerEntry) -> dict[str, Any]:
    if e.gtin and e.serial:
        return {"epcList": [f"{DIGITAL_LINK}/01/{e.gtin}/21/{e.serial}"]}
    if e.gtin:
        cls = f"{DIGITAL_LINK}/01/{e.gtin}" + (f"/10/{e.lot}" if e.lot else "")
    else:
        cls = f"urn:cargotrace:sku:{e.sku}" + (f":lot:{e.lot}" if e.lot else "")
    quantity: float | int = int(e.qty) if e.qty == e.qty.to_integral_value() else float(e.qty)
    return {"quantityList": [{"epcClass": cls, "quantity": quantity}]}


def _biz_transaction(e: LedgerEntry) -> list[dict[str, str]]:
    if not e.ref:
        return []
    kind = "rma" if e.disposition == "returned" else "desadv" if e.biz_step in (
        "picking", "loading", "arriving", "shipping") else "po"
    return [{"type": kind, "bizTransaction": f"urn:cargotrace:ref:{e.ref}"}]


def object_event(e: LedgerEntry, location_base: str, site: str) -> dict[str, Any]:
    def loc(code: str) -> str:
        return f"{location_base}{code}"

    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventID": event_id(e.id, site),
        "eventTime": _rfc3339(e.ts),
        "eventTimeZoneOffset": "+00:00",
        "recordTime": _rfc3339(e.recorded_at),
        "action": "OBSERVE",
        **_what(e),
        "bizStep": e.biz_step,
        "readPoint": {"id": loc(e.to_location)},
        "bizLocation": {"id": loc(e.to_location)},
        "sourceList": [{"type": "location", "source": loc(e.from_location)}],
        "destinationList": [{"type": "location", "destination": loc(e.to_location)}],
    }
    if e.disposition:
        event["disposition"] = e.disposition
    if transactions := _biz_transaction(e):
        event["bizTransactionList"] = transactions
    if e.expiry or e.lot:
        ilmd: dict[str, str] = {}
        if e.lot:
            ilmd["cbvmda:lotNumber"] = e.lot
        if e.expiry:
            ilmd["cbvmda:itemExpirationDate"] = e.expiry.isoformat()
        event["ilmd"] = ilmd
    return event


def error_declaration(original: LedgerEntry, reversal: LedgerEntry, location_base: str, site: str,
                      corrective: Iterable[int] = ()) -> dict[str, Any]:
    """The original event again, declared in error at the time its reversal was recorded."""
    event = object_event(original, location_base, site)
    event["errorDeclaration"] = {
        "declarationTime": _rfc3339(reversal.recorded_at),
        "reason": "incorrect_data",
        **({"correctiveEventIDs": [event_id(i, site) for i in corrective]} if corrective else {}),
    }
    return event


def document(events: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
    return {
        "@context": [EPCIS_CONTEXT, {"cbvmda": "urn:epcglobal:cbv:mda:"}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _rfc3339(created),
        "epcisBody": {"eventList": events},
    }
