"""Bodies of the after-sales endpoints (CONTRACT §4): returns, repairs, public issues, feedback,
subscriptions and the service report."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import Field, StringConstraints, model_validator

from api.schemas.common import Code, In, Number, Out, UtcDatetime
from api.schemas.shipments import PublicTracking

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Qty = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=6)]
RmaStatus = Literal["requested", "approved", "rejected", "received", "inspected", "closed"]
BIGINT_MAX = 2**63 - 1  # ids are bigint: a larger number names nothing, and must be a 422, not a 500
IdPath = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
Disposition = Literal["restock", "scrap", "repair", "return_to_supplier"]


class RmaLineIn(In):
    sku: Code
    qty: Qty
    serial: Short | None = None
    lot: Short | None = None
    reason: Text


class RmaIn(In):
    ref: Code | None = Field(None, description="extension: the RMA number printed on the return label "
                                               "(default RMA-<id>)")
    customer: Code
    order: Code | None = None
    shipment: Code | None = None
    lines: list[RmaLineIn] = Field(min_length=1, max_length=500)
    ticket: int | None = Field(None, ge=1, le=BIGINT_MAX, description="extension: the ticket this return answers")
    returns_location: Code | None = Field(None, description="extension: default the site's returns location")

    @model_validator(mode="after")
    def _linked(self) -> RmaIn:
        if self.order is None and self.shipment is None:
            raise ValueError("a return names the order or the shipment it comes from")
        return self


class DecisionIn(In):
    reason: Text | None = None


class RejectIn(In):
    reason: Text


class InspectLineIn(In):
    sku: Code
    qty: Qty
    serial: Short | None = None
    lot: Short | None = None
    disposition: Disposition


class InspectIn(In):
    lines: list[InspectLineIn] = Field(min_length=1, max_length=500)


class RefundIn(In):
    amount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    status: Literal["pending", "paid"] = "pending"


class SettleIn(In):
    refund: RefundIn | None = None
    replacement_order: Code | None = None

    @model_validator(mode="after")
    def _something(self) -> SettleIn:
        if self.refund is None and self.replacement_order is None:
            raise ValueError("give a refund, a replacement_order or both")
        return self


class RmaLineOut(Out):
    sku: str
    qty: Number
    serial: str | None
    lot: str | None
    reason: str
    delivered_at: UtcDatetime | None = Field(description="extension: when this serial was delivered to a customer")


class ReceiptOut(Out):
    movement_id: int
    ts: UtcDatetime
    sku: str
    qty: Number
    serial: str | None
    lot: str | None
    line: int | None
    exception: str | None
    alarm_id: int | None


class InspectionOut(Out):
    movement_id: int
    ts: UtcDatetime
    sku: str
    qty: Number
    serial: str | None
    lot: str | None
    disposition: Disposition
    to_location: str
    inspected_by: str


class RefundOut(Out):
    amount: Number
    currency: str
    status: Literal["pending", "paid"]


class RmaOut(Out):
    id: int
    ref: str
    status: RmaStatus
    customer: str
    order: str | None = Field(validation_alias="order_ref")
    shipment: str | None
    returns_location: str
    ticket: int | None = Field(validation_alias="ticket_id")
    decision_reason: str | None
    decided_by: str | None
    refund: RefundOut | None
    replacement_order: str | None
    lines: list[RmaLineOut]
    receipts: list[ReceiptOut]
    inspections: list[InspectionOut]
    created_by: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RepairIn(In):
    ticket: int = Field(ge=1, le=BIGINT_MAX)
    sku: Code
    serial: Short
    fault: Text
    site: Code | None = Field(None, description="extension: default the ticket's site")


class RepairPatch(In):
    status: Literal["open", "in_progress", "waiting_parts", "done", "cancelled"]


class PartIn(In):
    sku: Code
    qty: Qty
    lot: Short | None = None
    from_location: Code | None = Field(None, description="extension: default any internal location of the site")


class WarrantyOut(Out):
    until: date | None
    covered: bool


class RepairOut(Out):
    id: int
    ticket: int | None = Field(validation_alias="ticket_id", description="null once ingest withdrew the "
                                                                        "automatic ticket it answered")
    sku: str
    serial: str
    fault: str
    status: str
    site: str
    delivered_at: UtcDatetime | None
    warranty: WarrantyOut
    parts: list[dict[str, Any]] = Field(description="movements to the consumed location (ref REPAIR-<id>)")
    created_by: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class PublicIssueIn(In):
    summary: Text
    contact: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254)]


class PublicTicketOut(Out):
    """What a customer sees of a ticket: nothing internal (no notes, assignee, alarms)."""

    id: int
    type: str
    status: str
    opened_at: UtcDatetime
    summary: str
    feedback_given: bool


class PublicTrackingWithTickets(PublicTracking):
    tickets: list[PublicTicketOut] = Field(description="the shipment's after-sales tickets, status only (CONTRACT §4)")


class FeedbackIn(In):
    ticket: int = Field(ge=1, le=BIGINT_MAX)
    score: int = Field(ge=1, le=5)
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


EventKind = Literal["movement", "shipment", "shipment_event", "alarm", "device", "ticket", "order", "rma"]


class SubscriptionIn(In):
    channel: Literal["webhook", "email"]
    target: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=2000)]
    events: list[EventKind] = Field(min_length=1)
    filter: dict[str, str | int | bool] | None = Field(None, description="payload fields that must be equal, e.g. "
                                                                         '{"customer": "CUST-1"}')
    secret: Annotated[str, StringConstraints(min_length=16, max_length=200)] | None = None

    @model_validator(mode="after")
    def _target(self) -> SubscriptionIn:
        if self.channel == "webhook" and not self.target.startswith(("http://", "https://")):
            raise ValueError("a webhook target is an http(s) URL")
        if self.channel == "email" and ("@" not in self.target or " " in self.target):
            raise ValueError("an email target is an address")
        return self


class SubscriptionOut(Out):
    id: str
    channel: str
    target: str
    events: list[str]
    filter: dict[str, Any] | None
    secret: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class DeliveryOut(Out):
    id: int
    outbox_id: int
    kind: str
    delivery_key: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: UtcDatetime
    last_attempt_at: UtcDatetime | None
    last_http_status: int | None
    last_error: str | None
    delivered_at: UtcDatetime | None
    created_at: UtcDatetime
