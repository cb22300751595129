"""A small warehouse world for rule tests, written straight into the master-data tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from ingest.decode import Inbound
from ingest.pipeline import PipelineConfig, process_batch
from ingest.store import BatchResult
from runtime.settings import Settings

PREFIX = "cargotrace/v1"
GTIN_A = "09506000134352"   # SKU-A (lots, expiries)
GTIN_B = "05901234123457"   # SKU-B (EAN-13 5901234123457)
GTIN_C = "80614141123458"   # SKU-C (the RFID-tagged item: SGTIN 0614141.812345)
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)

LOCATIONS = [
    ("SUP-ACME", "supplier"), ("DOCK-1", "dock"), ("BIN-A1", "internal"), ("BIN-A2", "internal"),
    ("STAGE-1", "staging"), ("TRUCK-1", "vehicle"), ("CUST-1", "customer"), ("RET-1", "returns"),
    ("LOSS-1", "inventory_loss"), ("DOOR-OUT", "dock"), ("DOOR-IN", "internal"),
]


def build_world(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO sites (code, name) VALUES ('DC1', 'Distribution centre 1')")
    for code, type_ in LOCATIONS:
        db.execute("INSERT INTO locations (code, site, type) VALUES (%s, 'DC1', %s)", (code, type_))
    db.execute("INSERT INTO items (sku, name, gtin) VALUES ('SKU-A', 'Yoghurt 6x', %s), ('SKU-B', 'Cheese', %s), "
               "('SKU-C', 'Tagged crate', %s)", (GTIN_A, GTIN_B, GTIN_C))
    db.execute("INSERT INTO geofences (code, type, lat, lon, radius_m) VALUES ('GF-CUST', 'circle', 52.5, 13.4, 300)")
    db.execute("INSERT INTO shipments (ref, origin, destination, customer, vehicle, public_token) "
               "VALUES ('SHP-1', 'STAGE-1', 'GF-CUST', 'CUST-1', 'TRUCK-1', 'tok-shp-1')")
    db.execute("INSERT INTO devices (device_id, kind, site, location, mode) VALUES "
               "('SC-1', 'scanner', 'DC1', 'DOCK-1', 'receive'), ('SC-2', 'scanner', 'DC1', 'BIN-A1', NULL), "
               "('ENV-1', 'env_sensor', 'DC1', 'BIN-A1', NULL)")
    db.execute("INSERT INTO devices (device_id, kind, site, gate) VALUES ('GATE-1', 'rfid_gate', 'DC1', %s)",
               (orjson.dumps({"outer": {"antennas": [1, 2], "location": "DOOR-OUT"},
                              "inner": {"antennas": [3, 4], "location": "DOOR-IN"},
                              "rssi_floor_dbm": -70}).decode(),))


def scan(device: str, msg_id: str, code: str, minutes: float, **fields: object) -> Inbound:
    body = {"msg_id": msg_id, "code": code, "ts": (T0 + timedelta(minutes=minutes)).isoformat(), **fields}
    return Inbound(f"{PREFIX}/dev/{device}/scan", orjson.dumps(body), T0 + timedelta(days=1))


def gs1(gtin: str, lot: str | None = None, expiry: str | None = None, serial: str | None = None) -> str:
    code = "]C101" + gtin
    if lot:
        code += "10" + lot + "\x1d"
    if expiry:
        code += "17" + expiry
    if serial:
        code += "21" + serial
    return code.rstrip("\x1d")


def apply(db: psycopg.Connection, messages: Sequence[Inbound], settings: Settings | None = None) -> BatchResult:
    config = PipelineConfig.from_settings(settings or Settings())
    with db.transaction(), db.cursor() as cur:
        return process_batch(cur, messages, config)


def balances(db: psycopg.Connection) -> dict[tuple[str, str, str], float]:
    return {(r[0], r[1], r[2]): float(r[3]) for r in
            db.execute("SELECT sku, location, lot, qty FROM balances WHERE qty <> 0")}


def net_ledger(db: psycopg.Connection) -> list[tuple[object, ...]]:
    """Movements neither reversed nor reversals: what the ledger says happened, order-free."""
    return sorted(db.execute(
        "SELECT ts, sku, qty, from_location, to_location, lot, serial, biz_step, ref, device_id, msg_id, source "
        "FROM movements m WHERE reverses IS NULL AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)"
    ).fetchall(), key=repr)
