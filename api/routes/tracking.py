"""The public tracking page (CONTRACT 2.3 `GET /track/{public_token}`): no auth, the token is the key.

The token in the path is the only way in: there is no listing and no other parameter, so the
endpoint can only ever answer about the one shipment whose link the customer was given.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Response

from api.db import Conn
from api.errors import NotFoundError
from api.schemas.service import PublicTrackingWithTickets
from api.store import tracking
from api.store.public_service import public_tickets
from api.store.shipment_live import live_states
from api.views.shipments import shape_public

router = APIRouter(tags=["tracking"])

# The answer is personal and changes as the truck moves: no browser or proxy may keep it.
NO_STORE: Final = {"Cache-Control": "no-store"}
# Generated tokens are 32 characters; anything much longer is not one and is not worth hashing.
MAX_TOKEN_LENGTH: Final = 128
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {404: {"description": "no shipment has this token"}}


@router.get("/track/{public_token}", responses=_NOT_FOUND)
def public_tracking(public_token: str, conn: Conn, response: Response) -> PublicTrackingWithTickets:
    """Public, no auth: status, ETA, delivery time, customer-facing events and progress of one
    shipment, and its after-sales tickets (status only)."""
    response.headers.update(NO_STORE)
    row = tracking.by_public_token(conn, public_token) if len(public_token) <= MAX_TOKEN_LENGTH else None
    if row is None:
        # The same answer whatever was wrong with the token; it is not echoed back.
        raise NotFoundError("no shipment is tracked under this link", headers=NO_STORE)
    live = live_states(conn, [row], temperature=False)[str(row["ref"])]
    status = str(row["status"])
    # The start distance only matters on the road (progress between 10 and 90 %).
    loading_at = next((e.ts for e in live.events if e.type == "loading"), None)
    initial_km = tracking.initial_distance_km(conn, row, loading_at) if status == "in_transit" else None
    shaped = shape_public(status, live, initial_km)
    tickets = public_tickets(conn, str(row["ref"]))
    return PublicTrackingWithTickets.model_validate({**dict(shaped), "tickets": tickets})
