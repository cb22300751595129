"""The ledger and the shipments' sensor data as EPCIS 2.0 events, for trading partners (viewer).

The query side of the EPCIS 2.0 REST binding for what we hold: ``GET /epcis/events`` with the
standard query parameters (core.epcis_query) and paging by ``nextPageToken``. The token carries
the query and the position in both streams (movements by id, sensor exports by id); it is
signed, so a modified token is a 400, never a silently different page. (It grants nothing: any
viewer may ask for any page; the signature only makes a mangled token fail loudly.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from api.auth import Viewer
from api.db import AppSettings, Conn
from api.errors import ApiError, BadCursorError
from api.pagination import DEFAULT_LIMIT, Limit
from api.store import epcis as store
from core.epcis import LedgerEntry, document, error_declaration, object_event
from core.epcis_query import (
    EventQuery,
    QueryParameterError,
    ledger_biz_steps,
    ledger_classes,
    ledger_instances,
    ledger_locations,
    matches,
    parse_query,
    wants_object_events,
)
from core.epcis_sensors import publication
from core.ledger import BIZ_STEP, RFID_STEP

router = APIRouter(tags=["epcis"])

QUERY_PARAMETERS = ("eventType", "GE_eventTime", "LT_eventTime", "EQ_bizStep", "EQ_bizLocation", "MATCH_epc",
                    "MATCH_epcClass")
# Every word the ledger writes as biz_step, so that EQ_bizStep can be answered in SQL.
LEDGER_STEPS = frozenset({step for step, _ in (*BIZ_STEP.values(), *RFID_STEP.values())} | {"returning"})


class QueryParameterApiError(ApiError):
    """EPCIS QueryParameterException."""

    status, code = 400, "query_parameter"


@dataclass(frozen=True, slots=True)
class _Position:
    params: dict[str, list[str]]
    since: str | None
    movement: int | None
    sensor: int | None


def _key(site: str) -> bytes:
    return hashlib.sha256(f"cargotrace-epcis-page:{site}".encode()).digest()


def encode_token(position: _Position, site: str) -> str:
    raw = json.dumps({"q": position.params, "since": position.since, "m": position.movement,
                      "s": position.sensor}, separators=(",", ":"), sort_keys=True).encode()
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    signature = hmac.new(_key(site), body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{signature}"


def decode_token(token: str, site: str) -> _Position:
    body, _, signature = token.partition(".")
    expected = hmac.new(_key(site), body.encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(signature, expected):
        raise BadCursorError("nextPageToken was modified or is not one of ours; pass it back unchanged")
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return _Position({k: [str(v) for v in vs] for k, vs in data["q"].items()}, data["since"], data["m"],
                         data["s"])
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        raise BadCursorError("malformed nextPageToken") from None


def _publish_closed_sensor_windows(conn: Conn, settings: AppSettings, now: datetime) -> None:
    grace = timedelta(seconds=settings.epcis_sensor_grace_s)
    for candidate in store.sensor_candidates(conn):
        pub = publication(candidate.shipment, candidate.readings, candidate.excursions, candidate.published,
                          settings.epcis_location_base, now, grace)
        if pub is not None:
            store.publish(conn, candidate.shipment, pub)


def _movement_filter(query: EventQuery, since: datetime | None, base: str) -> store.MovementFilter:
    return store.MovementFilter(since=since, ge_event_time=query.ge_event_time, lt_event_time=query.lt_event_time,
                                biz_steps=ledger_biz_steps(query, sorted(LEDGER_STEPS)),
                                to_locations=ledger_locations(query, base), instances=ledger_instances(query),
                                classes=ledger_classes(query))


def _sensor_page(conn: Conn, query: EventQuery, after: int | None, since: datetime | None,
                 limit: int) -> list[store.SensorExport]:
    """Up to ``limit`` matching sensor exports after ``after`` (filtered here: one or two per shipment)."""
    found: list[store.SensorExport] = []
    while len(found) < limit:
        batch = store.sensor_exports_after(conn, after, since, 500)
        found.extend(x for x in batch if matches(x.event, query))
        if len(batch) < 500:
            break
        after = batch[-1].id
    return found[:limit]


def _movement_events(conn: Conn, entries: list[LedgerEntry], base: str) -> dict[int, dict[str, Any]]:
    """The event of each movement by its id; a reversal is its original declared in error."""
    originals = store.by_ids(conn, [e.reverses for e in entries if e.reverses is not None])
    corrections = store.corrections_of(conn, list(originals))
    correctives = store.by_ids(conn, [c for cs in corrections.values() for c in cs])
    events: dict[int, dict[str, Any]] = {}
    for e in entries:
        if e.reverses is None:
            events[e.id] = object_event(e, base)
        elif (original := originals.get(e.reverses)) is not None:
            fixes = [correctives[c] for c in corrections.get(original.id, []) if c in correctives]
            events[e.id] = error_declaration(original, e, base, fixes)
    return events


@router.get("/epcis/events", response_class=Response,
            responses={200: {"content": {"application/ld+json": {}}, "description": "an EPCISDocument"},
                       400: {"description": "a malformed query parameter or nextPageToken"}})
def epcis_events(request: Request, conn: Conn, settings: AppSettings, _: Viewer,
                 since: Annotated[AwareDatetime | None, Query(description="recorded at or after (RFC 3339)")] = None,
                 limit: Limit = DEFAULT_LIMIT,
                 next_page_token: Annotated[str | None, Query(alias="nextPageToken")] = None) -> Response:
    """Events recorded since ``since``, oldest first, filtered by the EPCIS query parameters
    (``eventType``, ``GE_eventTime``, ``LT_eventTime``, ``EQ_bizStep``, ``EQ_bizLocation``,
    ``MATCH_epc``, ``MATCH_epcClass``; comma-separated or repeated). A ``Link: rel=next`` header
    and ``GS1-Next-Page-Token`` carry ``nextPageToken`` while more follow; the token alone
    continues the same query (``limit`` is per request)."""
    base, site = settings.epcis_location_base, settings.epcis_site_id
    if next_page_token is not None:
        position = decode_token(next_page_token, site)
    else:
        params = {name: request.query_params.getlist(name) for name in QUERY_PARAMETERS
                  if name in request.query_params}
        position = _Position(params, since.isoformat() if since else None, None, None)
    try:
        query = parse_query(position.params)
    except QueryParameterError as exc:
        raise QueryParameterApiError(str(exc)) from None
    since_ts = datetime.fromisoformat(position.since) if position.since else None
    now = datetime.now(UTC)
    _publish_closed_sensor_windows(conn, settings, now)

    entries: list[LedgerEntry] = []
    if wants_object_events(query):
        entries = store.recorded_since(conn, _movement_filter(query, since_ts, base), position.movement, limit + 1)
    sensors = _sensor_page(conn, query, position.sensor, since_ts, limit + 1)
    # Merge the two streams by record time, each kept in its own order (heapq.merge only compares
    # heads), so what a page takes of each stream is a prefix of it and the token stays exact.
    merged: list[tuple[datetime, LedgerEntry | store.SensorExport]] = list(heapq.merge(
        ((e.recorded_at, e) for e in entries),
        ((datetime.fromisoformat(x.event["recordTime"].replace("Z", "+00:00")), x) for x in sensors),
        key=lambda item: item[0]))
    shown = merged[:limit]
    shown_entries = [item for _, item in shown if isinstance(item, LedgerEntry)]
    shown_sensors = [item for _, item in shown if isinstance(item, store.SensorExport)]
    ledger_events = _movement_events(conn, shown_entries, base)
    events: list[dict[str, Any]] = []
    for _time, item in shown:
        if isinstance(item, store.SensorExport):
            events.append(item.event)
        elif item.id in ledger_events:
            events.append(ledger_events[item.id])
    body = document(events, now)
    headers = {}
    if len(merged) > limit:
        token = encode_token(_Position(position.params, position.since,
                                       shown_entries[-1].id if shown_entries else position.movement,
                                       shown_sensors[-1].id if shown_sensors else position.sensor), site)
        url = request.url.remove_query_params(list(request.query_params)).include_query_params(nextPageToken=token)
        headers["Link"] = f'<{url}>; rel="next"'
        headers["GS1-Next-Page-Token"] = token
    return Response(json.dumps(body), media_type="application/ld+json", headers=headers)
