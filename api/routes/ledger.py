"""Stock and the movement ledger (CONTRACT 2.3), for viewers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.auth import Viewer
from api.db import Conn
from api.errors import InvalidInputError
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.schemas.reads import MovementOut, StockOut
from api.store import ledger_reads as store

router = APIRouter(tags=["stock"])


@router.get("/stock")
def list_stock(conn: Conn, _: Viewer, sku: str | None = None, location: str | None = None,
               site: Annotated[str | None, Query(description="only locations of this site")] = None,
               limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[StockOut]:
    """Non-zero balances per (sku, location, lot)."""
    after = decode_cursor("stock", cursor, (str, str, str))
    rows = store.list_stock(conn, store.StockFilter(sku, location, site), after, limit + 1)
    return page("stock", rows, limit, lambda r: (r["sku"], r["location"], r["lot_key"]), StockOut.model_validate)


@router.get("/movements")
def list_movements(conn: Conn, _: Viewer, sku: str | None = None,
                   location: Annotated[str | None, Query(description="matches from_location or to_location")] = None,
                   ref: str | None = None,
                   since: Annotated[AwareDatetime | None, Query(description="event time, inclusive (RFC 3339)")] = None,
                   until: Annotated[AwareDatetime | None, Query(description="event time, exclusive (RFC 3339)")] = None,
                   limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[MovementOut]:
    """The stock ledger, newest first by event time."""
    if since is not None and until is not None and since >= until:
        raise InvalidInputError("query parameter 'since' must be before 'until'")
    after = decode_cursor("movements", cursor, (datetime, int))
    rows = store.list_movements(conn, store.MovementFilter(sku, location, ref, since, until), after, limit + 1)
    return page("movements", rows, limit, lambda r: (r["ts"], r["id"]), MovementOut.model_validate)
