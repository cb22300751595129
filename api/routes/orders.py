"""Orders, tasks, purchase orders and replenishment (CONTRACT 3.2, 3.3): operators write, viewers read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.auth import Admin, Operator, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import PUT_RESPONSES, found, set_put_status
from api.schemas.common import CodePath
from api.schemas.orders import (
    OrderIn,
    OrderOut,
    OrderStatus,
    PurchaseOrderIn,
    PurchaseOrderOut,
    ReleaseIn,
    ReplenishmentOut,
    SitePolicyIn,
    SitePolicyOut,
    TaskOut,
    TaskStatus,
)
from api.store import orders as store

router = APIRouter(tags=["orders"])


@router.put("/orders/{ref}", responses=PUT_RESPONSES)
def put_order(ref: CodePath, body: OrderIn, conn: Conn, _: Operator, response: Response) -> OrderOut:
    """Create or replace an open order (status `open`); 409 once it is released."""
    row, created = store.put_order(conn, ref, body)
    set_put_status(response, created)
    return OrderOut.model_validate(row)


@router.post("/orders/{ref}/release")
def release_order(ref: CodePath, conn: Conn, _: Operator, body: ReleaseIn | None = None) -> OrderOut:
    """Allocate available stock FEFO then FIFO, reserve it, create pick tasks for `device` or the site's
    scanners in turn; what is not covered is backordered and filled when stock arrives."""
    return OrderOut.model_validate(store.release(conn, ref, body.device if body else None))


@router.post("/orders/{ref}/cancel")
def cancel_order(ref: CodePath, conn: Conn, _: Operator) -> OrderOut:
    """Release the reservations and withdraw open tasks; 409 once goods have shipped."""
    return OrderOut.model_validate(store.cancel(conn, ref))


@router.get("/orders")
def list_orders(conn: Conn, _: Viewer, status: OrderStatus | None = None,
                site: Annotated[str | None, Query(description="extension")] = None,
                limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[OrderOut]:
    after = decode_cursor("orders", cursor, (str,))
    rows = store.list_orders(conn, status, site, str(after[0]) if after else None, limit + 1)
    return page("orders", rows, limit, lambda r: (r["ref"],), OrderOut.model_validate)


@router.get("/orders/{ref}")
def get_order(ref: CodePath, conn: Conn, _: Viewer) -> OrderOut:
    return OrderOut.model_validate(found(store.get_order(conn, ref), "order", ref))


@router.get("/tasks")
def list_tasks(conn: Conn, _: Viewer, device: str | None = None, status: TaskStatus | None = None,
               ref: str | None = None, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[TaskOut]:
    """Tasks with the scans that worked them, in task id order."""
    after = decode_cursor("tasks", cursor, (str,))
    rows = store.list_tasks(conn, device, status, ref, str(after[0]) if after else None, limit + 1)
    return page("tasks", rows, limit, lambda r: (r["task_id"],), TaskOut.model_validate)


@router.post("/tasks/{task_id}/short")
def close_task_short(task_id: Annotated[str, Path(min_length=1, max_length=200)], conn: Conn,
                     who: Operator) -> TaskOut:
    """Extension: close an open task with what was picked; the rest of its line is backordered."""
    return TaskOut.model_validate(store.close_task_short(conn, task_id, who.name))


@router.put("/purchase-orders/{ref}", responses=PUT_RESPONSES)
def put_purchase_order(ref: CodePath, body: PurchaseOrderIn, conn: Conn, _: Operator,
                       response: Response) -> PurchaseOrderOut:
    """An expected receipt; `receive` scans whose `ref` is the PO fill it."""
    row, created = store.put_purchase_order(conn, ref, body)
    set_put_status(response, created)
    return PurchaseOrderOut.model_validate(row)


@router.post("/purchase-orders/{ref}/close")
def close_purchase_order(ref: CodePath, conn: Conn, _: Operator) -> PurchaseOrderOut:
    """Extension: nothing more is expected on this PO."""
    return PurchaseOrderOut.model_validate(store.close_purchase_order(conn, ref))


@router.get("/purchase-orders")
def list_purchase_orders(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT,
                         cursor: Cursor = None) -> Page[PurchaseOrderOut]:
    after = decode_cursor("purchase-orders", cursor, (str,))
    rows = store.list_purchase_orders(conn, str(after[0]) if after else None, limit + 1)
    return page("purchase-orders", rows, limit, lambda r: (r["ref"],), PurchaseOrderOut.model_validate)


@router.get("/purchase-orders/{ref}")
def get_purchase_order(ref: CodePath, conn: Conn, _: Viewer) -> PurchaseOrderOut:
    return PurchaseOrderOut.model_validate(found(store.get_purchase_order(conn, ref), "purchase order", ref))


@router.get("/replenishment")
def list_replenishment(conn: Conn, _: Viewer, site: str | None = None,
                       sku: str | None = None) -> Page[ReplenishmentOut]:
    """Per (item, site): available, reorder point, suggested quantity and the forecast cover."""
    rows = store.replenishment(conn, site, sku)
    return Page[ReplenishmentOut](items=[ReplenishmentOut.model_validate(r) for r in rows], next=None)


@router.put("/items/{sku}/sites/{site}", responses=PUT_RESPONSES, tags=["master data"])
def put_site_policy(sku: CodePath, site: CodePath, body: SitePolicyIn, conn: Conn, _: Admin,
                    response: Response) -> SitePolicyOut:
    """Extension: reorder point, quantity and lead time of an item at one site, where they differ from the item's."""
    row, created = store.put_site_policy(conn, sku, site, body)
    set_put_status(response, created)
    return SitePolicyOut.model_validate(row)
