"""The customer's side of after-sales (CONTRACT §4), public by the shipment's tracking token.

No account: the token is the key, as for ``GET /track/{token}``. Reporting is rate-limited per
shipment; answers carry nothing internal (no notes, assignee, alarms or other shipments).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from api.db import Conn
from api.errors import NotFoundError
from api.routes.tracking import MAX_TOKEN_LENGTH, NO_STORE
from api.schemas.service import FeedbackIn, PublicIssueIn, PublicTicketOut
from api.schemas.tickets import TicketIn
from api.service_config import refusals
from api.store import public_service as store
from api.store import tickets, tracking
from api.store.records import Row

router = APIRouter(tags=["tracking"])


def _shipment(conn: Conn, token: str) -> Row:
    row = tracking.by_public_token(conn, token) if len(token) <= MAX_TOKEN_LENGTH else None
    if row is None:
        raise NotFoundError("no shipment is tracked under this link", headers=NO_STORE)
    return row


@router.get("/track/{public_token}/tickets")
def public_tickets(public_token: str, conn: Conn, response: Response) -> list[PublicTicketOut]:
    """Extension: the shipment's tickets, status only (also in ``GET /track/{token}``)."""
    response.headers.update(NO_STORE)
    ref = str(_shipment(conn, public_token)["ref"])
    return [PublicTicketOut.model_validate(r) for r in store.public_tickets(conn, ref)]


@router.post("/track/{public_token}/issues", status_code=201)
def report_issue(public_token: str, body: PublicIssueIn, conn: Conn, response: Response) -> PublicTicketOut:
    """Report a problem: opens a ``complaint`` linked to the shipment (429 beyond the hourly limit)."""
    response.headers.update(NO_STORE)
    ref = str(_shipment(conn, public_token)["ref"])
    store.check_rate(conn, ref, datetime.now(UTC))
    opened = TicketIn(type="complaint", summary=body.summary, shipment=ref, alarm_id=None, rma=None, note=None,
                      priority=3, customer=None, site=None, assignee=None)
    row = tickets.create_ticket(conn, opened, store.PUBLIC_AUTHOR, channel="public", contact=body.contact)
    return PublicTicketOut.model_validate({**row, "feedback_given": False})


@router.post("/track/{public_token}/feedback", status_code=201)
def give_feedback(public_token: str, body: FeedbackIn, conn: Conn, response: Response) -> PublicTicketOut:
    """1-5 and a comment, once per ticket, once it is resolved (409 otherwise)."""
    response.headers.update(NO_STORE)
    ref = str(_shipment(conn, public_token)["ref"])
    with refusals():
        row = store.feedback(conn, ref, body.ticket, body.score, body.comment)
    if row is None:
        raise NotFoundError(f"this shipment has no ticket {body.ticket}", headers=NO_STORE)
    return PublicTicketOut.model_validate(row)
