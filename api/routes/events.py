"""Live events (CONTRACT 2.3 ``GET /events/stream``): Server-Sent Events from the events outbox.

Each event is ``id: <outbox id>``, ``event: <kind>``, ``data: <json>``; kinds are ``movement``
(a movement, as in ``/movements``), ``alarm`` (as in ``/alarms``), ``shipment_event``
(``{shipment, ts, type, detail}``), ``shipment`` (``{ref, status, previous_status}``) and
``device`` (``{device_id, last_seen, previous_seen}``: first contact, or back after silence).
A client resuming with ``Last-Event-ID`` gets every event after that id, in order, once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from api.auth import Principal, Viewer, bearer_token
from api.db import POOL_WAIT_S, Conn, pool_of
from api.errors import BadRequestError, ServiceUnavailableError, TooManyRequestsError, UnauthorizedError
from api.hub import EventHub, StreamLimitError
from api.schemas.common import UtcDatetime, rfc3339
from api.schemas.reads import AlarmOut, MovementOut
from api.store import events as store
from api.store.stream import follow
from api.tokens import issue_ticket, lookup_token, redeem_ticket

log = logging.getLogger("cargotrace.api.events")
router = APIRouter(tags=["events"])

HEARTBEAT_S = 15.0
# How often an open stream re-checks its token: a revoked or expired token's stream ends within it.
REVALIDATE_S = 5.0
# How long a new stream waits for the process's event listener to be connected (API start).
HUB_WAIT_S = 15.0
# What an EventSource waits before reconnecting after the stream drops (milliseconds).
RETRY_MS = 2000

class StreamTicketOut(BaseModel):
    ticket: str
    expires_at: UtcDatetime


def stream_principal(request: Request, ticket: Annotated[str | None, Query(
        description="extension, on this endpoint only: a stream ticket from `POST /stream-tickets`, for "
                    "browsers' EventSource, which cannot send headers (valid 60 s; never put an API token "
                    "in a URL).")] = None) -> Principal:
    """Any valid token (viewer or above), by header or ticket; the connection is given back before
    the stream starts, so a long-lived stream never holds one of the pool's connections."""
    with pool_of(request).connection(timeout=POOL_WAIT_S) as conn:
        if ticket is not None and not request.headers.get("authorization"):
            found = redeem_ticket(conn, ticket)
            if found is None:
                raise UnauthorizedError("invalid or expired stream ticket; get a new one from POST /stream-tickets")
        else:
            found = lookup_token(conn, bearer_token(request))
            if found is None:
                raise UnauthorizedError("invalid, expired or revoked token")
    return Principal(*found)


StreamViewer = Annotated[Principal, Depends(stream_principal)]


_EVENT_ID = re.compile(r"[0-9]{1,19}")
_MAX_EVENT_ID = 2**63 - 1

_SHAPES: dict[str, Callable[[dict[str, Any]], BaseModel]] = {
    "movement": MovementOut.model_validate,
    "alarm": AlarmOut.model_validate,
}

def _resume_from(header: str | None, query: str | None) -> int | None:
    raw = header if header not in (None, "") else query
    if raw in (None, ""):
        return None
    assert raw is not None
    # ASCII digits only (str.isdigit accepts '²' or Arabic-Indic digits), and within bigint.
    if not _EVENT_ID.fullmatch(raw) or int(raw) > _MAX_EVENT_ID:
        raise BadRequestError("Last-Event-ID must be the id of an event from this stream (a non-negative integer)")
    return int(raw)


def _data(event: store.OutboxEvent) -> dict[str, Any]:
    """The payload in the shape the REST endpoints use (UTC times, numbers as numbers)."""
    shape = _SHAPES.get(event.kind)
    if event.kind == "shipment_event":
        ts = event.payload.get("ts")
        # The trigger renders times in the writer's session time zone; responses are UTC.
        utc = rfc3339(datetime.fromisoformat(ts)) if isinstance(ts, str) else ts
        return {"shipment": event.payload.get("shipment"), "ts": utc, "type": event.payload.get("type"),
                "detail": event.payload.get("detail")}
    if shape is None:
        return event.payload
    try:
        return shape(event.payload).model_dump(mode="json")
    except ValidationError:
        # A column renamed under us must not kill every open stream; the raw row still informs.
        log.warning("outbox event %s (%s) does not fit its API shape; sent as stored", event.id, event.kind)
        return event.payload


def _frame(item: store.StreamItem) -> str:
    if isinstance(item, store.OutboxEvent):
        data = json.dumps(_data(item), separators=(",", ":"), default=str)
        return f"id: {item.id}\nevent: {item.kind}\ndata: {data}\n\n"
    if isinstance(item, store.Ready):
        # No `id:` here: it must not move the client's Last-Event-ID.
        return f"retry: {RETRY_MS}\nevent: ready\ndata: {json.dumps({'after': item.after})}\n\n"
    return ": heartbeat\n\n"


async def _frames(request: Request, hub: EventHub, token_id: int, after: int | None) -> AsyncIterator[str]:
    # Subscribed here, not in the route: only a started generator runs its `finally`, so a client
    # gone before the first byte cannot strand a slot of the stream caps.
    try:
        sub = hub.subscribe(token_id)
    except StreamLimitError:
        return  # another stream of this token took the last slot since the route checked
    live = hub.head  # read right after subscribing (no await between): the queue holds what follows
    pool = pool_of(request)
    try:
        async for item in follow(pool, sub, live, after, HEARTBEAT_S, REVALIDATE_S):
            yield _frame(item)
    finally:
        hub.unsubscribe(sub)


@router.post("/stream-tickets", status_code=201)
def create_stream_ticket(conn: Conn, who: Viewer) -> StreamTicketOut:
    """Extension: a short-lived ticket (60 s) for `GET /events/stream?ticket=`, so that a browser's
    EventSource never carries the long-lived API token in its URL. Reusable until it expires (an
    EventSource reconnects with the same URL); the stream it opens still closes within 15 s when the
    token behind it is revoked."""
    ticket, expires_at = issue_ticket(conn, who.token_id)
    return StreamTicketOut(ticket=ticket, expires_at=expires_at)


@router.get("/events/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"},
                       429: {"description": "too many open streams for this token or in total"}})
async def event_stream(request: Request, who: StreamViewer,
                       last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
                       last_event_id_query: Annotated[str | None, Query(
                           alias="lastEventId", description="extension: the same, for a client that reconnects "
                           "by opening a new EventSource")] = None) -> StreamingResponse:
    """Movements, shipment events, alarm changes and device changes, within a second of their
    commit. Starts with `event: ready` (`{"after": id}`, no `id:`) once the stream is live; a
    `: heartbeat` comment follows every 15 s of silence. Auth: the Bearer header, or (extension,
    this endpoint only) `?ticket=` from `POST /stream-tickets`. At most 4 open streams per token and
    200 per API process (429 beyond); the stream closes within 15 s of its token's revocation or
    expiry."""
    after = _resume_from(last_event_id, last_event_id_query)
    hub: EventHub = request.app.state.hub
    if not await hub.wait_live(HUB_WAIT_S):
        raise ServiceUnavailableError("the event listener has no database connection; retry later")
    try:
        hub.check_capacity(who.token_id)
    except StreamLimitError as exc:
        raise TooManyRequestsError(str(exc), {"Retry-After": "10"}) from None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of the stream
    return StreamingResponse(_frames(request, hub, who.token_id, after), media_type="text/event-stream",
                             headers=headers)
