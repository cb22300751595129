"""Shipment bodies: the planned record (PUT) and the tracked view (GET, CONTRACT 2.3)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from api.schemas.common import Code, In, Out, UtcDatetime

ShipmentStatus = Literal["planned", "loading", "in_transit", "arrived", "delivered", "cancelled"]


class ShipmentLine(In):
    sku: Code
    qty: Annotated[int | float, Field(gt=0)]


class ShipmentIn(In):
    origin: Code = Field(description="location code the goods leave from")
    destination: Code = Field(description="geofence code of the destination")
    customer: Code = Field(description="location code of type customer")
    vehicle: Code = Field(description="location code of type vehicle")
    promised_at: AwareDatetime | None = Field(None, description="RFC 3339 with offset")
    profile: Code | None = Field(None, description="environmental profile the goods must stay within")
    lines: list[ShipmentLine] = Field(default_factory=list)


class LastPosition(Out):
    lat: float
    lon: float
    ts: UtcDatetime


class ShipmentEvent(Out):
    ts: UtcDatetime
    type: str
    detail: str | None = None


class TemperatureSummary(Out):
    min_c: float | None
    max_c: float | None
    mkt_c: float | None
    minutes_out_of_range: float


class ShipmentLineOut(Out):
    sku: str
    qty: int | float


class ShipmentOut(Out):
    ref: str
    status: ShipmentStatus
    delayed: bool
    last_position: LastPosition | None
    eta: UtcDatetime | None
    distance_remaining_km: float | None
    events: list[ShipmentEvent]
    temperature: TemperatureSummary | None
    origin: str
    destination: str
    customer: str
    vehicle: str
    promised_at: UtcDatetime | None
    profile: str | None
    lines: list[ShipmentLineOut]
    public_token: str = Field(description="the token of the public tracking page /track/{public_token}")
    created_at: UtcDatetime
    updated_at: UtcDatetime
