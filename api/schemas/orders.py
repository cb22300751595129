"""Orders, tasks, purchase orders and replenishment (CONTRACT section 3)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator

from api.schemas.common import Code, In, Number, Out, UtcDatetime

Qty = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6)]
OrderStatus = Literal["open", "allocated", "backordered", "picking", "partially_picked", "picked",
                      "partially_shipped", "shipped", "partially_delivered", "delivered", "cancelled"]
TaskStatus = Literal["open", "done", "short", "cancelled"]
Lot = Annotated[str, Field(min_length=1, max_length=20)]


class OrderLineIn(In):
    sku: Code
    qty: Qty
    lot: Lot | None = Field(None, description="a lot the customer demands; any lot when absent")


class OrderIn(In):
    customer: Code = Field(description="location code of type customer")
    site: Code
    lines: list[OrderLineIn] = Field(min_length=1, max_length=1000)
    requested_at: AwareDatetime | None = Field(None, description="default: when the order was first PUT")
    priority: int = Field(3, ge=1, le=5, description="1 highest … 5")
    destination: Code | None = Field(None, description="geofence code")
    shipments: list[Code] = Field(default_factory=list, max_length=100,
                                  description="extension: shipments the order's goods are loaded onto; their ship "
                                              "scans count for the order and their delivery delivers it")


class ReleaseIn(In):
    device: Code | None = Field(None, description="give every pick task to this scanner; default: the site's "
                                                  "scanners in turn")


class OrderLineOut(Out):
    line_no: int
    sku: str
    qty: Number
    lot: str | None = None
    allocated: Number
    picked: Number
    shipped: Number
    delivered: Number
    backordered: Number


class TaskScanOut(Out):
    device_id: str
    msg_id: str
    ts: UtcDatetime
    qty: Number
    short: bool
    ok: bool
    reason: str | None


class TaskOut(Out):
    task_id: str
    type: Literal["pick", "putaway", "receive", "count"]
    ref: str
    sku: str
    gtin: str | None
    lot: str | None
    qty: Number
    done_qty: Number = Field(description="extension: quantity confirmed so far")
    from_location: str | None
    to_location: str | None
    due_at: UtcDatetime | None
    status: TaskStatus
    device_id: str | None = Field(description="the scanner the task is assigned to")
    scans: list[TaskScanOut] = Field(default_factory=list, description="the scans that worked (or were refused "
                                                                       "on) this task")


class EventOut(Out):
    ts: UtcDatetime
    type: str
    detail: str


class OrderOut(Out):
    ref: str
    status: OrderStatus
    customer: str
    site: str
    priority: int
    requested_at: UtcDatetime
    destination: str | None
    lines: list[OrderLineOut]
    tasks: list[TaskOut]
    shipments: list[str]
    events: list[EventOut]
    public_token: str


class PurchaseOrderLineIn(In):
    sku: Code
    qty: Qty


class PurchaseOrderIn(In):
    supplier: Code = Field(description="location code of type supplier")
    site: Code
    expected_at: AwareDatetime | None = None
    lines: list[PurchaseOrderLineIn] = Field(min_length=1, max_length=1000)

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: list[PurchaseOrderLineIn]) -> list[PurchaseOrderLineIn]:
        skus = [ln.sku for ln in lines]
        if len(set(skus)) != len(skus):
            raise ValueError("one line per sku")
        return lines


class PurchaseOrderLineOut(Out):
    sku: str
    qty: Number
    received: Number


class ReceiptExceptionOut(Out):
    ts: UtcDatetime
    kind: Literal["unexpected_item", "over_receipt"]
    sku: str
    excess: Number
    device_id: str
    msg_id: str
    message: str


class PurchaseOrderOut(Out):
    ref: str
    status: Literal["open", "partially_received", "received", "closed"]
    supplier: str
    site: str
    expected_at: UtcDatetime | None
    lines: list[PurchaseOrderLineOut]
    exceptions: list[ReceiptExceptionOut]


class ReplenishmentOut(Out):
    sku: str
    site: str
    available: float
    reorder_point: float | None
    suggested_qty: float
    days_of_cover: float | None
    stockout_expected_at: UtcDatetime | None
    daily_rate: float = Field(description="extension: forecast consumption per day")
    on_order: float = Field(description="extension: open purchase-order quantity not yet received")
    lead_time_days: float | None = Field(description="extension")


class PublicOrderShipment(Out):
    ref: str
    status: str
    eta: UtcDatetime | None


class PublicOrderTracking(Out):
    status: OrderStatus
    shipments: list[PublicOrderShipment]
    events: list[EventOut]


class SitePolicyIn(In):
    reorder_point: Decimal | None = Field(None, ge=0, max_digits=18, decimal_places=6)
    reorder_qty: Decimal | None = Field(None, gt=0, max_digits=18, decimal_places=6)
    lead_time_days: Decimal | None = Field(None, ge=0, max_digits=10, decimal_places=3)


class SitePolicyOut(Out):
    sku: str
    site: str
    reorder_point: Number | None
    reorder_qty: Number | None
    lead_time_days: Number | None
