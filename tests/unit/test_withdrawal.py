"""The policy for an alarm whose episode late data showed never happened (core.withdrawal)."""

from __future__ import annotations

from core.withdrawal import TicketTouch, withdrawal


def _ticket(automatic: bool = True, status: str = "open", notes: int = 0) -> TicketTouch:
    return TicketTouch(1, automatic, status, notes)


def test_an_alarm_nobody_acted_on_is_deleted_with_its_untouched_automatic_ticket() -> None:
    assert withdrawal(False, []) == "delete"
    assert withdrawal(False, [_ticket()]) == "delete"


def test_an_acknowledged_alarm_is_kept_as_withdrawn() -> None:
    assert withdrawal(True, []) == "withdraw"
    assert withdrawal(True, [_ticket()]) == "withdraw"


def test_a_ticket_a_person_touched_keeps_its_alarm_as_withdrawn() -> None:
    assert withdrawal(False, [_ticket(notes=1)]) == "withdraw"
    assert withdrawal(False, [_ticket(status="in_progress")]) == "withdraw"
    assert withdrawal(False, [_ticket(automatic=False)]) == "withdraw", "a person opened it"
    assert withdrawal(False, [_ticket(), _ticket(notes=2)]) == "withdraw"


def test_a_ticket_a_person_assigned_or_started_a_return_from_keeps_its_alarm_as_withdrawn() -> None:
    assert withdrawal(False, [TicketTouch(1, True, "open", 0, person_entries=1)]) == "withdraw", "assigned by a person"
    assert withdrawal(False, [TicketTouch(1, True, "open", 0, linked_work=1)]) == "withdraw", "an RMA names it"
