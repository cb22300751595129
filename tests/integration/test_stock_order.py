"""Regressions of issue 9 (stock side): the same scans and gate reads in any arrival order give the
same ledger, balances, passages, serial locations and discrepancy alarms."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

import psycopg
import pytest

from ingest.decode import Inbound
from ingest.rfid_sweep import sweep
from tests.integration.test_rfid_gate import RECEIVED, messages, passage_reads, tag
from tests.integration.world import GTIN_B, T0, apply, balances, build_world, gs1, net_ledger, scan

pytestmark = pytest.mark.integration


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


def _reset(db: psycopg.Connection) -> None:
    from tests.integration.db_fixtures import truncate_all

    truncate_all(db)
    build_world(db)


def _alarms(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT subject, state, started_at, cleared_at, peak_value FROM alarms "
                      "WHERE type = 'stock_discrepancy' ORDER BY subject, started_at").fetchall()


def _ship_stream() -> list[Inbound]:
    b = gs1(GTIN_B)
    return [scan("SC-1", "recv", b, 0, qty=5),
            scan("SC-2", "ship", b, 2, mode="ship", location="DOCK-1", qty=5, ref="SHP-1"),
            scan("SC-2", "deliver", b, 3, mode="deliver", qty=6, ref="SHP-1")]  # one more than was loaded


def test_discrepancy_alarms_are_event_time_intervals_whatever_the_arrival_order(
        world: psycopg.Connection) -> None:
    """A deliver processed before its ship used to open an extra alarm, started at wall-clock now()."""
    expected = [("SKU-B|TRUCK-1|", "active", T0 + timedelta(minutes=3), None, -1.0)]
    for order in itertools.permutations(_ship_stream()):
        _reset(world)
        for message in order:
            apply(world, [message])
        assert _alarms(world) == expected, [m.topic + m.payload.decode() for m in order]


def test_an_alarm_that_still_exists_keeps_its_id_and_acknowledgement(world: psycopg.Connection) -> None:
    b = gs1(GTIN_B)
    apply(world, _ship_stream())
    world.execute("UPDATE alarms SET acknowledged = true, ack_note = 'truck recount booked'")
    (alarm_id,) = world.execute("SELECT id FROM alarms").fetchone()  # type: ignore[misc]
    # A late pick from the truck, earlier in event time: the same episode starts earlier and goes deeper.
    apply(world, [scan("SC-2", "late", b, 2.5, mode="pick", location="TRUCK-1", to_location="STAGE-1", qty=2)])
    assert world.execute("SELECT id, state, started_at, peak_value, acknowledged, ack_note FROM alarms").fetchall() == [
        (alarm_id, "active", T0 + timedelta(minutes=3), -3.0, True, "truck recount booked")]
    # The missing unit turns up, loaded earlier: the episode never happened. Acknowledged, so kept
    # for the audit trail, but withdrawn (a state the rules never derive), not a normal cleared alarm.
    apply(world, [scan("SC-2", "found", b, 1, mode="receive", location="TRUCK-1", qty=3)])
    assert world.execute("SELECT id, state, acknowledged FROM alarms").fetchall() == [(alarm_id, "withdrawn", True)]


def test_a_vanished_discrepancy_a_person_opened_a_ticket_on_is_withdrawn_and_reinstated_if_it_returns(
        world: psycopg.Connection) -> None:
    b = gs1(GTIN_B)
    apply(world, _ship_stream())
    (alarm_id,) = world.execute("SELECT id FROM alarms").fetchone()  # type: ignore[misc]
    world.execute("INSERT INTO tickets (type, alarm_id, summary) VALUES ('complaint', %s, 'short delivery')",
                  (alarm_id,))
    apply(world, [scan("SC-2", "found", b, 1, mode="receive", location="TRUCK-1", qty=3)])
    assert world.execute("SELECT id, state FROM alarms").fetchall() == [(alarm_id, "withdrawn")]
    assert world.execute("SELECT alarm_id, summary FROM tickets").fetchall() == [(alarm_id, "short delivery")]
    # A late pick of those three from the truck: the episode exists again, the same alarm is back.
    apply(world, [scan("SC-2", "gone", b, 1.5, mode="pick", location="TRUCK-1", to_location="STAGE-1", qty=3)])
    assert world.execute("SELECT id, state, started_at, peak_value FROM alarms").fetchall() == [
        (alarm_id, "active", T0 + timedelta(minutes=3), -1.0)]


def _other_site(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO sites (code, name) VALUES ('SITE-B', 'Customer site'), ('SITE-R', 'Returns centre')")
    db.execute("INSERT INTO locations (code, site, type) VALUES ('CUST-B', 'SITE-B', 'customer'), "
               "('RET-R', 'SITE-R', 'returns')")
    db.execute("INSERT INTO devices (device_id, kind, site, location, mode) VALUES "
               "('SC-R', 'scanner', 'DC1', 'RET-1', 'return'), ('SC-X', 'scanner', 'SITE-R', 'RET-R', 'return')")


def test_a_return_by_the_devices_default_mode_comes_from_the_serials_customer(world: psycopg.Connection) -> None:
    """The serial's customer was looked up only when the message itself said mode=return."""
    _other_site(world)
    unit = gs1(GTIN_B, serial="PEN-2")
    apply(world, [scan("SC-1", "r0", unit, 0),
                  scan("SC-2", "r1", unit, 1, mode="move", location="DOCK-1", to_location="CUST-B")])
    apply(world, [scan("SC-R", "r2", unit, 9, ref="RMA-8")])  # mode from the device: return
    assert world.execute("SELECT from_location, to_location FROM movements WHERE msg_id = 'r2'").fetchall() == [
        ("CUST-B", "RET-1")]


def test_a_return_arriving_before_its_delivery_is_booked_once_the_delivery_arrives(
        world: psycopg.Connection) -> None:
    """It used to be dead-lettered (the returns site has no customer of its own to fall back on)."""
    _other_site(world)
    unit = gs1(GTIN_B, serial="PEN-3")
    stream = [scan("SC-1", "e0", unit, 0),
              scan("SC-2", "e1", unit, 1, mode="move", location="DOCK-1", to_location="CUST-B"),
              scan("SC-X", "e2", unit, 9, ref="RMA-9")]
    outcomes = set()
    for order in itertools.permutations(stream):
        _reset(world)
        _other_site(world)
        for message in order:
            apply(world, [message])
        assert world.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        assert world.execute("SELECT location FROM serials WHERE serial = 'PEN-3'").fetchone() == ("RET-R",)
        outcomes.add(repr((net_ledger(world), sorted(balances(world).items()))))
    assert len(outcomes) == 1
    assert ("SKU-B", "CUST-B", "") not in balances(world)  # it came back from where it was delivered


def _passages(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT epc, first_ts, last_ts, direction FROM rfid_passages ORDER BY epc").fetchall()


def _gate_movements(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return sorted(r[:5] for r in net_ledger(db) if r[9] == "GATE-1")


def test_one_passage_committed_out_of_order_stays_one_passage_and_one_movement(world: psycopg.Connection) -> None:
    """Two workers commit one gate's reads out of order: the later half first, swept, then the earlier."""
    rng = random.Random(5)
    reads = passage_reads(tag(42), T0, True, rng)
    early = [r for r in reads if str(r["ts"]) < (T0 + timedelta(seconds=0.8)).isoformat()]
    late = [r for r in reads if r not in early]
    apply(world, messages(list(late), rng))
    sweep(world, wall_now=RECEIVED + timedelta(seconds=10))
    assert len(_passages(world)) == 1
    arrived = [Inbound(m.topic, m.payload, RECEIVED + timedelta(seconds=15)) for m in messages(list(early), rng)]
    apply(world, arrived)
    sweep(world, wall_now=RECEIVED + timedelta(seconds=30))
    out_of_order = (_passages(world), _gate_movements(world), balances(world))

    _reset(world)
    apply(world, messages(list(reads), rng))
    sweep(world, wall_now=RECEIVED + timedelta(seconds=10))
    in_order = (_passages(world), _gate_movements(world), balances(world))
    assert len(in_order[0]) == 1 and len(in_order[1]) == 1
    assert out_of_order == in_order


def test_reads_buffered_behind_newer_ones_are_still_swept(world: psycopg.Connection) -> None:
    """The sweep window started 10 minutes before the gate's newest read: older late reads were never seen."""
    rng = random.Random(8)
    apply(world, messages(passage_reads(tag(1), T0 + timedelta(minutes=30), True, rng), rng))
    assert sweep(world, wall_now=RECEIVED + timedelta(seconds=10)).movements == 1
    buffered = [Inbound(m.topic, m.payload, RECEIVED + timedelta(seconds=20))
                for m in messages(passage_reads(tag(2), T0, True, rng), rng)]
    apply(world, buffered)
    sweep(world, wall_now=RECEIVED + timedelta(seconds=40))
    assert [p[0] for p in _passages(world)] == sorted([tag(1), tag(2)])
    assert len(_gate_movements(world)) == 2
