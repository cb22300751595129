"""What the EPCIS export reads: movements in the order they were recorded (what an incremental
consumer polls by), filtered by the EPCIS query parameters, and the sensor-data events of
delivered shipments, stored as exported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.epcis import LedgerEntry
from core.epcis_sensors import DeliveredShipment, Excursion, Publication, Published, Reading, ShipmentLine

_COLUMNS = ("m.id, m.ts, m.recorded_at, m.sku, i.gtin, m.qty, m.from_location, m.to_location, m.lot, m.serial, "
            "m.expiry, m.biz_step, m.disposition, m.ref, m.source, m.device_id, m.reverses")


@dataclass(frozen=True, slots=True)
class MovementFilter:
    """The EPCIS query parameters, translated to ledger terms by core.epcis (None = no condition)."""

    since: datetime | None = None            # recorded at or after
    ge_event_time: datetime | None = None
    lt_event_time: datetime | None = None
    biz_steps: tuple[str, ...] | None = None  # ledger words
    to_locations: tuple[str, ...] | None = None
    instances: tuple[tuple[str, str], ...] | None = None         # (gtin, serial)
    classes: tuple[tuple[str, str | None], ...] | None = None    # (gtin, lot or None)


def _entry(r: dict[str, Any]) -> LedgerEntry:
    gtin = r["gtin"].strip() if isinstance(r["gtin"], str) else None
    return LedgerEntry(r["id"], r["ts"], r["recorded_at"], r["sku"], gtin, Decimal(r["qty"]), r["from_location"],
                       r["to_location"], r["lot"], r["serial"], r["expiry"], r["biz_step"], r["disposition"],
                       r["ref"], r["source"], r["device_id"], r["reverses"])


def recorded_since(conn: psycopg.Connection, where: MovementFilter, after_id: int | None,
                   limit: int) -> list[LedgerEntry]:
    conditions = ["(%(after)s::bigint IS NULL OR m.id > %(after)s)"]
    params: dict[str, Any] = {"after": after_id, "limit": limit, "since": where.since,
                              "ge": where.ge_event_time, "lt": where.lt_event_time}
    if where.since is not None:
        conditions.append("m.recorded_at >= %(since)s")
    if where.ge_event_time is not None:
        conditions.append("m.ts >= %(ge)s")
    if where.lt_event_time is not None:
        conditions.append("m.ts < %(lt)s")
    if where.biz_steps is not None:
        conditions.append("m.biz_step = ANY(%(steps)s)")
        params["steps"] = list(where.biz_steps)
    if where.to_locations is not None:
        conditions.append("m.to_location = ANY(%(locs)s)")
        params["locs"] = list(where.to_locations)
    if where.instances is not None:
        conditions.append("(i.gtin, m.serial) IN (SELECT * FROM unnest(%(inst_g)s::text[], %(inst_s)s::text[]))")
        params["inst_g"] = [g for g, _ in where.instances]
        params["inst_s"] = [s for _, s in where.instances]
    if where.classes is not None:
        conditions.append("m.serial IS NULL AND EXISTS (SELECT 1 FROM unnest(%(cls_g)s::text[], %(cls_l)s::text[]) "
                          "AS c(gtin, lot) WHERE c.gtin = i.gtin AND c.lot IS NOT DISTINCT FROM m.lot)")
        params["cls_g"] = [g for g, _ in where.classes]
        params["cls_l"] = [lot for _, lot in where.classes]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM movements m LEFT JOIN items i ON i.sku = m.sku "
            f"WHERE {' AND '.join(conditions)} ORDER BY m.id LIMIT %(limit)s", params).fetchall()
    return [_entry(r) for r in rows]


def by_ids(conn: psycopg.Connection, ids: list[int]) -> dict[int, LedgerEntry]:
    if not ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM movements m LEFT JOIN items i ON i.sku = m.sku "
                           "WHERE m.id = ANY(%s)", (ids,)).fetchall()
    return {int(r["id"]): _entry(r) for r in rows}


def corrections_of(conn: psycopg.Connection, reversed_ids: list[int]) -> dict[int, list[int]]:
    """For each reversed count adjustment, the adjustment that replaced it (its corrective event)."""
    if not reversed_ids:
        return {}
    rows = conn.execute(
        "SELECT o.id, n.id FROM movements o JOIN movements n ON n.device_id = o.device_id AND n.msg_id = o.msg_id "
        "AND n.line > o.line AND n.source = o.source WHERE o.id = ANY(%s)", (reversed_ids,)).fetchall()
    out: dict[int, list[int]] = {}
    for original, corrective in rows:
        out.setdefault(original, []).append(corrective)
    return out


# --- sensor data of delivered shipments -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SensorInputs:
    shipment: DeliveredShipment
    readings: list[Reading]
    excursions: list[Excursion]
    published: list[Published]


def sensor_candidates(conn: psycopg.Connection) -> list[SensorInputs]:
    """Delivered shipments whose sensor event is not published yet, or whose inputs changed since:
    a reading of the trip received after the last publication, or a moved loading/delivery time."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT s.ref, s.customer, s.vehicle, s.lines, d.ts AS delivered_at, "
            "       d.recorded_at AS delivery_recorded_at, "
            "       COALESCE(l.ts, d.ts) AS loaded_at, p.window_start, p.window_end, p.published_at "
            "FROM shipments s JOIN shipment_events d ON d.shipment = s.ref AND d.type = 'delivered' "
            "LEFT JOIN shipment_events l ON l.shipment = s.ref AND l.type = 'loading' "
            "LEFT JOIN LATERAL (SELECT window_start, window_end, published_at FROM epcis_sensor_exports e "
            "                   WHERE e.shipment = s.ref AND e.kind = 'event' ORDER BY seq DESC LIMIT 1) p ON true "
            "WHERE s.status = 'delivered' AND (p.published_at IS NULL "
            "   OR p.window_start <> COALESCE(l.ts, d.ts) OR p.window_end <> d.ts "
            "   OR EXISTS (SELECT 1 FROM env_readings r JOIN devices v ON v.device_id = r.device_id "
            "              WHERE v.vehicle = s.vehicle AND r.ts BETWEEN COALESCE(l.ts, d.ts) AND d.ts "
            "              AND r.received_at > p.published_at)) "
            "ORDER BY d.recorded_at, s.ref").fetchall()
        out = []
        for r in rows:
            out.append(SensorInputs(_shipment(cur, r), _readings(cur, r), _excursions(cur, r["ref"]),
                                    _published(cur, r["ref"])))
    return out


def _shipment(cur: psycopg.Cursor[Any], r: dict[str, Any]) -> DeliveredShipment:
    lines = r["lines"] if isinstance(r["lines"], list) else json.loads(r["lines"])
    skus = [str(line["sku"]) for line in lines]
    gtins = {x["sku"]: x["gtin"].strip() if x["gtin"] else None for x in cur.execute(
        "SELECT sku, gtin FROM items WHERE sku = ANY(%s)", (skus,)).fetchall()}
    return DeliveredShipment(
        r["ref"], r["customer"],
        tuple(ShipmentLine(str(line["sku"]), gtins.get(str(line["sku"])), Decimal(str(line["qty"])))
              for line in lines),
        r["loaded_at"], r["delivered_at"], r["delivery_recorded_at"])


def _readings(cur: psycopg.Cursor[Any], r: dict[str, Any]) -> list[Reading]:
    rows = cur.execute(
        "SELECT e.device_id, e.ts, e.received_at, e.temp_c, e.rh_pct FROM env_readings e "
        "JOIN devices v ON v.device_id = e.device_id WHERE v.vehicle = %s AND e.ts BETWEEN %s AND %s "
        "ORDER BY e.device_id, e.ts", (r["vehicle"], r["loaded_at"], r["delivered_at"])).fetchall()
    return [Reading(x["device_id"], x["ts"], x["received_at"], x["temp_c"], x["rh_pct"]) for x in rows]


def _excursions(cur: psycopg.Cursor[Any], ref: str) -> list[Excursion]:
    rows = cur.execute("SELECT device_id, type, started_at, cleared_at, peak_value FROM alarms "
                       "WHERE shipment = %s AND state <> 'withdrawn' ORDER BY started_at, id", (ref,)).fetchall()
    return [Excursion(x["device_id"], x["type"], x["started_at"], x["cleared_at"], x["peak_value"]) for x in rows]


def _published(cur: psycopg.Cursor[Any], ref: str) -> list[Published]:
    rows = cur.execute("SELECT seq, event_id, event FROM epcis_sensor_exports WHERE shipment = %s "
                       "AND kind = 'event' ORDER BY seq", (ref,)).fetchall()
    return [Published(x["seq"], x["event_id"], x["event"]) for x in rows]


def publish(conn: psycopg.Connection, shipment: DeliveredShipment, publication: Publication) -> None:
    """Store a publication; a concurrent export that stored the same seq first wins (same content)."""
    window = (shipment.loaded_at, shipment.delivered_at)
    insert = ("INSERT INTO epcis_sensor_exports (shipment, seq, kind, event_id, event, window_start, window_end) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id")
    with conn.transaction():
        # The declaration first: a consumer reads "that one was wrong", then its correction.
        if publication.declared is not None:
            declared = conn.execute(insert, (shipment.ref, publication.seq - 1, "declaration",
                                             publication.declared["eventID"], json.dumps(publication.declared),
                                             *window)).fetchone()
            if declared is None:
                return  # a concurrent export published this correction already
        conn.execute(insert, (shipment.ref, publication.seq, "event", publication.event["eventID"],
                              json.dumps(publication.event), *window))


@dataclass(frozen=True, slots=True)
class SensorExport:
    id: int
    event: dict[str, Any]


def sensor_exports_after(conn: psycopg.Connection, after_id: int | None, since: datetime | None,
                         limit: int) -> list[SensorExport]:
    """Stored sensor exports after ``after_id`` in export order."""
    rows = conn.execute(
        "SELECT id, event FROM epcis_sensor_exports WHERE (%(after)s::bigint IS NULL OR id > %(after)s) "
        "AND (%(since)s::timestamptz IS NULL OR published_at >= %(since)s) ORDER BY id LIMIT %(limit)s",
        {"after": after_id, "since": since, "limit": limit}).fetchall()
    return [SensorExport(int(r[0]), r[1] if isinstance(r[1], dict) else json.loads(r[1])) for r in rows]

