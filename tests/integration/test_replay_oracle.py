"""The replay oracle (issue 9, point 2): the state stored by the live platform, after any arrival
order, duplicates, split and merged arrays and two ingest workers, equals ``core.replay`` of the
same messages.

Each case generates a seeded day at the simulated DC (``simulators.streams``), delivers it over
MQTT with each device's own credentials to the project's Mosquitto, lets two ingest worker
processes (started by the supervisor, as ``cargotrace run`` does) store it in TimescaleDB, waits
until every message is stored or dead-lettered and the RFID sweep has settled, and compares the
stored state with the replay field by field.

A difference raises ``StateDiffersError`` with the first difference in words; a case marked
``xfail(strict=True, raises=StateDiffersError)`` documents one the oracle finds in the engine as
it stands (the reason quotes it) and turns into a failure (XPASS) once the engine is fixed.
Preconditions (what the stream must contain for a case to mean something) are plain assertions.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from core.replay import ReplayState, first_difference
from simulators import oracle_stack
from simulators.messages import Message
from simulators.oracle_stack import OracleStack, Outcome
from simulators.streams import Stream, objects
from tests.integration.oracle_harness import oracle  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


class StateDiffersError(AssertionError):
    """The stored state differs from the replay (as opposed to a failed precondition)."""


ENV_ALARMS = frozenset({"temperature_high", "temperature_low", "temperature_cumulative", "humidity_high",
                        "humidity_low"})


def focus(state: ReplayState, fields: set[str], alarm_types: frozenset[str] | None = None) -> ReplayState:
    """Only the fields a domain case is about (the others emptied), and optionally only some alarm types."""
    empty: dict[str, Any] = {f.name: ({} if isinstance(getattr(state, f.name), Mapping) else ())
                             for f in dataclasses.fields(state) if f.name not in fields}
    if alarm_types is not None:
        empty["alarms"] = tuple(a for a in state.alarms if a.type in alarm_types)
    return dataclasses.replace(state, **empty)


def assert_same(outcome: Outcome, fields: set[str] | None = None, alarm_types: frozenset[str] | None = None) -> None:
    difference = outcome.difference
    if fields is not None:
        difference = first_difference(focus(outcome.stored, fields, alarm_types),
                                      focus(outcome.replayed, fields, alarm_types))
    if difference is not None:
        raise StateDiffersError(f"stream {outcome.stream.tag} (seed {outcome.stream.seed}, "
                                f"{outcome.delivered} messages delivered): {difference}")


def _is(m: Message, role: str | tuple[str, ...]) -> bool:
    """The message comes from the stream's device of that role (``gate``, ``rf1``, ``hh``, ...)."""
    return m.device_id.rsplit("-", 1)[-1].startswith(role)


# --- random chaos ----------------------------------------------------------------------------------

def test_random_chaos_two_workers_equals_replay(oracle: OracleStack) -> None:  # noqa: F811
    outcome = oracle.run_stream(2)
    assert outcome.delivered > 1000
    assert len(outcome.replayed.passages) >= 14 and len(outcome.replayed.shipments) == 2
    assert_same(outcome)


# --- domain-targeted cases -------------------------------------------------------------------------


def cold_chain_flush(stream: Stream, seed: int) -> list[list[Message]]:
    """Scans, trackers and the cold-chain loggers (the two-probe one and the reefers); every
    logger's readings arrive as one shuffled flush of arrays after everything else."""
    rng = random.Random(seed)
    keep = [m for m in stream.messages if _is(m, ("hh", "drv", "trk", "rf", "cold2"))]
    loggers = [m for m in keep if m.kind == "env"]
    flush: list[Message] = []
    for device in sorted({m.device_id for m in loggers}):
        objs = [o for m in loggers if m.device_id == device for o in objects(m)]
        rng.shuffle(objs)
        flush += [Message(stream.sim_end, device, "env", orjson.dumps(objs[i:i + 25]), "env:flush")
                  for i in range(0, len(objs), 25)]
    rng.shuffle(flush)
    return [[m for m in keep if m.kind != "env"] + flush]


def test_shuffled_cold_chain_flush_equals_replay(oracle: OracleStack) -> None:  # noqa: F811
    outcome = oracle.run_stream(3, trucks=1, deliver=cold_chain_flush)
    assert any(a.type == "temperature_high" and a.subject.endswith("-cold2/B") for a in outcome.replayed.alarms), \
        "the stream must hold probe B's excursion"
    assert [t.cause for t in outcome.replayed.tickets] == ["temperature_excursion"], "and the reefer's failure"
    assert_same(outcome, {"alarms", "tickets", "shipments"}, ENV_ALARMS)


def gate_reads_newest_first(stream: Stream, _seed: int) -> list[list[Message]]:
    """Only the RFID gate, its messages newest first: the two workers (the broker hands a shared
    subscription's messages out in turn) each commit part of every passage, in reverse order."""
    return [sorted((m for m in stream.messages if _is(m, "gate")), key=lambda m: m.at, reverse=True)]


def test_gate_reads_split_across_workers_equal_replay(oracle: OracleStack) -> None:  # noqa: F811
    outcome = oracle.run_stream(3, trucks=1, deliver=gate_reads_newest_first)
    moved = [p for p in outcome.replayed.passages if p.moved]
    assert len(moved) == 14 and any(p.reason == "one_zone_only" for p in outcome.replayed.passages)
    assert_same(outcome, {"ledger", "balances", "serials", "passages"})


def ship_scans_last(stream: Stream, _seed: int) -> list[list[Message]]:
    """Scanners, trackers and loggers in publish order (the gate left out: this case is about the
    shipments), except that the loading (ship) scans arrive after all else."""
    kept = [m for m in stream.messages if not _is(m, "gate")]
    ships = [m for m in kept if m.kind == "scan" and orjson.loads(m.payload).get("mode") == "ship"]
    return [[m for m in kept if m not in ships] + ships]


def _mode(m: Message) -> str | None:
    mode = orjson.loads(m.payload).get("mode") if m.kind == "scan" else None
    return None if mode is None else str(mode)


def deliver_scans_newest_first(stream: Stream, _seed: int) -> list[list[Message]]:
    """Everything but the gate stored first; then the driver's deliver scans one at a time, each
    committed before the next, the newest first: every one moves the delivery earlier."""
    kept = [m for m in stream.messages if not _is(m, "gate")]
    delivers = sorted((m for m in kept if _mode(m) == "deliver"), key=lambda m: m.at, reverse=True)
    return [[m for m in kept if m not in delivers], *([m] for m in delivers)]


def test_late_ship_scans_equal_replay(oracle: OracleStack) -> None:  # noqa: F811
    outcome = oracle.run_stream(2, trucks=1, deliver=ship_scans_last)
    assert outcome.replayed.shipments
    assert [t.cause for t in outcome.replayed.tickets] == ["temperature_excursion"], \
        "the reefer fails on the road: its readings arrive before the shipment's ship scans"
    assert all(s.status == "delivered" and "loading" in {e.type for e in s.events}
               for s in outcome.replayed.shipments.values())
    assert_same(outcome, {"shipments", "alarms", "tickets"})


REEFER_DELAY = timedelta(seconds=600)  # the SIM-CHILLED profile's delay


def test_deliver_scans_newest_first_equal_replay(oracle: OracleStack) -> None:  # noqa: F811
    outcome = oracle.run_stream(109, deliver=deliver_scans_newest_first)
    delivers = sorted(m.at for m in outcome.stream.messages if _mode(m) == "deliver")
    warm = min(datetime.fromisoformat(o["ts"]) for m in outcome.stream.messages if _is(m, "rf1") and m.kind == "env"
               for o in objects(m) if o["temp_c"] > 8.0)
    # The reefer is out of range for less than the delay before the first deliver scan, and for
    # more than the delay before the last one: the order of the deliver scans decides, if anything.
    assert len(delivers) >= 2 and delivers[0] - warm < REEFER_DELAY < delivers[-1] - warm
    assert not [a for a in outcome.replayed.alarms if "-rf1/" in a.subject]
    assert_same(outcome, {"shipments", "alarms", "tickets"})


def return_before_delivery(stream: Stream, _seed: int) -> list[list[Message]]:
    """Everything but the gate, except the customer return and the deliver scans; then the return
    (its serial is still on the truck as far as anyone knows); then the deliver scans."""
    kept = [m for m in stream.messages if not _is(m, "gate")]
    returns = [m for m in kept if _mode(m) == "return"]
    delivers = [m for m in kept if _mode(m) == "deliver"]
    return [[m for m in kept if m not in returns and m not in delivers], returns, delivers]


def test_return_before_its_delivery_equals_replay(oracle: OracleStack) -> None:  # noqa: F811
    outcome = oracle.run_stream(118, deliver=return_before_delivery)
    booked = [line for line in outcome.replayed.ledger if line.ref and line.ref.startswith("RMA-")]
    assert [(b.from_location, b.to_location) for b in booked] == [("SIM-CUST-A", "SIM-DC1-RET")]
    assert_same(outcome, {"ledger", "balances", "serials"})


# --- the command cannot silently pass -------------------------------------------------------------


PLANTED_REF = "PLANTED-BY-THE-TEST"


def test_verify_replay_reports_a_planted_difference(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """A movement written into the stored ledger behind the platform's back must be reported as the
    first difference, with exit status 1."""
    real_read_state = oracle_stack.read_state

    def planted(conn: psycopg.Connection) -> ReplayState:
        conn.execute("INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, ref, source) "
                     "VALUES (%s, 'SIM-YOG', 7, 'SIM-DC1-SUP', 'SIM-DC1-DOCK1', 'receiving', %s, 'api')",
                     (datetime(2001, 1, 1, tzinfo=UTC), PLANTED_REF))
        return real_read_state(conn)

    monkeypatch.setattr(oracle_stack, "read_state", planted)
    monkeypatch.setenv("CARGOTRACE_DATABASE_URL", database_url)
    from cli.main import app

    result = CliRunner().invoke(app, ["verify", "replay", "--streams", "1", "--seed", "5"])
    output: Any = result.output
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit)), \
        (output, result.exception, result.exc_info)
    assert "differs from the replay" in output
    assert "ledger:" in output and "first only in stored: LedgerLine(ts=datetime.datetime(2001" in output
    assert PLANTED_REF in output
