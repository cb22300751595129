"""Two real ingest workers over the project's Mosquitto, gate reads and scans in shuffled order:
the stored stock equals ``core.stock_rules.derive_stock`` of the sorted history."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
import psycopg
import pytest

from core.epc import decode_epc
from core.ledger import CountRequest, Posting
from core.rfid import Read, passages
from core.stock_rules import Identity, PlannedCount, PlannedPosting, StockHistory, derive_stock
from devices.broker_accounts import BrokerAccounts
from devices.provisioning import Credentials
from ingest.rfid_sweep import gate_config
from runtime.settings import Settings
from tests.integration.stack_helpers import Device, count, running_worker, stack_settings, wait_until
from tests.integration.test_rfid_gate import passage_reads, tag
from tests.integration.world import GTIN_B, GTIN_C, LOCATIONS, T0, balances, build_world, gs1, net_ledger

pytestmark = pytest.mark.integration
TAGS = (100, 101, 102)


@contextmanager
def _credentials(settings: Settings, device_ids: list[str]) -> Iterator[dict[str, Credentials]]:
    """Broker accounts for the world's devices, removed afterwards: the broker lives for the whole
    session and other tests create accounts of the same names."""
    with BrokerAccounts(settings) as accounts:
        created = [d for d in device_ids if not accounts.device_exists(d)]
        creds = {d: Credentials(d, d, accounts.add_device(d) if d in created else accounts.rotate_device(d),
                                settings.mqtt_host, settings.mqtt_port, settings.topic_prefix) for d in device_ids}
    try:
        yield creds
    finally:
        with BrokerAccounts(settings) as accounts:
            for d in created:
                accounts.remove_device(d)


def _scan(msg_id: str, code: str, minutes: float, **fields: object) -> dict[str, object]:
    return {"msg_id": msg_id, "code": code, "ts": (T0 + timedelta(minutes=minutes)).isoformat(), **fields}


def _reads(reads: list[dict[str, object]]) -> list[Read]:
    return [Read(str(r["epc"]), int(str(r["antenna"])), float(str(r["rssi"])), datetime.fromisoformat(str(r["ts"])))
            for r in reads]


def _expected_postings(reads: list[dict[str, object]], gate: dict[str, object]) -> list[PlannedPosting]:
    """The history as the contract defines it, planned here independently of ingest."""
    b = "SKU-B"

    def posting(sku: str, qty: int, src: str, dst: str, step: str, disp: str, minutes: float,
                serial: str | None = None, ts: datetime | None = None) -> Posting:
        return Posting(sku, Decimal(qty), src, dst, None, serial, None, step, disp, None,
                       ts or T0 + timedelta(minutes=minutes))

    planned = [PlannedPosting(posting(b, 10, "SUP-ACME", "DOCK-1", "receiving", "in_progress", 0),
                              Identity("SC-1", "s1")),
               PlannedPosting(posting(b, 6, "DOCK-1", "BIN-A1", "storing", "sellable_accessible", 1),
                              Identity("SC-2", "s2"))]
    config = gate_config(gate)
    found = passages(_reads(reads), config)
    for p in found:
        assert p.direction == "inbound" and p.from_location and p.to_location
        planned.append(PlannedPosting(posting("SKU-C", 1, p.from_location, p.to_location, "receiving", "in_progress",
                                              0, decode_epc(p.epc).serial, p.ts), Identity("GATE-1", p.epc)))
    for k in TAGS:
        planned.append(PlannedPosting(posting("SKU-C", 1, "DOOR-IN", "BIN-A2", "storing", "sellable_accessible", 5,
                                              str(k)), Identity("SC-2", f"mv{k}")))
    return planned


def test_two_workers_shuffled_gate_and_scan_messages_equal_the_derived_history(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    build_world(db)
    settings = stack_settings(broker_settings, database_url, rfid_sweep_interval_s=0.2)
    rng = random.Random(2026)
    # Passages 20 s apart: the gate's clock closes the early ones while (shuffled) reads of them
    # may still be on their way through the other worker.
    reads = [r for i, k in enumerate(TAGS) for r in passage_reads(tag(k), T0 + timedelta(seconds=20 * i), True, rng)]
    rng.shuffle(reads)
    gate_row = db.execute("SELECT gate::text FROM devices WHERE device_id = 'GATE-1'").fetchone()
    assert gate_row is not None
    gate = orjson.loads(gate_row[0])
    whole = {(p.epc, p.first_ts, p.last_ts) for p in passages(_reads(reads), gate_config(gate))}

    def swept() -> bool:
        return set(db.execute("SELECT epc, min(first_ts), max(last_ts) FROM rfid_passages GROUP BY epc")) == whole

    outgoing: list[tuple[str, str, dict[str, object]]] = [
        ("GATE-1", "rfid", {"msg_id": f"g{n}", "ts": T0.isoformat(), "reads": reads[i:i + 4]})
        for n, i in enumerate(range(0, len(reads), 4))]
    outgoing += [("SC-1", "scan", _scan("s1", gs1(GTIN_B), 0, qty=10)),
                 ("SC-2", "scan", _scan("s2", gs1(GTIN_B), 1, mode="putaway", location="DOCK-1",
                                        to_location="BIN-A1", qty=6)),
                 ("SC-2", "scan", _scan("c1", gs1(GTIN_B), 3, mode="count", qty=5))]
    outgoing += [("SC-2", "scan", _scan(f"mv{k}", gs1(GTIN_C, serial=str(k)), 5, mode="move", location="DOOR-IN",
                                        to_location="BIN-A2")) for k in TAGS]
    rng.shuffle(outgoing)
    with _credentials(settings, ["GATE-1", "SC-1", "SC-2"]) as creds, running_worker(settings, 0), \
            running_worker(settings, 1):
        devices = {d: Device(c, settings) for d, c in creds.items()}
        try:
            for device_id, kind, body in outgoing:
                devices[device_id].publish(kind, orjson.dumps(body))
            wait_until(lambda: count(db, "SELECT count(*) FROM message_ids") == len(outgoing), timeout=60,
                       what="every message applied")
            wait_until(swept, timeout=90, what="every read of every passage swept")
        finally:
            for d in devices.values():
                d.close()

    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    assert db.execute("SELECT epc, count(*) FROM rfid_passages GROUP BY epc ORDER BY epc").fetchall() == [
        (tag(k), 1) for k in TAGS]
    count_request = CountRequest("SKU-B", "BIN-A1", None, None, Decimal(5), "LOSS-1", None, T0 + timedelta(minutes=3))
    expected = derive_stock(StockHistory.of(_expected_postings(reads, gate),
                                            [PlannedCount(count_request, Identity("SC-2", "c1"))], dict(LOCATIONS)))
    assert balances(db) == {k: float(v) for k, v in expected.balances.items() if v != 0}
    stored = sorted((r[0], r[1], r[2], r[3], r[4], r[6]) for r in net_ledger(db))
    assert stored == sorted((p.posting.ts, p.posting.sku, p.posting.qty, p.posting.from_location,
                             p.posting.to_location, p.posting.serial) for p in expected.ledger)
    assert dict(db.execute("SELECT serial, location FROM serials").fetchall()) == {
        s: at.location for (_, s), at in expected.serials.items()}
    assert db.execute("SELECT subject, started_at, cleared_at, peak_value FROM alarms "
                      "WHERE type = 'stock_discrepancy' ORDER BY 1, 2").fetchall() == [
        ("|".join(e.key), e.start, e.end, float(e.peak)) for e in expected.discrepancies]
