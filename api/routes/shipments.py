"""Shipments (CONTRACT 2.2 and 2.3): admin plans them, viewers track them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import Admin, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import PUT_RESPONSES, found, set_put_status
from api.schemas.common import CodePath
from api.schemas.shipments import ShipmentIn, ShipmentOut, ShipmentStatus
from api.store import shipments as store
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
