"""Shipments (CONTRACT 2.2 and 2.3): admin plans them, viewers track them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from api.auth import Admin, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import PUT_RESPONSES, found, set_put_status
from api.schemas.common import CodePath
from api.schemas.shipments import CancelIn, ShipmentIn, ShipmentOut, ShipmentStatus, TrackPoint
from api.store import shipments as store
from api.store import tracking
from api.store.records import Row
from api.store.shipment_live import live_states
from api.views.shipments import shape_shipment

router = APIRouter(tags=["shipments"])


@router.put("/shipments/{ref}", responses=PUT_RESPONSES)
def put_shipment(ref: CodePath, body: ShipmentIn, conn: Conn, _: Admin, response: Response) -> ShipmentOut:
    row, created = store.put_shipment(conn, ref, body)
    set_put_status(response, created)
    return shape_shipment(row, live_states(conn, [row])[ref])


@router.get("/shipments/{ref}")
def get_shipment(ref: str, conn: Conn, _: Viewer) -> ShipmentOut:
    row = found(store.get_shipment(conn, ref), "shipment", ref)
    return shape_shipment(row, live_states(conn, [row])[ref])


@router.get("/shipments")
def list_shipments(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
                   status: Annotated[ShipmentStatus | None, Query(description="extension: only this status")] = None,
                   ) -> Page[ShipmentOut]:
    after = decode_cursor("shipments", cursor, (str,))
    rows = store.list_shipments(conn, None if after is None else str(after[0]), limit + 1, status)
    live = live_states(conn, rows[:limit])
    return page("shipments", rows, limit, lambda r: (r["ref"],), lambda r: shape_shipment(r, live[r["ref"]]))


def _track_point(include_filtered: bool) -> Callable[[Row], TrackPoint]:
    # Without include_filtered every point is usable, so filter_reason is left out of the body
    # (the route drops unset fields) instead of being a column of nulls.
    if include_filtered:
        return TrackPoint.model_validate
    return lambda r: TrackPoint.model_validate({k: v for k, v in r.items() if k != "filter_reason"})


@router.get("/shipments/{ref}/track", response_model_exclude_unset=True)
def get_track(ref: str, conn: Conn, _: Viewer,
              include_filtered: Annotated[bool, Query(description="extension: also the positions the filter "
                                                                  "rejected, with their filter_reason")] = False,
              limit: Limit = MAX_LIMIT, cursor: Cursor = None) -> Page[TrackPoint]:
    """The vehicle's GPS track while it carries the shipment (loading, or creation, to delivery or now),
    in event-time order. Pages hold up to 1000 points by default so a map usually needs one request."""
    row = found(store.get_shipment(conn, ref), "shipment", ref)
    after = decode_cursor("track", cursor, (datetime, str, str))
    rows = tracking.track(conn, row, include_filtered, after, limit + 1)
    return page("track", rows, limit, lambda r: (r["ts"], r["device_id"], r["msg_id"]),
                _track_point(include_filtered))


@router.post("/shipments/{ref}/cancel")
def cancel_shipment(ref: str, conn: Conn, who: Admin, body: Annotated[CancelIn | None, Body()] = None,
                    ) -> ShipmentOut:
    """Extension: cancel a shipment that is not delivered yet (409 once delivered or cancelled).
    Admin only: shipments are admin data (CONTRACT), an operator may not undo one."""
    detail = body.reason if body is not None and body.reason else f"cancelled by {who.name}"
    if not tracking.cancel(conn, ref, detail):
        found(None, "shipment", ref)
    row = found(store.get_shipment(conn, ref), "shipment", ref)
    return shape_shipment(row, live_states(conn, [row])[ref])
