"""The after-sales ticket workflow: which status moves are allowed, who gets a ticket, and when a
ticket counts as first-responded and resolved.

Pure rules: the API store loads the ticket and its assignment rule, asks here, and writes the
answer. Every refusal is a ``WorkflowError`` with a message a person can act on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

TICKET_TYPES: Final = ("complaint", "return", "repair", "logistics_exception")
TICKET_STATUSES: Final = ("open", "in_progress", "waiting_customer", "resolved", "closed")

# The life of a ticket. Work may skip in_progress (a quick fix) and anything may be closed (a
# duplicate, a customer who withdrew); a resolved or closed ticket is history: new work is a new ticket
# (so the resolution time and the feedback on it stay true).
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "open": frozenset({"in_progress", "waiting_customer", "resolved", "closed"}),
    "in_progress": frozenset({"waiting_customer", "resolved", "closed"}),
    "waiting_customer": frozenset({"in_progress", "resolved", "closed"}),
    "resolved": frozenset({"closed"}),
    "closed": frozenset(),
}
# Statuses in which the ticket's resolution clock has stopped.
DONE: Final = frozenset({"resolved", "closed"})


class WorkflowError(ValueError):
    """A step the workflow refuses; ``code`` is the API error code (a 409 or 422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_transition(ticket_id: int, current: str, wanted: str) -> None:
    """Raise unless ``current`` may become ``wanted`` (the same status is not a move: callers skip it)."""
    if wanted not in TRANSITIONS:
        raise WorkflowError("invalid_status", f"unknown ticket status {wanted!r}")
    if wanted not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (a closed ticket stays closed)"
        raise WorkflowError("invalid_transition",
                            f"ticket {ticket_id} is {current}; it cannot become {wanted} (allowed: {allowed})")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    ts: datetime
    author: str
    kind: str  # note, status, assignment
    text: str
    status: str | None = None  # for kind == "status": the status moved to


def first_response_at(opened_at: datetime, timeline: Sequence[TimelineEntry], system: str) -> datetime | None:
    """The first reply by a person: a note or a status change written by someone other than the
    system (an assignment is routing and the opening is the request, not an answer to the customer)."""
    replies = [e.ts for e in timeline
               if e.kind in ("note", "status") and e.status != "open" and e.author != system and e.ts >= opened_at]
    return min(replies, default=None)


def resolved_at(timeline: Sequence[TimelineEntry]) -> datetime | None:
    """When the ticket became resolved or closed (the first such step; a resolved ticket only closes
    after it); None while it is not done."""
    moves = sorted((e for e in timeline if e.kind == "status" and e.status is not None), key=lambda e: e.ts)
    if not moves or moves[-1].status not in DONE:
        return None
    at = moves[-1].ts
    for e in reversed(moves):
        if e.status not in DONE:
            break
        at = e.ts
    return at


@dataclass(frozen=True, slots=True)
class AssignmentRule:
    """Tickets of ``type`` at ``site`` go to ``agents`` in turn; ``escalate_to`` takes breaches."""

    type: str
    site: str
    agents: tuple[str, ...]
    escalate_to: str | None = None


def rule_for(rules: Sequence[AssignmentRule], type_: str, site: str | None) -> AssignmentRule | None:
    """The rule for this type at this site, else this type's rule for any site (``site == '*'``)."""
    exact = [r for r in rules if r.type == type_ and r.site == site and r.agents]
    if exact:
        return exact[0]
    fallback = [r for r in rules if r.type == type_ and r.site == "*" and r.agents]
    return fallback[0] if fallback else None


def next_agent(rule: AssignmentRule, last: str | None) -> str:
    """Round robin: the agent after the one who got this rule's previous ticket (the first when
    there was none, or when that agent has since left the rule)."""
    if not rule.agents:
        raise WorkflowError("no_agents", f"the assignment rule for {rule.type} at {rule.site} names no agent")
    if last is None or last not in rule.agents:
        return rule.agents[0]
    return rule.agents[(rule.agents.index(last) + 1) % len(rule.agents)]


def escalation_target(rule: AssignmentRule | None, assignee: str | None) -> str | None:
    """Who takes a breached ticket: the rule's escalation agent, unless that is already the assignee."""
    if rule is None or rule.escalate_to is None or rule.escalate_to == assignee:
        return None
    return rule.escalate_to


def check_feedback(ticket_id: int, status: str, already_given: bool, score: int) -> None:
    """Customer satisfaction is asked once, after resolution."""
    if status not in DONE:
        raise WorkflowError("ticket_not_resolved", f"ticket {ticket_id} is {status}; feedback is taken once it "
                                                   "is resolved")
    if already_given:
        raise WorkflowError("feedback_given", f"feedback for ticket {ticket_id} was already given")
    if not 1 <= score <= 5:
        raise WorkflowError("invalid_score", f"score must be 1 to 5, not {score}")
