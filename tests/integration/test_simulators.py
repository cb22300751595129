"""Every scenario end to end against the real stack: the API (uvicorn on a free port), two
ingest workers, the project's Mosquitto and TimescaleDB. Scenarios run at a high speedup with
short durations; assertions are on the resulting state, read through the API and the database.

Tests share one database (no truncation: the API and the workers keep running), so each one
looks only at what its run created: its devices, shipments and lots (all tagged per run).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import psycopg
import pytest

from api.tokens import create_token
from cli.api_server import ApiServer
from ingest.db import connect
from runtime.settings import Settings
from simulators.provision import ApiClient
from simulators.scenarios import ScenarioReport, run_scenario
from simulators.scenarios import bad_devices as bad
from tests.integration.broker_fixtures import free_port
from tests.integration.stack_helpers import running_worker, stack_settings

pytestmark = pytest.mark.integration


class Stack:
    def __init__(self, settings: Settings, url: str, token: str, conn: psycopg.Connection) -> None:
        self.settings = settings
        self.url = url
        self.token = token
        self.conn = conn
        self.api = ApiClient(url, token)

    def run(self, name: str, **kw: Any) -> ScenarioReport:
        return run_scenario(name, api_url=self.url, admin_token=self.token, broker_host=self.settings.mqtt_host,
                            broker_port=self.settings.mqtt_port, topic_prefix=self.settings.topic_prefix,
                            progress=False, **kw)

    def count(self, query: str, *params: object) -> int:
        row = self.conn.execute(query, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


@pytest.fixture(scope="module")
def stack(broker_settings: Settings, database_url: str) -> Iterator[Stack]:
    settings = stack_settings(broker_settings, database_url, api_port=free_port(), rfid_sweep_interval_s=0.5)
    server = ApiServer(settings)
    server.start()
    with ExitStack() as es:
        es.enter_context(running_worker(settings, 0))
        es.enter_context(running_worker(settings, 1))
        conn = es.enter_context(connect(database_url, autocommit=True))
        token = create_token(conn, "admin", "simulator tests")
        s = Stack(settings, server.url, token, conn)
        try:
            yield s
        finally:
            s.api.close()
            server.stop()


def settle(check: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def shipment(stack: Stack, ref: str) -> dict[str, Any]:
    result: dict[str, Any] = stack.api.get(f"/shipments/{ref}")
    return result


def alarms_of(stack: Stack, report: ScenarioReport, refs: set[str], lots: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    devices = set(report.device_ids)
    return [a for a in stack.api.items("/alarms")
            if a.get("device_id") in devices or a.get("shipment") in refs
            or any(lot in (a.get("message") or "") for lot in lots)]


def dead_letters_of(stack: Stack, report: ScenarioReport) -> Counter[str]:
    """Dead letters of the run's devices received since the run started (stable devices, such as
    bad-devices', keep the letters of earlier runs)."""
    out: Counter[str] = Counter()
    for device in report.device_ids:
        for letter in stack.api.items("/dead-letters", device=device):
            # the run started when its simulated window ended
            if datetime.fromisoformat(letter["received_at"]) >= report.sim_end:
                out[letter["reason"]] += 1
    return out


def all_balances(stack: Stack, lots: list[str]) -> dict[tuple[str, str, str], float]:
    """Balances of the run's lots, except at the supplier (its negative balance is what was received)."""
    out = {}
    for row in stack.api.items("/stock"):
        lot = row.get("lot") or ""
        if lot in lots and row["location"] != "SIM-DC1-SUP":
            out[(row["sku"], row["location"], lot)] = float(row["qty"])
    return out


def test_normal_day(stack: Stack) -> None:
    report = stack.run("normal-day", seed=7, speedup=600, duration_s=22)
    assert report.failed == 0 and report.acked == report.planned
    exp = report.expected
    refs = set(exp["shipments"])

    def delivered() -> bool:
        return all(shipment(stack, r)["status"] == "delivered" for r in refs)

    settle(delivered, "every shipment delivered")
    gate = next(d for d in report.device_ids if d.endswith("-gate1"))
    settle(lambda: stack.count("SELECT count(*) FROM rfid_passages WHERE gate = %s AND movement IS NOT NULL",
                               gate) >= 14, "the gate's 14 passages with movements")
    time.sleep(2)  # let anything that would be wrong arrive too
    for ref in refs:
        events = [e["type"] for e in shipment(stack, ref)["events"]]
        for wanted in exp["shipment_events"]:
            assert wanted in events, (ref, events)
    directions: dict[str, int] = dict(stack.conn.execute(
        "SELECT direction, count(*) FROM rfid_passages WHERE gate = %s AND movement IS NOT NULL GROUP BY 1",
        (gate,)).fetchall())
    assert directions == exp["rfid_movements"]
    lingering = stack.count("SELECT count(*) FROM rfid_passages WHERE gate = %s AND reason = 'one_zone_only'", gate)
    assert lingering >= 1  # the parked pallet: observed, moved nothing
    balances = all_balances(stack, exp["lots"])
    wanted = {k: v for k, v in exp["balances"].items() if k[2]}
    case_at_dock = stack.count("SELECT count(*) FROM rfid_passages p WHERE gate = %s AND movement IS NOT NULL "
                               "AND direction = 'inbound'", gate) - exp["rfid_movements"]["outbound"]
    assert case_at_dock == exp["balances"][("SIM-CASE", "SIM-DC1-DOCK1", "")]
    assert alarms_of(stack, report, refs, tuple(exp["lots"])) == []
    assert not [a for a in stack.api.items("/alarms", type="stock_discrepancy")
                if any(lot in a["message"] for lot in exp["lots"])]
    # Including the customer return: one pen back from customer A (another site's customer, where
    # its serial was delivered) into the DC's returns.
    assert dead_letters_of(stack, report) == Counter()
    assert balances == wanted


def test_cold_chain_excursion(stack: Stack) -> None:
    report = stack.run("cold-chain-excursion", seed=3, speedup=600, duration_s=13)
    assert report.failed == 0
    (ref,) = report.expected["shipments"]
    settle(lambda: shipment(stack, ref)["status"] == "delivered", "the delivery")
    settle(lambda: any(a["state"] == "cleared" for a in alarms_of(stack, report, {ref})), "the alarm cleared")
    time.sleep(2)
    alarms = alarms_of(stack, report, {ref})
    (want,) = report.expected["alarms"]
    assert [(a["type"], a["device_id"], a["shipment"], a["state"]) for a in alarms] == \
        [(want["type"], want["device_id"], want["shipment"], want["state"])]
    assert 11.0 <= alarms[0]["peak_value"] <= 13.0
    tickets = stack.api.items("/tickets", shipment=ref)
    assert [(t["shipment"], t["cause"], t["alarm_id"]) for t in tickets] == \
        [(ref, "temperature_excursion", alarms[0]["id"])]
    assert dead_letters_of(stack, report) == Counter()


def test_late_delivery(stack: Stack) -> None:
    report = stack.run("late-delivery", seed=5, speedup=600, duration_s=15)
    assert report.failed == 0
    (ref,) = report.expected["shipments"]
    settle(lambda: shipment(stack, ref)["status"] == "delivered", "the delivery")
    settle(lambda: bool(stack.api.items("/tickets", shipment=ref)), "the late-delivery ticket")
    time.sleep(2)
    view = shipment(stack, ref)
    events = [e["type"] for e in view["events"]]
    for wanted in report.expected["events"]:
        assert wanted in events, events
    assert view["delayed"] is False  # delivered: no longer delayed
    alarms = alarms_of(stack, report, {ref})
    assert [(a["type"], a["shipment"], a["state"]) for a in alarms] == [("shipment_delayed", ref, "cleared")]
    tickets = stack.api.items("/tickets", shipment=ref)
    assert [(t["shipment"], t["cause"]) for t in tickets] == [(ref, "late_delivery")]
    assert dead_letters_of(stack, report) == Counter()


def _event_offsets(stack: Stack, report: ScenarioReport) -> dict[str, float]:
    (ref,) = report.expected["shipments"]
    view = shipment(stack, ref)
    return {e["type"]: (datetime.fromisoformat(e["ts"]) - report.sim_start).total_seconds() for e in view["events"]}


def test_offline_tracker_matches_online_run(stack: Stack) -> None:
    results = {}
    for offline in (True, False):
        report = stack.run("offline-tracker", seed=11, speedup=600, duration_s=9, offline=offline)
        assert report.failed == 0
        (ref,) = report.expected["shipments"]
        settle(lambda ref=ref: shipment(stack, ref)["status"] == "delivered"  # type: ignore[misc]
               and len(shipment(stack, ref)["events"]) >= 4, "the delivery with all events")
        time.sleep(1.5)
        if offline:
            assert report.published.get("position:backlog", 0) == report.expected["backlog_arrays"] > 1
        results[offline] = (shipment(stack, ref)["status"], _event_offsets(stack, report))
        assert alarms_of(stack, report, {ref}) == []
        assert dead_letters_of(stack, report) == Counter()
        time.sleep(1.1)  # a new run tag (one per second)
    assert results[True][0] == results[False][0] == "delivered"
    assert set(results[True][1]) >= {"loading", "departed", "arrived", "delivered"}
    assert results[True][1] == pytest.approx(results[False][1], abs=0.01)


def test_bad_devices(stack: Stack) -> None:
    report = stack.run("bad-devices", seed=1, speedup=60, duration_s=10)
    assert report.failed == 0
    exp = report.expected
    total = sum(exp["dead_letters"].values())
    settle(lambda: sum(dead_letters_of(stack, report).values()) >= total, f"{total} dead letters")
    time.sleep(2)
    assert dict(dead_letters_of(stack, report)) == exp["dead_letters"]
    for device, n in exp["env_readings"].items():
        assert stack.count("SELECT count(*) FROM env_readings WHERE device_id = %s AND msg_id LIKE %s",
                           device, f"{report.run_id}-%") == n
    for device, n in exp["positions"].items():
        assert stack.count("SELECT count(*) FROM positions WHERE device_id = %s AND msg_id LIKE %s",
                           device, f"{report.run_id}-%") == n
    assert stack.count("SELECT count(*) FROM movements WHERE device_id = %s AND msg_id LIKE %s",
                       bad.HH, f"{report.run_id}-%") == exp["movements"]
    lots = [k[2] for k in exp["balances"]]
    assert all_balances(stack, lots) == exp["balances"]
    assert alarms_of(stack, report, set(), tuple(lots)) == []


def test_load(stack: Stack) -> None:
    report = stack.run("load", seed=2, speedup=60, duration_s=5, devices=50, rate=200)
    assert report.failed == 0
    assert report.acked == report.planned == 1000
    assert report.rate > 100

    def stored() -> int:
        return (stack.count("SELECT count(*) FROM env_readings WHERE device_id LIKE 'sim-load-%%' AND msg_id LIKE %s",
                            f"{report.run_id}-%")
                + stack.count("SELECT count(*) FROM positions WHERE device_id LIKE 'sim-load-%%' AND msg_id LIKE %s",
                              f"{report.run_id}-%"))

    settle(lambda: stored() >= 1000, "every load message stored")
    assert stored() == 1000
    assert dead_letters_of(stack, report) == Counter()
