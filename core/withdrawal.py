"""What happens to a stored alarm whose episode no longer exists with the data now known.

A late reading or scan can show that an alarm the platform raised never really happened (a gap
filled, a delivery earlier than the scans known so far). The stored state must not depend on the
order the data arrived in (CONTRACT 2.4), so such an alarm cannot stay as a normal cleared alarm.
But a person may already have acted on it (acknowledged it, or worked the ticket it opened):
that is an audit trail and is never destroyed.

- Nobody acted on it: the alarm, and the tickets it opened automatically that nobody touched,
  are deleted, exactly as if the alarm had never been raised.
- Somebody acted on it: it is kept as ``withdrawn``, a state the derivation never produces; the
  read APIs list it only when asked for explicitly and the replay oracle ignores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

WITHDRAWN = "withdrawn"

Withdrawal = Literal["delete", "withdraw"]


@dataclass(frozen=True, slots=True)
class TicketTouch:
    """What a person could have done to a ticket: open it themselves, move its status, write a
    note, assign it or change its priority (timeline entries by a person), or start a return or a
    repair from it."""

    id: int
    automatic: bool  # opened by the rules (it has a cause), not by a person
    status: str
    notes: int
    person_entries: int = 0  # timeline entries whose author is a person, not the service loop
    linked_work: int = 0  # RMAs and repair orders that name the ticket

    @property
    def untouched(self) -> bool:
        # updated_at is deliberately not a criterion: machines (an SLA intake, an automatic
        # assignment by the service loop) update it too.
        return (self.automatic and self.status == "open" and self.notes == 0 and self.person_entries == 0
                and self.linked_work == 0)


def withdrawal(acknowledged: bool, tickets: Sequence[TicketTouch]) -> Withdrawal:
    """Delete an alarm nobody acted on (with its untouched tickets), keep the rest as withdrawn."""
    if acknowledged or any(not t.untouched for t in tickets):
        return "withdraw"
    return "delete"
