"""After-sales service tickets (CONTRACT 2.3 `GET /tickets`, plus create, update and detail)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from api.schemas.common import Code, In, Out, UtcDatetime
from api.schemas.reads import MovementOut

TicketType = Literal["complaint", "return", "repair", "logistics_exception"]
TicketStatus = Literal["open", "in_progress", "resolved", "closed"]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
# An RMA number as the return scan's `ref` carries it: free text, but one line and bounded.
Rma = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\s]+$")]


class TicketNote(Out):
    at: UtcDatetime
    by: str
    text: str
    status: TicketStatus | None = Field(None, description="the status this update moved the ticket to, if any")


class TicketOut(Out):
    id: int
    type: TicketType
    status: TicketStatus
    shipment: str | None
    alarm_id: int | None
    opened_at: UtcDatetime
    summary: str
    notes: list[TicketNote] = Field(description="extension: the ticket's history, oldest first")
    rma: str | None = Field(description="extension: return authorisation; return scans with this ref are linked")
    cause: str | None = Field(description="extension: why it was opened automatically "
                                          "(temperature_excursion, late_delivery); null when opened by a person")
    updated_at: UtcDatetime


class TicketDetailOut(TicketOut):
    movements: list[MovementOut] = Field(description="ledger movements whose ref is the ticket's rma, in "
                                                     "event-time order")


class TicketIn(In):
    type: TicketType
    summary: Text
    shipment: Code | None = None
    alarm_id: int | None = Field(None, ge=1)
    rma: Rma | None = None
    note: Text | None = Field(None, description="first entry of the ticket's notes")


class TicketPatch(In):
    status: TicketStatus | None = Field(None, description="open → in_progress → resolved → closed; open → resolved; "
                                                          "anything → closed; a closed ticket stays closed")
    note: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> TicketPatch:
        if self.status is None and self.note is None:
            raise ValueError("give a status, a note or both")
        return self
