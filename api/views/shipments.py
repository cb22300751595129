"""The one place a shipment's API body is put together: the planned record plus its live state.

The live part (position, ETA, events, temperature) is computed elsewhere and passed in as
``ShipmentLive``; extend that dataclass and ``live_states`` (api/store/shipment_live.py), and every
shipment endpoint picks it up. The public tracking page is shaped here too (``shape_public``), from the
same live state but through a whitelist, because it is the one body a stranger may read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from api.schemas.shipments import (
    LastPosition,
    PublicEvent,
    PublicTracking,
    ShipmentEvent,
    ShipmentOut,
    TemperatureSummary,
)


@dataclass(frozen=True)
class ShipmentLive:
    delayed: bool = False
    last_position: LastPosition | None = None
    eta: datetime | None = None
    distance_remaining_km: float | None = None
    events: list[ShipmentEvent] = field(default_factory=list)
    temperature: TemperatureSummary | None = None
    delivered_at: datetime | None = None


NOT_TRACKED = ShipmentLive()


def shape_shipment(record: dict[str, Any], live: ShipmentLive = NOT_TRACKED) -> ShipmentOut:
    """``record`` is a ``shipments`` row (as a dict); ``live`` its tracked state."""
    return ShipmentOut.model_validate({
        **record,
        "delayed": live.delayed,
        "last_position": live.last_position,
        "eta": live.eta,
        "distance_remaining_km": live.distance_remaining_km,
        "events": list(live.events),
        "temperature": live.temperature,
        "delivered_at": live.delivered_at,
    })


# --- the public tracking page ---------------------------------------------------------------------

# What a customer reads for each event. Ingest's details name geofences, scans and devices
# ("left geofence GF-DC1"), so they are never passed through: an event type without an entry
# here is not shown at all, which keeps a new internal event type from leaking by default.
PUBLIC_EVENT_TEXT: Final[Mapping[str, str]] = {
    "loading": "Loading",
    "departed": "On the way",
    "arrived": "Arrived at destination",
    "delivered": "Delivered",
    "cancelled": "Cancelled",
    "delayed": "Running late",
    "delivered_late": "Delivered after the promised time",
}
_FIXED_PROGRESS: Final = {"planned": 0, "loading": 10, "arrived": 95, "delivered": 100}


def progress_pct(status: str, distance_remaining_km: float | None, initial_km: float | None) -> int | None:
    """Rough progress for a customer: fixed steps, and on the road the share of the distance covered.

    In transit it moves from 10 to 90 with the distance covered since the trip started; 50 when
    either distance is unknown. Clamped, so a detour (further away than at the start) shows 10,
    never less, and a truck at the gate shows 90 until the arrival is confirmed (95).
    """
    if status == "cancelled":
        return None
    if status != "in_transit":
        return _FIXED_PROGRESS.get(status, 0)
    if distance_remaining_km is None or initial_km is None or initial_km <= 0:
        return 50
    covered = min(1.0, max(0.0, 1.0 - distance_remaining_km / initial_km))
    return round(10 + 80 * covered)


def shape_public(status: str, live: ShipmentLive, initial_km: float | None) -> PublicTracking:
    """The customer's view; ``live`` must not carry anything else into the body (see PublicTracking)."""
    terminal = status in ("delivered", "cancelled")
    events = [PublicEvent.model_validate({"ts": e.ts, "type": e.type, "detail": PUBLIC_EVENT_TEXT[e.type]})
              for e in live.events if e.type in PUBLIC_EVENT_TEXT]
    return PublicTracking.model_validate({
        "status": status,
        "eta": None if terminal else live.eta,
        "delivered_at": live.delivered_at if status == "delivered" else None,
        "events": events,
        "progress_pct": progress_pct(status, live.distance_remaining_km, initial_km),
    })
