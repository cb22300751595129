"""Dead letters (CONTRACT 1 and 2.3): every message ingest could not accept, with the reason."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from api.auth import Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.schemas.reads import DeadLetterOut
from api.store import dead_letters as store
from api.store.records import Row

router = APIRouter(tags=["dead letters"])


def _shape(row: Row) -> DeadLetterOut:
    return DeadLetterOut.model_validate({**row, **store.payload_text(bytes(row["payload"]))})


@router.get("/dead-letters")
def list_dead_letters(conn: Conn, _: Viewer, device: str | None = None, reason: str | None = None,
                      limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[DeadLetterOut]:
    """Newest first by first receive time."""
    after = decode_cursor("dead-letters", cursor, (datetime, int))
    rows = store.list_dead_letters(conn, device, reason, after, limit + 1)
    return page("dead-letters", rows, limit, lambda r: (r["received_at"], r["id"]), _shape)
