"""Withdrawing alarms whose episode vanished (core.withdrawal, applied by ingest.alarm_withdrawal):
the state stored must not depend on arrival order, yet what a person acted on is never lost."""

from __future__ import annotations

import psycopg
import pytest

from api.store.alarms import AlarmFilter, list_alarms
from ingest.alarm_withdrawal import withdraw_alarms
from tests.integration.world import T0, build_world

pytestmark = pytest.mark.integration


def _excursion_with_ticket(db: psycopg.Connection) -> tuple[int, int]:
    """A temperature alarm on SHP-1 and the ticket ingest opened for it automatically."""
    (alarm_id,) = db.execute(
        "INSERT INTO alarms (type, severity, state, device_id, shipment, subject, started_at, cleared_at, message) "
        "VALUES ('temperature_high', 'critical', 'cleared', 'ENV-1', 'SHP-1', 'ENV-1', %s, %s, 'too warm') "
        "RETURNING id", (T0, T0)).fetchone()  # type: ignore[misc]
    (ticket_id,) = db.execute(
        "INSERT INTO tickets (type, shipment, alarm_id, cause, summary) VALUES "
        "('logistics_exception', 'SHP-1', %s, 'temperature_excursion', 'excursion') RETURNING id",
        (alarm_id,)).fetchone()  # type: ignore[misc]
    return int(alarm_id), int(ticket_id)


def test_an_untouched_automatic_ticket_goes_with_its_vanished_alarm(db: psycopg.Connection) -> None:
    build_world(db)
    alarm_id, _ = _excursion_with_ticket(db)
    with db.transaction(), db.cursor() as cur:
        freed = withdraw_alarms(cur, [(alarm_id, False)])
    assert freed == {"SHP-1"}
    assert db.execute("SELECT count(*) FROM alarms").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM tickets").fetchone() == (0,)


def test_a_worked_ticket_keeps_its_alarm_as_withdrawn_and_out_of_the_default_listing(db: psycopg.Connection) -> None:
    build_world(db)
    alarm_id, ticket_id = _excursion_with_ticket(db)
    db.execute("UPDATE tickets SET notes = notes || '[{\"by\": \"ops\", \"text\": \"customer called\"}]'::jsonb, "
               "updated_at = updated_at + interval '1 minute' WHERE id = %s", (ticket_id,))
    with db.transaction(), db.cursor() as cur:
        freed = withdraw_alarms(cur, [(alarm_id, False)])
    assert freed == set()
    assert db.execute("SELECT id, state FROM alarms").fetchall() == [(alarm_id, "withdrawn")]
    assert db.execute("SELECT id, alarm_id FROM tickets").fetchall() == [(ticket_id, alarm_id)]
    assert list_alarms(db, AlarmFilter(), None, 10) == []
    assert [r["id"] for r in list_alarms(db, AlarmFilter(state="withdrawn"), None, 10)] == [alarm_id]
