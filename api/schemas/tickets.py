"""After-sales service tickets (CONTRACT 2.3 `GET /tickets` and §4: workflow, SLA, timeline)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from api.schemas.common import Code, In, Out, UtcDatetime
from api.schemas.reads import MovementOut

TicketType = Literal["complaint", "return", "repair", "logistics_exception"]
TicketStatus = Literal["open", "in_progress", "waiting_customer", "resolved", "closed"]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# An RMA number as the return scan's `ref` carries it: free text, but one line and bounded.
Rma = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\s]+$")]
Priority = Annotated[int, Field(ge=1, le=5, description="1 most urgent … 5")]


class TicketNote(Out):
    at: UtcDatetime
    by: str
    text: str
    status: TicketStatus | None = Field(None, description="the status this update moved the ticket to, if any")


class TimelineEntryOut(Out):
    ts: UtcDatetime
    author: str
    kind: Literal["note", "status", "assignment"]
    text: str
    status: TicketStatus | None = Field(None, description="extension: for kind status, the status moved to")


class TicketOut(Out):
    id: int
    type: TicketType
    status: TicketStatus
    shipment: str | None
    alarm_id: int | None
    opened_at: UtcDatetime
    summary: str
    priority: int
    assignee: str | None
    first_response_due: UtcDatetime | None = Field(description="null only until the service loop takes in a "
                                                               "ticket opened automatically")
    resolution_due: UtcDatetime | None
    sla_breached: bool
    customer: str | None
    timeline: list[TimelineEntryOut]
    escalated_to: str | None = Field(description="extension: who took the ticket when its SLA was breached")
    site: str | None = Field(description="extension: the site whose agents work it")
    channel: str = Field(description="extension: staff, public (the tracking page) or automatic")
    contact: str | None = Field(description="extension: how to reach the customer who reported it (public channel)")
    first_response_at: UtcDatetime | None = Field(description="extension: event time of the first reply")
    resolved_at: UtcDatetime | None = Field(description="extension: event time of the resolution")
    feedback_score: int | None = Field(description="extension: the customer's 1-5 once resolved")
    feedback_comment: str | None
    notes: list[TicketNote] = Field(description="extension (older): the notes, oldest first")
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
    alarm_id: int | None = Field(None, ge=1, le=2**63 - 1)
    rma: Rma | None = None
    note: Text | None = Field(None, description="first entry of the ticket's notes")
    priority: Priority = 3
    customer: Code | None = Field(None, description="default: the shipment's customer")
    site: Code | None = Field(None, description="default: the site of the shipment's origin")
    assignee: Name | None = Field(None, description="default: the assignment rule's next agent")


class TicketPatch(In):
    status: TicketStatus | None = Field(None, description="open → in_progress ↔ waiting_customer → resolved → "
                                                          "closed; anything → closed; a closed ticket stays closed")
    note: Text | None = None
    assignee: Name | None = None
    priority: Priority | None = None
    ts: UtcDatetime | None = Field(None, description="event time of this step (default now; not in the future)")

    @model_validator(mode="after")
    def _something(self) -> TicketPatch:
        if self.status is None and self.note is None and self.assignee is None and self.priority is None:
            raise ValueError("give a status, a note, an assignee or a priority")
        return self


class NoteIn(In):
    text: Text
    ts: UtcDatetime | None = Field(None, description="event time of the note (default now; not in the future)")


class AssignmentRuleIn(In):
    agents: list[Name] = Field(min_length=1, max_length=100)
    escalate_to: Name | None = None


class AssignmentRuleOut(Out):
    type: TicketType
    site: str
    agents: list[str]
    escalate_to: str | None
