"""Bodies of the ERP reads (CONTRACT 2.3): stock, movements, dead letters, alarms."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import Field

from api.schemas.common import In, Number, Out, UtcDatetime

# "withdrawn": late data showed the episode never happened, but a person had acted on the alarm;
# kept for the audit trail, never derived, listed only when asked for (core/withdrawal.py).
AlarmState = Literal["active", "cleared", "withdrawn"]


class StockOut(Out):
    sku: str
    location: str
    lot: str | None = Field(description="null when the item is not lot-tracked")
    qty: Number
    expiry: date | None = Field(None, description="extension: expiry of the lot, when known")
    reserved: Number = Field(Decimal(0), description="held for released orders (CONTRACT 3.2)")
    available: Number = Field(Decimal(0), description="qty - reserved, never below zero")


class MovementOut(Out):
    id: int
    ts: UtcDatetime
    sku: str
    qty: Number
    from_location: str
    to_location: str
    lot: str | None
    serial: str | None
    biz_step: str
    ref: str | None
    device_id: str | None
    msg_id: str | None
    reverses: int | None
    disposition: str | None
    expiry: date | None
    source: str
    recorded_at: UtcDatetime


class DeadLetterOut(Out):
    id: int
    received_at: UtcDatetime
    topic: str
    device_id: str | None
    reason: str
    payload: str = Field(description="the raw payload: text, or base64 when payload_encoding is base64")
    payload_encoding: Literal["utf-8", "base64"]
    detail: str
    occurrences: int
    last_received_at: UtcDatetime
    element_index: int | None
    payload_size: int
    replayed_at: UtcDatetime | None
    replay_result: str | None


class AlarmOut(Out):
    id: int
    type: str
    severity: str
    state: AlarmState
    acknowledged: bool
    device_id: str | None
    shipment: str | None
    location: str | None
    started_at: UtcDatetime
    cleared_at: UtcDatetime | None
    peak_value: float | None
    message: str
    sku: str | None
    lot: str | None
    ack_by: str | None
    ack_at: UtcDatetime | None
    ack_note: str | None


class AckIn(In):
    note: str | None = Field(None, max_length=2000)
