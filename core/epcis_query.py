"""The EPCIS 2.0 REST query parameters we answer, and what they mean for our events.

Supported (EPCIS 2.0 s.8.2.7 / the REST binding's query parameters): ``eventType``,
``GE_eventTime``, ``LT_eventTime``, ``EQ_bizStep``, ``EQ_bizLocation``, ``MATCH_epc``,
``MATCH_epcClass``. List values are comma-separated or repeated. A value may be written in any
form the standard allows for the same thing: CBV bare word, CBV Web URI or URN for a bizStep; a
Digital Link URI (any host, percent-encoded or not) or an EPC pure identity URN for an EPC. A
value that names nothing we can hold matches nothing (it is not an error); a malformed time is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote

from core.epcis import cbv_biz_step
from core.epcis_hash import CBV, UnsupportedForHashError, identifier

EVENT_TYPES: Final = frozenset({"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent",
                                "AssociationEvent"})


class QueryParameterError(ValueError):
    """A query parameter the standard does not allow in that form (answered with 400)."""


@dataclass(frozen=True, slots=True)
class EventQuery:
    event_types: frozenset[str] | None = None
    ge_event_time: datetime | None = None
    lt_event_time: datetime | None = None
    biz_steps: frozenset[str] | None = None       # canonical (CBV Web URI) form
    biz_locations: frozenset[str] | None = None
    epcs: frozenset[str] | None = None            # canonical Digital Link form
    epc_classes: frozenset[str] | None = None


def _values(raw: Iterable[str]) -> list[str]:
    return [v.strip() for item in raw for v in item.split(",") if v.strip()]


def canonical_biz_step(value: str) -> str:
    """One form for every way of writing a bizStep: the CBV Web URI, or the URI as given."""
    if value.startswith("urn:epcglobal:cbv:bizstep:"):
        value = value.rsplit(":", 1)[1]
    if ":" not in value:
        value = cbv_biz_step(value)  # the export's own mapping, so query and export agree
    return f"{CBV}BizStep-{value}" if ":" not in value else value


def _canonical_epc(value: str) -> str:
    try:
        return identifier(value)
    except UnsupportedForHashError:
        return value  # an EPC pattern or a class URN: matches no instance we hold


def _canonical_class(value: str) -> str:
    if value.startswith(("http://", "https://")):
        canonical = identifier(value)
        return unquote(canonical)
    return value


def parse_query(params: Mapping[str, list[str]]) -> EventQuery:
    """The supported parameters from a multi-valued query string (unknown names are ignored)."""
    def times(name: str) -> datetime | None:
        values = params.get(name)
        if not values:
            return None
        try:
            ts = datetime.fromisoformat(values[-1].replace("t", "T").replace("z", "Z"))
        except ValueError:
            raise QueryParameterError(f"{name}: {values[-1]!r} is not an RFC 3339 date-time") from None
        if ts.tzinfo is None:
            raise QueryParameterError(f"{name}: {values[-1]!r} needs an offset")
        return ts

    def listed(name: str) -> list[str] | None:
        return _values(params[name]) if name in params else None

    types = listed("eventType")
    if types is not None and set(types) - EVENT_TYPES:
        raise QueryParameterError(f"eventType: {sorted(set(types) - EVENT_TYPES)} are not EPCIS event types")
    steps = listed("EQ_bizStep")
    locations = listed("EQ_bizLocation")
    epcs = listed("MATCH_epc")
    classes = listed("MATCH_epcClass")
    return EventQuery(
        event_types=frozenset(types) if types is not None else None,
        ge_event_time=times("GE_eventTime"),
        lt_event_time=times("LT_eventTime"),
        biz_steps=frozenset(canonical_biz_step(s) for s in steps) if steps is not None else None,
        biz_locations=frozenset(locations) if locations is not None else None,
        epcs=frozenset(_canonical_epc(e) for e in epcs) if epcs is not None else None,
        epc_classes=frozenset(_canonical_class(c) for c in classes) if classes is not None else None,
    )


def matches(event: Mapping[str, Any], query: EventQuery) -> bool:
    """Whether one exported event (JSON form) satisfies every given parameter."""
    if query.event_types is not None and event["type"] not in query.event_types:
        return False
    when = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
    if query.ge_event_time is not None and when < query.ge_event_time:
        return False
    if query.lt_event_time is not None and when >= query.lt_event_time:
        return False
    if query.biz_steps is not None and canonical_biz_step(event.get("bizStep", "")) not in query.biz_steps:
        return False
    if query.biz_locations is not None and event.get("bizLocation", {}).get("id") not in query.biz_locations:
        return False
    if query.epcs is not None and not {_canonical_epc(e) for e in event.get("epcList", [])} & query.epcs:
        return False
    classes = {_canonical_class(q["epcClass"]) for q in event.get("quantityList", [])}
    return query.epc_classes is None or bool(classes & query.epc_classes)


# --- the same query in ledger terms, for the database -----------------------------------------


def ledger_biz_steps(query: EventQuery, known_words: Iterable[str]) -> tuple[str, ...] | None:
    """The ledger words whose exported bizStep is one of the queried ones."""
    if query.biz_steps is None:
        return None
    return tuple(w for w in known_words if canonical_biz_step(cbv_biz_step(w)) in query.biz_steps)


def ledger_locations(query: EventQuery, location_base: str) -> tuple[str, ...] | None:
    if query.biz_locations is None:
        return None
    return tuple(unquote(uri.removeprefix(location_base)) for uri in query.biz_locations
                 if uri.startswith(location_base))


def ledger_instances(query: EventQuery) -> tuple[tuple[str, str], ...] | None:
    """(gtin, serial) of every queried EPC that is a serialised trade item."""
    if query.epcs is None:
        return None
    out = []
    for epc in query.epcs:
        parts = epc.removeprefix("https://id.gs1.org/").split("/")
        if len(parts) == 4 and parts[0] == "01" and parts[2] == "21":
            out.append((parts[1], unquote(parts[3])))
    return tuple(out)


def ledger_classes(query: EventQuery) -> tuple[tuple[str, str | None], ...] | None:
    """(gtin, lot or None) of every queried class that is a GTIN or a GTIN + lot."""
    if query.epc_classes is None:
        return None
    out: list[tuple[str, str | None]] = []
    for cls in query.epc_classes:
        parts = cls.removeprefix("https://id.gs1.org/").split("/", 3)
        if len(parts) == 2 and parts[0] == "01":
            out.append((parts[1], None))
        elif len(parts) == 4 and parts[0] == "01" and parts[2] == "10":
            out.append((parts[1], parts[3]))
    return tuple(out)


def wants_object_events(query: EventQuery) -> bool:
    return query.event_types is None or "ObjectEvent" in query.event_types

