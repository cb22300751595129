"""After-sales tickets (CONTRACT 2.3 and §4): viewers read them, operators open and work them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import Admin, Operator, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import found
from api.schemas.service import IdPath
from api.schemas.tickets import (
    AssignmentRuleIn,
    AssignmentRuleOut,
    NoteIn,
    TicketDetailOut,
    TicketIn,
    TicketOut,
    TicketPatch,
    TicketStatus,
    TicketType,
)
from api.service_config import refusals
from api.store import tickets as store

router = APIRouter(tags=["tickets"])
SitePath = Annotated[str, Path(max_length=64, pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.:-]*)$",
                              description="a site code, or * for any site")]


@router.get("/tickets")
def list_tickets(conn: Conn, _: Viewer, shipment: str | None = None,
                 status: Annotated[TicketStatus | None, Query(description="extension")] = None,
                 type: Annotated[TicketType | None, Query(description="extension")] = None,
                 assignee: Annotated[str | None, Query(description="extension")] = None,
                 limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[TicketOut]:
    """Newest first by opening time."""
    after = decode_cursor("tickets", cursor, (datetime, int))
    rows = store.list_tickets(conn, store.TicketFilter(shipment, status, type, assignee), after, limit + 1)
    return page("tickets", rows, limit, lambda r: (r["opened_at"], r["id"]), TicketOut.model_validate)


@router.get("/tickets/{ticket_id}")
def get_ticket(ticket_id: IdPath, conn: Conn, _: Viewer) -> TicketDetailOut:
    """The ticket and the ledger movements of its return (movements whose ref is the ticket's rma)."""
    row = found(store.get_ticket(conn, ticket_id), "ticket", str(ticket_id))
    return TicketDetailOut.model_validate({**row, "movements": store.movements_for(conn, row["rma"])})


@router.post("/tickets", status_code=201)
def open_ticket(body: TicketIn, conn: Conn, who: Operator) -> TicketOut:
    """Open a ticket with its SLA due times and assignee; 422 invalid_reference for an unknown
    shipment or alarm, 409 for an rma already in use."""
    return TicketOut.model_validate(store.create_ticket(conn, body, who.name))


@router.patch("/tickets/{ticket_id}")
def update_ticket(ticket_id: IdPath, body: TicketPatch, conn: Conn, who: Operator) -> TicketOut:
    """Change the status (409 for a move the workflow does not allow), assignee, priority, and/or
    append a note; each is a timeline entry by the token's user."""
    with refusals():
        row = store.update_ticket(conn, ticket_id, body, who.name)
    return TicketOut.model_validate(found(row, "ticket", str(ticket_id)))


@router.post("/tickets/{ticket_id}/notes", status_code=201)
def add_note(ticket_id: IdPath, body: NoteIn, conn: Conn, who: Operator) -> TicketOut:
    with refusals():
        row = store.add_note(conn, ticket_id, body.text, body.ts, who.name)
    return TicketOut.model_validate(found(row, "ticket", str(ticket_id)))


@router.put("/assignment-rules/{type}/{site}")
def put_assignment_rule(type: Annotated[TicketType, Path()], site: SitePath, body: AssignmentRuleIn,
                        conn: Conn, _: Admin) -> AssignmentRuleOut:
    """Extension: tickets of ``type`` at ``site`` (``*`` for any site) go to ``agents`` in turn;
    ``escalate_to`` takes the ones whose SLA is breached."""
    return AssignmentRuleOut.model_validate(
        store.put_assignment_rule(conn, type, site, list(body.agents), body.escalate_to))
