"""Alarms (CONTRACT 2.3): viewers list them, operators acknowledge them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body

from api.auth import Operator, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import found
from api.schemas.reads import AckIn, AlarmOut, AlarmState
from api.store import alarms as store

router = APIRouter(tags=["alarms"])


@router.get("/alarms")
def list_alarms(conn: Conn, _: Viewer, state: AlarmState | None = None, type: str | None = None,
                device: str | None = None, shipment: str | None = None, limit: Limit = DEFAULT_LIMIT,
                cursor: Cursor = None) -> Page[AlarmOut]:
    """Newest first by start time."""
    after = decode_cursor("alarms", cursor, (datetime, int))
    rows = store.list_alarms(conn, store.AlarmFilter(state, type, device, shipment), after, limit + 1)
    return page("alarms", rows, limit, lambda r: (r["started_at"], r["id"]), AlarmOut.model_validate)


@router.get("/alarms/{alarm_id}")
def get_alarm(alarm_id: int, conn: Conn, _: Viewer) -> AlarmOut:
    return AlarmOut.model_validate(found(store.get_alarm(conn, alarm_id), "alarm", str(alarm_id)))


@router.post("/alarms/{alarm_id}/ack")
def acknowledge_alarm(alarm_id: int, conn: Conn, who: Operator,
                      body: Annotated[AckIn | None, Body()] = None) -> AlarmOut:
    """Acknowledge an alarm (optionally with a note); records who and when. Idempotent."""
    row = store.acknowledge(conn, alarm_id, who.name, body.note if body else None)
    return AlarmOut.model_validate(found(row, "alarm", str(alarm_id)))
