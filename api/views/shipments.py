"""The one place a shipment's API body is put together: the planned record plus its live state.

The live part (position, ETA, events, temperature) is computed elsewhere and passed in as
``ShipmentLive``; extend that dataclass and ``live_states`` (api/store/shipment_live.py), and every
shipment endpoint (and later the public tracking page) picks it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from api.schemas.shipments import LastPosition, ShipmentEvent, ShipmentOut, TemperatureSummary


@dataclass(frozen=True)
class ShipmentLive:
    delayed: bool = False
    last_position: LastPosition | None = None
    eta: datetime | None = None
    distance_remaining_km: float | None = None
    events: list[ShipmentEvent] = field(default_factory=list)
    temperature: TemperatureSummary | None = None


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
    })
