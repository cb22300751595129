"""`cargotrace rebuild`: balances and serial locations recomputed from the ledger alone.

The live balances are maintained incrementally in each ingest transaction; this is the proof
that they are derived state: the same numbers come out of the append-only movements.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

_DERIVED = """
    SELECT sku, location, lot, sum(delta) AS qty FROM (
        SELECT sku, to_location AS location, coalesce(lot, '') AS lot, qty AS delta FROM movements
        UNION ALL
        SELECT sku, from_location, coalesce(lot, ''), -qty FROM movements
    ) d GROUP BY sku, location, lot HAVING sum(delta) <> 0
"""


@dataclass(frozen=True)
class RebuildReport:
    balances: int
    differences: list[tuple[str, str, str, Decimal, Decimal]]  # (sku, location, lot, live, ledger)
    written: bool


def _differences(conn: psycopg.Connection) -> list[tuple[str, str, str, Decimal, Decimal]]:
    rows = conn.execute(
        f"WITH derived AS ({_DERIVED}), live AS (SELECT sku, location, lot, qty FROM balances WHERE qty <> 0) "
        "SELECT coalesce(l.sku, d.sku), coalesce(l.location, d.location), coalesce(l.lot, d.lot), "
        "coalesce(l.qty, 0), coalesce(d.qty, 0) FROM live l FULL JOIN derived d "
        "ON (l.sku, l.location, l.lot) = (d.sku, d.location, d.lot) WHERE coalesce(l.qty, 0) <> coalesce(d.qty, 0) "
        "ORDER BY 1, 2, 3").fetchall()
    return [(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4])) for r in rows]


def rebuild(conn: psycopg.Connection, *, write: bool = True) -> RebuildReport:
    """Compare the live balances with the ledger; with ``write``, replace them by the ledger's."""
    with conn.transaction():
        # Ingest writers hold row locks on balances; this waits for them and keeps new ones out.
        conn.execute("LOCK TABLE balances, serials IN EXCLUSIVE MODE")
        differences = _differences(conn)
        if write:
            conn.execute("DELETE FROM balances")
            conn.execute(
                f"INSERT INTO balances (sku, location, lot, qty, expiry) SELECT d.sku, d.location, d.lot, d.qty, "
                f"(SELECT max(m.expiry) FROM movements m WHERE m.sku = d.sku AND m.to_location = d.location "
                f"AND coalesce(m.lot, '') = d.lot) FROM ({_DERIVED}) d")
            conn.execute("DELETE FROM serials")
            conn.execute(
                "INSERT INTO serials (sku, serial, location, lot, ts, movement) "
                "SELECT DISTINCT ON (m.sku, m.serial) m.sku, m.serial, m.to_location, m.lot, m.ts, m.id "
                "FROM movements m WHERE m.serial IS NOT NULL AND m.reverses IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id) "
                # Newest in event time, ties by identity as core.stock_rules decides (never by arrival).
                "ORDER BY m.sku, m.serial, m.ts DESC, coalesce(m.device_id, '') DESC, coalesce(m.msg_id, '') DESC, "
                "m.line DESC")
        count = conn.execute("SELECT count(*) FROM balances WHERE qty <> 0").fetchone()
    return RebuildReport(int(count[0]) if count else 0, differences, write)
