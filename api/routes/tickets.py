"""After-sales tickets (CONTRACT 2.3): viewers read them, operators open and work them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Operator, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import found
from api.schemas.tickets import TicketDetailOut, TicketIn, TicketOut, TicketPatch, TicketStatus, TicketType
from api.store import tickets as store

router = APIRouter(tags=["tickets"])


@router.get("/tickets")
def list_tickets(conn: Conn, _: Viewer, shipment: str | None = None,
                 status: Annotated[TicketStatus | None, Query(description="extension")] = None,
                 type: Annotated[TicketType | None, Query(description="extension")] = None,
                 limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[TicketOut]:
    """Newest first by opening time."""
    after = decode_cursor("tickets", cursor, (datetime, int))
    rows = store.list_tickets(conn, store.TicketFilter(shipment, status, type), after, limit + 1)
    return page("tickets", rows, limit, lambda r: (r["opened_at"], r["id"]), TicketOut.model_validate)


@router.get("/tickets/{ticket_id}")
def get_ticket(ticket_id: int, conn: Conn, _: Viewer) -> TicketDetailOut:
    """The ticket and the ledger movements of its return (movements whose ref is the ticket's rma)."""
    row = found(store.get_ticket(conn, ticket_id), "ticket", str(ticket_id))
    return TicketDetailOut.model_validate({**row, "movements": store.movements_for(conn, row["rma"])})


@router.post("/tickets", status_code=201)
def open_ticket(body: TicketIn, conn: Conn, who: Operator) -> TicketOut:
    """Open a ticket; 422 invalid_reference for an unknown shipment or alarm, 409 for an rma already in use."""
    return TicketOut.model_validate(store.create_ticket(conn, body, who.name))


@router.patch("/tickets/{ticket_id}")
def update_ticket(ticket_id: int, body: TicketPatch, conn: Conn, who: Operator) -> TicketOut:
    """Change the status (409 for a move the workflow does not allow) and/or append a note."""
    row = store.update_ticket(conn, ticket_id, body.status, body.note, who.name)
    return TicketOut.model_validate(found(row, "ticket", str(ticket_id)))
