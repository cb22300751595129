"""Repairs (CONTRACT §4): a repair order from a ticket, parts consumed from stock, warranty."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Operator, Viewer
from api.db import Conn
from api.routes.common import found
from api.schemas.service import IdPath, PartIn, RepairIn, RepairOut, RepairPatch
from api.service_config import refusals
from api.store import repairs as store

router = APIRouter(tags=["after-sales"])


@router.post("/repairs", status_code=201)
def create_repair(body: RepairIn, conn: Conn, who: Operator) -> RepairOut:
    """Warranty: covered until the serial's delivery date plus the item's ``warranty_months``."""
    return RepairOut.model_validate(store.create_repair(conn, body, who.name))


@router.get("/repairs/{repair_id}")
def get_repair(repair_id: IdPath, conn: Conn, _: Viewer) -> RepairOut:
    return RepairOut.model_validate(found(store.get_repair(conn, repair_id), "repair", str(repair_id)))


@router.patch("/repairs/{repair_id}")
def update_repair(repair_id: IdPath, body: RepairPatch, conn: Conn, _: Operator) -> RepairOut:
    with refusals():
        row = store.set_status(conn, repair_id, body.status)
    return RepairOut.model_validate(found(row, "repair", str(repair_id)))


@router.post("/repairs/{repair_id}/parts")
def consume_part(repair_id: IdPath, body: PartIn, conn: Conn, _: Operator) -> RepairOut:
    """Moves the part from stock (the named lot only, when given) to the site's consumed location;
    409 insufficient_stock moves nothing."""
    with refusals():
        row = store.consume_part(conn, repair_id, body.sku, body.qty, body.lot, body.from_location)
    return RepairOut.model_validate(found(row, "repair", str(repair_id)))
