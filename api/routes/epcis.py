"""The ledger as an EPCIS 2.0 document, for trading partners (viewer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from api.auth import Viewer
from api.db import AppSettings, Conn
from api.pagination import DEFAULT_LIMIT, Limit, decode_cursor, encode_cursor
from api.store import epcis as store
from core.epcis import document, error_declaration, object_event

router = APIRouter(tags=["epcis"])


@router.get("/epcis/events", response_class=Response,
            responses={200: {"content": {"application/ld+json": {}}, "description": "an EPCISDocument"}})
def epcis_events(request: Request, conn: Conn, settings: AppSettings, _: Viewer,
                 since: Annotated[AwareDatetime | None, Query(description="recorded at or after (RFC 3339)")] = None,
                 limit: Limit = DEFAULT_LIMIT,
                 next_page_token: Annotated[str | None, Query(alias="nextPageToken")] = None) -> Response:
    """ObjectEvents for the movements recorded since ``since``, oldest first; a ``Link: rel=next``
    header carries ``nextPageToken`` while more follow (EPCIS 2.0 REST paging)."""
    after = decode_cursor("epcis", next_page_token, (int,))
    after_id = after[0] if after else None
    entries = store.recorded_since(conn, since, after_id if isinstance(after_id, int) else None, limit + 1)
    shown = entries[:limit]
    originals = store.by_ids(conn, [e.reverses for e in shown if e.reverses is not None])
    corrections = store.corrections_of(conn, list(originals))
    base, site = settings.epcis_location_base, settings.epcis_site_id
    events: list[dict[str, Any]] = []
    for e in shown:
        if e.reverses is None:
            events.append(object_event(e, base, site))
        elif (original := originals.get(e.reverses)) is not None:
            events.append(error_declaration(original, e, base, site, corrections.get(original.id, [])))
    body = document(events, datetime.now(UTC))
    headers = {}
    if len(entries) > limit and shown:
        token = encode_cursor("epcis", (shown[-1].id,))
        url = request.url.include_query_params(nextPageToken=token)
        headers["Link"] = f'<{url}>; rel="next"'
        headers["GS1-Next-Page-Token"] = token
    return Response(json.dumps(body), media_type="application/ld+json", headers=headers)
