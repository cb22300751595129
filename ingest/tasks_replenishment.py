"""Loads what replenishment and the purchase-order rules need, and calls core to decide.

Consumption history = picks out of the site's stock per day (what left the shelves for
customers), over a fixed look-back window so the cost does not grow with history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import psycopg

from core.forecast import daily_series, fit
from core.purchase_orders import PurchaseOrderState, Receipt, derive_po
from core.replenishment import LotOnHand, Policy, Suggestion, suggest

HISTORY_DAYS = 90


@dataclass(frozen=True, slots=True)
class ItemSite:
    sku: str
    site: str
    policy: Policy


def _num(v: Decimal | None) -> float | None:
    return None if v is None else float(v)


def item_site(cur: psycopg.Cursor, sku: str, site: str) -> ItemSite | None:
    """One pair, by key (ingest's case: a plan that uses the primary keys, whatever the history)."""
    row = cur.execute(
        "SELECT coalesce(sp.reorder_point, i.reorder_point), coalesce(sp.reorder_qty, i.reorder_qty), "
        "       coalesce(sp.lead_time_days, i.lead_time_days) "
        "FROM items i LEFT JOIN item_site_policies sp ON sp.sku = i.sku AND sp.site = %(site)s "
        "WHERE i.sku = %(sku)s AND (i.reorder_point IS NOT NULL OR sp.sku IS NOT NULL OR EXISTS ("
        "  SELECT 1 FROM balances b JOIN locations l ON l.code = b.location WHERE b.sku = %(sku)s "
        "  AND l.site = %(site)s AND l.type = 'internal' AND b.qty <> 0))", {"sku": sku, "site": site}).fetchone()
    return None if row is None else ItemSite(sku, site, Policy(_num(row[0]), _num(row[1]), _num(row[2])))


def item_sites(cur: psycopg.Cursor, site: str | None = None, sku: str | None = None) -> list[ItemSite]:
    """Every (item, site) that has stock, reservations or a policy; the site's policy overrides the item's."""
    if site is not None and sku is not None:
        one = item_site(cur, sku, site)
        return [] if one is None else [one]
    # The filters sit inside each branch: ingest asks about one (sku, site) per touched pair, and
    # must not scan every balance to answer.
    rows = cur.execute(
        "WITH pairs AS ("
        "  SELECT DISTINCT b.sku, l.site FROM balances b JOIN locations l ON l.code = b.location "
        "   WHERE l.type = 'internal' AND b.qty <> 0 AND (%(site)s::text IS NULL OR l.site = %(site)s) "
        "     AND (%(sku)s::text IS NULL OR b.sku = %(sku)s) "
        "  UNION SELECT sku, site FROM item_site_policies "
        "   WHERE (%(site)s::text IS NULL OR site = %(site)s) AND (%(sku)s::text IS NULL OR sku = %(sku)s) "
        "  UNION SELECT i.sku, s.code FROM items i CROSS JOIN sites s WHERE i.reorder_point IS NOT NULL "
        "   AND (%(site)s::text IS NULL OR s.code = %(site)s) AND (%(sku)s::text IS NULL OR i.sku = %(sku)s)) "
        "SELECT p.sku, p.site, coalesce(sp.reorder_point, i.reorder_point), coalesce(sp.reorder_qty, i.reorder_qty), "
        "       coalesce(sp.lead_time_days, i.lead_time_days) "
        "FROM pairs p JOIN items i ON i.sku = p.sku "
        "LEFT JOIN item_site_policies sp ON sp.sku = p.sku AND sp.site = p.site "
        "WHERE (%(site)s::text IS NULL OR p.site = %(site)s) AND (%(sku)s::text IS NULL OR p.sku = %(sku)s) "
        "ORDER BY p.sku, p.site", {"site": site, "sku": sku}).fetchall()
    return [ItemSite(r[0], r[1], Policy(_num(r[2]), _num(r[3]), _num(r[4]))) for r in rows]


def _available(cur: psycopg.Cursor, sku: str, site: str) -> float:
    row = cur.execute(
        "SELECT coalesce((SELECT sum(b.qty) FROM balances b JOIN locations l ON l.code = b.location "
        "                 WHERE b.sku = %(sku)s AND l.site = %(site)s AND l.type = 'internal' AND b.qty > 0), 0) "
        "     - coalesce((SELECT sum(r.qty) FROM reservations r JOIN locations l ON l.code = r.location "
        "                 WHERE r.sku = %(sku)s AND l.site = %(site)s), 0)", {"sku": sku, "site": site}).fetchone()
    return max(0.0, float(row[0])) if row else 0.0


def _consumption(cur: psycopg.Cursor, sku: str, site: str, since: datetime) -> list[tuple[date, float]]:
    rows = cur.execute(
        "SELECT (m.ts AT TIME ZONE 'UTC')::date, sum(m.qty) FROM movements m JOIN locations l "
        "ON l.code = m.from_location WHERE m.sku = %s AND l.site = %s AND l.type = 'internal' "
        "AND m.biz_step = 'picking' AND m.ts >= %s GROUP BY 1", (sku, site, since)).fetchall()
    return [(r[0], float(r[1])) for r in rows]


def _on_order(cur: psycopg.Cursor, sku: str, site: str) -> float:
    total = 0.0
    for ref, lines in cur.execute("SELECT ref, lines FROM purchase_orders WHERE site = %s AND NOT closed",
                                  (site,)).fetchall():
        ordered = sum(Decimal(str(ln["qty"])) for ln in lines if ln["sku"] == sku)
        if ordered:
            state = po_state(cur, ref, lines, False)
            total += float(max(Decimal(0), ordered - state.received.get(sku, Decimal(0))))
    return total


def suggestions(cur: psycopg.Cursor, now: datetime, site: str | None = None,
                sku: str | None = None) -> list[tuple[Suggestion, Policy]]:
    """The replenishment view: core.replenishment.suggest for each (item, site)."""
    start = now.date() - timedelta(days=HISTORY_DAYS)
    # Yesterday is the last complete day: today's partial demand would drag the level down.
    end = now.date() - timedelta(days=1)
    since = datetime.combine(start, datetime.min.time(), tzinfo=now.tzinfo)
    out = []
    for pair in item_sites(cur, site, sku):
        series = daily_series(_consumption(cur, pair.sku, pair.site, since), start, end)
        # Leading days before the first consumption are "not stocked yet", not zero demand.
        first = next((i for i, v in enumerate(series) if v > 0), len(series))
        rate = fit(series[first:]).daily_rate
        out.append((suggest(pair.sku, pair.site, _available(cur, pair.sku, pair.site),
                            _on_order(cur, pair.sku, pair.site), pair.policy, rate, now), pair.policy))
    return out


def lots_on_hand(cur: psycopg.Cursor, site: str | None = None, sku: str | None = None) -> list[LotOnHand]:
    # Filters composed only when given: a prepared statement's generic plan cannot use the balances
    # key for "x IS NULL OR sku = x", and ingest asks per sku.
    where = ["l.type IN ('internal', 'dock', 'staging')", "b.qty > 0", "b.lot <> ''", "b.expiry IS NOT NULL"]
    if site is not None:
        where.append("l.site = %(site)s")
    if sku is not None:
        where.append("b.sku = %(sku)s")
    rows = cur.execute(
        "SELECT b.sku, l.site, b.location, b.lot, b.expiry, b.qty FROM balances b JOIN locations l "
        "ON l.code = b.location WHERE " + " AND ".join(where), {"site": site, "sku": sku}).fetchall()
    return [LotOnHand(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]


def po_receipts(cur: psycopg.Cursor, ref: str) -> list[Receipt]:
    """Receive movements naming the PO that stand (neither reversed nor a reversal)."""
    rows = cur.execute(
        "SELECT m.device_id, m.msg_id, m.line, m.ts, m.sku, m.qty FROM movements m "
        "WHERE m.ref = %s AND m.biz_step = 'receiving' AND m.reverses IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)", (ref,)).fetchall()
    return [Receipt(r[0] or "api", f"{r[1]}#{r[2]}" if r[2] else str(r[1]), r[3], r[4], Decimal(r[5]))
            for r in rows]


def po_state(cur: psycopg.Cursor, ref: str, lines: Sequence[dict[str, object]], closed: bool) -> PurchaseOrderState:
    wanted: dict[str, Decimal] = {}
    for ln in lines:
        wanted[str(ln["sku"])] = wanted.get(str(ln["sku"]), Decimal(0)) + Decimal(str(ln["qty"]))
    return derive_po(wanted, po_receipts(cur, ref), closed)
