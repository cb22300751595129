"""The stock ledger as GS1 EPCIS 2.0 ObjectEvents (JSON-LD), for trading partners.

Identifiers use GS1 Digital Link URIs (https://id.gs1.org/01/{gtin}/21/{serial}, values
percent-encoded), which EPCIS 2.0 accepts for instances and classes and which need no
company-prefix length. Locations have no GLN in this system, so they are URNs under a
configurable base. Vocabulary is CBV 2.0 only: a ledger word that is not CBV is mapped to its CBV
equivalent or written as a user-vocabulary URI. Event ids are the CBV 2.0 event hash
(core.epcis_hash), so an event has the same id in every export and in every partner's repository.
A reversed movement is exported the EPCIS way: the original event again (same id), with an
``errorDeclaration`` naming its correction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote

from core.epcis_hash import dl_escape, event_hash

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
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


# CBV 2.0 business steps and dispositions (bare words in the JSON binding).
CBV_BIZ_STEPS: Final = frozenset({
    "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning", "creating_class_instance",
    "cycle_counting", "decommissioning", "departing", "destroying", "disassembling", "dispensing", "encoding",
    "entering_exiting", "holding", "inspecting", "installing", "killing", "loading", "other", "packing", "picking",
    "receiving", "removing", "repackaging", "repairing", "replacing", "reserving", "retail_selling", "shipping",
    "staging_outbound", "stock_taking", "stocking", "storing", "transporting", "unloading", "unpacking",
    "void_shipping", "sensor_reporting", "sampling"})
CBV_DISPOSITIONS: Final = frozenset({
    "active", "container_closed", "damaged", "destroyed", "dispensed", "disposed", "encoded", "expired",
    "in_progress", "in_transit", "inactive", "no_pedigree_match", "non_sellable_other", "partially_dispensed",
    "recalled", "reserved", "retail_sold", "returned", "sellable_accessible", "sellable_not_accessible", "stolen",
    "unknown", "available", "completeness_verified", "completeness_inferred", "conformant", "container_open",
    "mismatch_instance", "mismatch_class", "mismatch_quantity", "needs_replacement", "non_conformant",
    "unavailable"})
# Words used in the ledger that are not CBV: a return is CBV "receiving" with disposition "returned".
_CBV_FOR: Final = {"returning": "receiving"}
USER_VOCABULARY: Final = "urn:cargotrace:"


def cbv_biz_step(step: str) -> str:
    """The CBV word for a ledger step; anything else becomes a user-vocabulary URI (never a bare non-CBV word)."""
    step = _CBV_FOR.get(step, step)
    return step if step in CBV_BIZ_STEPS else f"{USER_VOCABULARY}bizstep:{quote(step, safe='')}"


def cbv_disposition(disposition: str) -> str:
    return disposition if disposition in CBV_DISPOSITIONS else \
        f"{USER_VOCABULARY}disposition:{quote(disposition, safe='')}"


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def digital_link(gtin: str, *qualifiers: tuple[str, str]) -> str:
    """A GS1 Digital Link URI; every value percent-encoded (a serial "AB/12%" is "AB%2F12%25")."""
    return DIGITAL_LINK + f"/01/{gtin}" + "".join(f"/{ai}/{dl_escape(value)}" for ai, value in qualifiers)


def _urn(kind: str, value: str) -> str:
    return f"{USER_VOCABULARY}{kind}:{quote(value, safe='')}"


def _what(e: LedgerEntry) -> dict[str, Any]:
    if e.gtin and e.serial:
        return {"epcList": [digital_link(e.gtin, ("21", e.serial))]}
    if e.gtin:
        cls = digital_link(e.gtin, *((("10", e.lot),) if e.lot else ()))
    else:
        cls = _urn("sku", e.sku) + (f":lot:{quote(e.lot, safe='')}" if e.lot else "")
    quantity: float | int = int(e.qty) if e.qty == e.qty.to_integral_value() else float(e.qty)
    return {"quantityList": [{"epcClass": cls, "quantity": quantity}]}


def _biz_transaction(e: LedgerEntry) -> list[dict[str, str]]:
    if not e.ref:
        return []
    kind = "rma" if e.disposition == "returned" else "desadv" if e.biz_step in (
        "picking", "loading", "arriving", "shipping") else "po"
    return [{"type": kind, "bizTransaction": _urn("ref", e.ref)}]


def location_id(location_base: str, code: str) -> str:
    return f"{location_base}{quote(code, safe='')}"


def object_event(e: LedgerEntry, location_base: str) -> dict[str, Any]:
    """One movement as an OBSERVE ObjectEvent, its eventID the CBV 2.0 event hash.

    No ``ilmd``: EPCIS allows instance/lot master data only with action ADD, i.e. when the
    objects are commissioned, which happens at their producer, not here. The lot is in the
    class identifier (``/01/<gtin>/10/<lot>``); the expiry stays master data of the lot.
    """
    def loc(code: str) -> str:
        return location_id(location_base, code)

    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": _rfc3339(e.ts),
        "eventTimeZoneOffset": "+00:00",
        "recordTime": _rfc3339(e.recorded_at),
        "action": "OBSERVE",
        **_what(e),
        "bizStep": cbv_biz_step(e.biz_step),
        "readPoint": {"id": loc(e.to_location)},
        "bizLocation": {"id": loc(e.to_location)},
        "sourceList": [{"type": "location", "source": loc(e.from_location)}],
        "destinationList": [{"type": "location", "destination": loc(e.to_location)}],
    }
    if e.disposition:
        event["disposition"] = cbv_disposition(e.disposition)
    if transactions := _biz_transaction(e):
        event["bizTransactionList"] = transactions
    return {"eventID": event_hash(event), **event}


def error_declaration(original: LedgerEntry, reversal: LedgerEntry, location_base: str,
                      corrective: Iterable[LedgerEntry] = ()) -> dict[str, Any]:
    """The original event again (same hash: an error declaration is not part of it), declared in
    error at the time its reversal was recorded."""
    event = object_event(original, location_base)
    correctives = [object_event(c, location_base)["eventID"] for c in corrective]
    event["recordTime"] = _rfc3339(reversal.recorded_at)  # this version was recorded with the reversal
    event["errorDeclaration"] = {
        "declarationTime": _rfc3339(reversal.recorded_at),
        "reason": "incorrect_data",
        **({"correctiveEventIDs": correctives} if correctives else {}),
    }
    return event


def document(events: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
    return {
        "@context": [EPCIS_CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _rfc3339(created),
        "epcisBody": {"eventList": events},
    }
