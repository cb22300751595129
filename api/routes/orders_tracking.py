"""Customer order tracking (CONTRACT 3.4): public, the token is the key; status, shipments, events only."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from api.db import Conn
from api.errors import NotFoundError
from api.routes.dashboard import _PAGE_HEADERS, STATIC_DIR
from api.routes.tracking import MAX_TOKEN_LENGTH, NO_STORE
from api.schemas.orders import PublicOrderTracking
from api.store import orders as store

router = APIRouter(tags=["tracking"])
# The page (no API prefix), registered by api.app next to the dashboard's pages.
page = APIRouter(include_in_schema=False)


@page.get("/track/order/{token}")
def order_tracking_page(token: str) -> FileResponse:
    """Public: the page reads its token from the address and calls ``GET /api/v1/track/order/{token}``."""
    return FileResponse(STATIC_DIR / "track-order.html", headers=_PAGE_HEADERS)


@router.get("/track/order/{public_token}", responses={404: {"description": "no order has this token"}})
def public_order_tracking(public_token: str, conn: Conn, response: Response) -> PublicOrderTracking:
    response.headers.update(NO_STORE)
    row = store.order_by_public_token(conn, public_token) if len(public_token) <= MAX_TOKEN_LENGTH else None
    if row is None:
        raise NotFoundError("no order is tracked under this link", headers=NO_STORE)
    return PublicOrderTracking.model_validate(row)
