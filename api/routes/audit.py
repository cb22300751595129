"""Extension: ``GET /audit`` (admin): every write made through the API, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from psycopg.rows import dict_row
from pydantic import BaseModel

from api.auth import Admin
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.schemas.common import UtcDatetime

router = APIRouter(tags=["audit"])


class AuditOut(BaseModel):
    id: int
    at: UtcDatetime
    token_id: int | None
    actor: str
    role: str
    method: str
    path: str
    status: int
    request: Any
    before: Any
    after: Any


@router.get("/audit")
def list_audit(conn: Conn, _: Admin, actor: str | None = None, path: str | None = None,
               limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[AuditOut]:
    """Who wrote what through the API, newest first; filter by `actor` (token label) or exact `path`."""
    after = decode_cursor("audit", cursor, (datetime, int))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM audit_log WHERE (%(actor)s::text IS NULL OR actor = %(actor)s) "
            "AND (%(path)s::text IS NULL OR path = %(path)s) "
            "AND (%(a_at)s::timestamptz IS NULL OR (at, id) < (%(a_at)s, %(a_id)s)) "
            "ORDER BY at DESC, id DESC LIMIT %(limit)s",
            {"actor": actor, "path": path, "a_at": after[0] if after else None, "a_id": after[1] if after else None,
             "limit": limit + 1}).fetchall()
    return page("audit", rows, limit, lambda r: (r["at"], r["id"]), AuditOut.model_validate)
