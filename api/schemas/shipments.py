"""Shipment bodies: the planned record (PUT) and the tracked view (GET, CONTRACT 2.3)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from api.schemas.common import Code, In, Out, UtcDatetime

ShipmentStatus = Literal["planned", "loading", "in_transit", "arrived", "delivered", "cancelled"]


# A cap on lines per shipment (a request body must stay small; see CARGOTRACE_API_MAX_BODY_BYTES).
MAX_SHIPMENT_LINES = 1000

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
    lines: list[ShipmentLine] = Field(default_factory=list, max_length=MAX_SHIPMENT_LINES,
                                      description=f"at most {MAX_SHIPMENT_LINES} lines")


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
    delivered_at: UtcDatetime | None = Field(None, description="extension: when it was delivered (event time)")
    cancelled_at: UtcDatetime | None = Field(None, description="extension: when it was cancelled")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class CancelIn(In):
    reason: str | None = Field(None, min_length=1, max_length=500,
                               description="recorded as the detail of the `cancelled` event")


class TrackPoint(Out):
    ts: UtcDatetime
    lat: float | None = Field(description="null only for a filtered position without a usable fix")
    lon: float | None
    speed_kmh: float | None
    heading_deg: float | None
    device_id: str
    filter_reason: str | None = Field(None, description="only with include_filtered=true: why the position "
                                                        "does not drive the shipment (null when it does)")


PublicEventType = Literal["loading", "departed", "arrived", "delivered", "cancelled", "delayed", "delivered_late"]


class PublicEvent(Out):
    ts: UtcDatetime
    type: PublicEventType
    detail: str = Field(description="customer-facing text; never internal codes")


class PublicTracking(Out):
    """The customer's view of one shipment: deliberately nothing that names vehicles, places or devices."""

    status: ShipmentStatus
    eta: UtcDatetime | None
    delivered_at: UtcDatetime | None
    events: list[PublicEvent]
    progress_pct: int | None = Field(description="0-100; null when cancelled")
