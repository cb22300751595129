"""Time-bucketed series of one device's readings (TimescaleDB ``time_bucket``).

Which readings depends on the device's kind: an env sensor's temperature and humidity, a
tracker's speed, a scanner's scans and a gate's tag reads (counts only). Table and column names
come from the constants below, never from a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from api.store.records import Row


@dataclass(frozen=True)
class Series:
    table: str
    metrics: tuple[str, ...]  # columns summarised by min, max, avg and count


SERIES_BY_KIND = {
    "env_sensor": Series("env_readings", ("temp_c", "rh_pct")),
    "gps_tracker": Series("positions", ("speed_kmh",)),
    "scanner": Series("scans", ()),
    "rfid_gate": Series("rfid_reads", ()),
}


def device_kind(conn: psycopg.Connection, device_id: str) -> str | None:
    row = conn.execute("SELECT kind FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    return str(row[0]) if row else None


def buckets(conn: psycopg.Connection, kind: str, device_id: str, start: datetime, end: datetime,
            bucket_s: int) -> list[Row]:
    """One row per non-empty bucket in [start, end), oldest first: ``bucket``, ``count`` and, per
    metric, ``<metric>_min/_max/_avg/_count``."""
    series = SERIES_BY_KIND[kind]
    stats = "".join(f", min({m}) AS {m}_min, max({m}) AS {m}_max, avg({m}) AS {m}_avg, count({m}) AS {m}_count"
                    for m in series.metrics)
    query = (f"SELECT time_bucket(make_interval(secs => %(bucket_s)s), ts) AS bucket, count(*) AS count{stats} "
             f"FROM {series.table} WHERE device_id = %(device)s AND ts >= %(start)s AND ts < %(end)s "
             "GROUP BY bucket ORDER BY bucket")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {"bucket_s": bucket_s, "device": device_id, "start": start,
                                   "end": end}).fetchall()
