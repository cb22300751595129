"""Returns (CONTRACT §4): operators request, decide, inspect and settle them; viewers read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.auth import Operator, Viewer
from api.db import Conn
from api.routes.common import found
from api.schemas.service import DecisionIn, InspectIn, RejectIn, RmaIn, RmaOut, RmaStatus, SettleIn
from api.service_config import refusals
from api.store import rmas as store
from core.rma import InspectLine, Refund

router = APIRouter(tags=["after-sales"])
RefPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\s]+$")]


def _out(row: object, ref: str) -> RmaOut:
    return RmaOut.model_validate(found(row, "rma", ref))  # type: ignore[arg-type]


@router.post("/rmas", status_code=201)
def create_rma(body: RmaIn, conn: Conn, who: Operator) -> RmaOut:
    """Request a return; its ref (``RMA-<id>``) goes on the return scans."""
    row = store.create_rma(conn, body, who.name)
    return _out(store.get_rma(conn, row["ref"]), row["ref"])


@router.get("/rmas")
def list_rmas(conn: Conn, _: Viewer, status: RmaStatus | None = None, customer: str | None = None
              ) -> dict[str, list[RmaOut] | None]:
    """Newest first (up to 1000)."""
    return {"items": [RmaOut.model_validate(r) for r in store.list_rmas(conn, status, customer)], "next": None}


@router.get("/rmas/{ref}")
def get_rma(ref: RefPath, conn: Conn, _: Viewer) -> RmaOut:
    store.receive_returns(conn, ref)
    return _out(store.get_rma(conn, ref), ref)


@router.post("/rmas/{ref}/approve")
def approve(ref: RefPath, conn: Conn, who: Operator, body: DecisionIn | None = None) -> RmaOut:
    with refusals():
        return _out(store.decide(conn, ref, True, body.reason if body else None, who.name), ref)


@router.post("/rmas/{ref}/reject")
def reject(ref: RefPath, body: RejectIn, conn: Conn, who: Operator) -> RmaOut:
    with refusals():
        return _out(store.decide(conn, ref, False, body.reason, who.name), ref)


@router.post("/rmas/{ref}/inspect")
def inspect(ref: RefPath, body: InspectIn, conn: Conn, who: Operator) -> RmaOut:
    """A disposition per line; each posts its movement out of the returns location (409 before the
    goods were received, or for more than was received)."""
    lines = [InspectLine(ln.sku, ln.qty, ln.serial, ln.lot, ln.disposition) for ln in body.lines]
    with refusals():
        return _out(store.inspect(conn, ref, lines, who.name), ref)


@router.post("/rmas/{ref}/settle")
def settle(ref: RefPath, body: SettleIn, conn: Conn, _: Operator) -> RmaOut:
    """Extension: record the refund and/or the replacement order on the return."""
    refund = None if body.refund is None else Refund(body.refund.amount, body.refund.currency, body.refund.status)
    with refusals():
        return _out(store.record_refund(conn, ref, refund, body.replacement_order), ref)


@router.post("/rmas/{ref}/close")
def close(ref: RefPath, conn: Conn, _: Operator) -> RmaOut:
    with refusals():
        return _out(store.close(conn, ref), ref)
