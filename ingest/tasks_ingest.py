"""Scans meet tasks and orders, inside the ingest transaction.

``work_scans`` runs before the batch's stock is applied: a pick (or putaway) scan of a device with
open tasks is matched to one (core.tasks); a refused scan moves nothing and is answered with
feedback ``ok: false``; a matched one works its task (progress, done, short, overfilled),
consumes the task's reservation and becomes an order fact. ``after_stock`` runs after the
movements are applied: stock that arrived fills backorders, receipts against a purchase order
are checked, loading and delivery scans become order facts, and the early-warning alarms of the
touched (sku, site) pairs are re-decided.

Lock order (shared with the API): orders (by ref), then tasks, then the (sku, site) allocation keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from core.contract import Scan
from core.ledger import Posting
from core.orders import ZERO, Fact
from core.replenishment import Warning, diff_warnings, expiring_lots, stock_warnings
from core.tasks import Matched, Refused, Task, TaskScan, match, putaway_task, work
from ingest import tasks_replenishment as repl
from ingest import tasks_store as seam

# Which task type a scan's business step can work.
_TASK_TYPE = {"picking": "pick", "storing": "putaway"}
WARNING_TYPES = ("stock_low", "stock_out_risk", "lot_expiring")


@dataclass(frozen=True, slots=True)
class PlannedScan:
    """What ingest planned for one new scan: the message and its movement (None for a count)."""

    scan: Scan
    posting: Posting | None


def _insert_feedback(cur: psycopg.Cursor, rows: Sequence[tuple[str, str, bool, str | None, str | None]]) -> None:
    if rows:
        cur.executemany("INSERT INTO scan_feedback (device_id, msg_id, ok, reason, task_id) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)


def work_scans(cur: psycopg.Cursor, planned: Sequence[PlannedScan]) -> set[tuple[str, str]]:
    """Match new scans to tasks; returns the (device_id, msg_id) of refused scans (no movement)."""
    candidates = [p for p in planned if p.posting is not None
                  and (p.posting.biz_step in _TASK_TYPE or p.scan.task_id is not None)]
    if not candidates:
        return set()
    devices = sorted({p.scan.device_id for p in candidates})
    refs = sorted({r[0] for r in cur.execute("SELECT DISTINCT ref FROM tasks WHERE device_id = ANY(%s) "
                                             "AND (status = 'open' OR task_id = ANY(%s))",
                                             (devices, [p.scan.task_id for p in candidates if p.scan.task_id]))})
    # Orders first (the API's order: order, then its tasks), in one statement, in ref order.
    cur.execute("SELECT 1 FROM orders WHERE ref = ANY(%s) ORDER BY ref FOR UPDATE", (refs,))
    rows = seam.tasks_where(cur, "device_id = ANY(%s) AND (status = 'open' OR task_id = ANY(%s))",
                            (devices, [p.scan.task_id for p in candidates if p.scan.task_id]), "FOR UPDATE")
    tasks: dict[str, Task] = {t.task_id: t.to_core() for t in rows}
    if not tasks:
        return set()
    refused: set[tuple[str, str]] = set()
    feedback: list[tuple[str, str, bool, str | None, str | None]] = []
    touched_orders: set[str] = set()
    touched_devices: set[str] = set()
    for p in sorted(candidates, key=lambda p: (p.scan.ts, p.scan.device_id, p.scan.msg_id)):
        posting = p.posting
        assert posting is not None
        wanted_type = _TASK_TYPE.get(posting.biz_step)
        pool = [t for t in tasks.values() if wanted_type is None or t.type == wanted_type
                or t.task_id == p.scan.task_id]
        ts = TaskScan(p.scan.device_id, p.scan.msg_id, p.scan.ts, posting.sku, posting.lot, posting.from_location,
                      posting.qty, p.scan.short, p.scan.task_id)
        decision = match(ts, pool)
        if decision is None:
            continue  # the device has no open task of this kind: a free scan, stock moves as scanned
        key = (p.scan.device_id, p.scan.msg_id)
        if isinstance(decision, Refused):
            refused.add(key)
            feedback.append((*key, False, decision.reason, decision.task_id))
            _record_scan(cur, ts, decision.task_id, False, decision.reason)
            continue
        assert isinstance(decision, Matched)
        outcome = work(decision.task, ts)
        task = outcome.task
        tasks[task.task_id] = task
        _record_scan(cur, ts, task.task_id, True, None)
        cur.execute("UPDATE tasks SET done_qty = %s, status = %s, updated_at = now() WHERE task_id = %s",
                    (task.done_qty, task.status, task.task_id))
        touched_devices.add(p.scan.device_id)
        if outcome.feedback is not None:
            feedback.append((*key, True, outcome.feedback, task.task_id))
        if task.type == "pick":
            touched_orders.add(task.ref)
            # The picked goods leave the bin: what the task held there is consumed.
            if task.status == "open":
                cur.execute("UPDATE reservations SET qty = %s WHERE task_id = %s", (task.qty - task.done_qty,
                                                                                    task.task_id))
            else:
                cur.execute("DELETE FROM reservations WHERE task_id = %s", (task.task_id,))
            facts = [Fact(f"pick:{key[0]}:{key[1]}", "picked", ts.ts, task.line_no, task.sku, ts.qty)]
            if outcome.backorder > ZERO:
                facts.append(Fact(f"short:{key[0]}:{key[1]}", "short", ts.ts, task.line_no, task.sku,
                                  outcome.backorder))
            seam.add_facts(cur, task.ref, facts)
    _insert_feedback(cur, feedback)
    seam.bump_versions(cur, touched_devices)
    for ref in sorted(touched_orders):
        seam.refresh_order(cur, ref)
    return refused


def _record_scan(cur: psycopg.Cursor, ts: TaskScan, task_id: str | None, ok: bool, reason: str | None) -> None:
    cur.execute("INSERT INTO task_scans (device_id, msg_id, task_id, ts, qty, short, ok, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (ts.device_id, ts.msg_id, task_id, ts.ts, ts.qty, ts.short, ok, reason))


def _site_of(cur: psycopg.Cursor, codes: Iterable[str]) -> dict[str, tuple[str, str]]:
    return {r[0]: (r[1], r[2]) for r in cur.execute("SELECT code, site, type FROM locations WHERE code = ANY(%s)",
                                                    (sorted(set(codes)),))}


def after_stock(cur: psycopg.Cursor, planned: Sequence[PlannedScan], now: datetime | None = None,
                expiry_warning_days: int = 30) -> None:
    """The order-side effects of movements that were just applied."""
    postings = [(p.scan, p.posting) for p in planned if p.posting is not None]
    if not postings:
        return
    now = now or datetime.now(UTC)
    where = _site_of(cur, {c for _, q in postings for c in (q.from_location, q.to_location)})
    arrived: dict[str, set[str]] = {}
    touched: set[tuple[str, str]] = set()
    for _, q in postings:
        for code in (q.from_location, q.to_location):
            site_type = where.get(code)
            if site_type is not None and site_type[1] in ("internal", "dock", "staging"):
                touched.add((q.sku, site_type[0]))
        dst = where.get(q.to_location)
        if dst is not None and dst[1] == "internal":
            arrived.setdefault(dst[0], set()).add(q.sku)
    _purchase_orders(cur, postings, where)
    _loading_and_delivery(cur, postings)
    for site, skus in sorted(arrived.items()):
        seam.fill_backorders(cur, site, skus, now)
    refresh_warnings(cur, touched, now, expiry_warning_days)


def _purchase_orders(cur: psycopg.Cursor, postings: Sequence[tuple[Scan, Posting]],
                     where: dict[str, tuple[str, str]]) -> None:
    receipts = [(s, q) for s, q in postings if q.biz_step == "receiving" and q.ref]
    refs = sorted({q.ref for _, q in receipts if q.ref})
    if not refs:
        return
    pos = {r[0]: (r[1], r[2]) for r in cur.execute("SELECT ref, lines, closed FROM purchase_orders "
                                                   "WHERE ref = ANY(%s) FOR UPDATE", (refs,))}
    for ref, (lines, closed) in sorted(pos.items()):
        state = repl.po_state(cur, ref, lines, bool(closed))
        cur.execute("UPDATE purchase_orders SET status = %s, updated_at = now() WHERE ref = %s AND status <> %s",
                    (state.status, ref, state.status))
        # One alarm per exception, identified by the receipt that caused it: a replay finds it again.
        cur.executemany(
            "INSERT INTO alarms (type, severity, state, device_id, sku, subject, started_at, peak_value, message) "
            "VALUES ('receipt_exception', 'warning', 'active', %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (type, subject) WHERE state = 'active' DO NOTHING",
            [(e.device_id, e.sku, f"{ref}|{e.device_id}|{e.msg_id}", e.ts, float(e.excess),
              f"purchase order {ref}: {e.kind.replace('_', ' ')}: {e.message}") for e in state.exceptions])
    _putaways(cur, [(s, q) for s, q in receipts if q.ref in pos], where)


def _putaways(cur: psycopg.Cursor, receipts: Sequence[tuple[Scan, Posting]],
              where: dict[str, tuple[str, str]]) -> None:
    """Received goods at a dock get a putaway task to the item's default bin, for the receiving scanner."""
    skus = sorted({q.sku for _, q in receipts})
    if not skus:
        return
    bins: dict[str, str | None] = {}
    gtins: dict[str, str | None] = {}
    for sku, default_location, gtin in cur.execute("SELECT sku, default_location, gtin FROM items "
                                                   "WHERE sku = ANY(%s)", (skus,)):
        bins[sku], gtins[sku] = default_location, gtin
    for scan, q in receipts:
        dock = where.get(q.to_location)
        if dock is None or dock[1] == "internal" or q.ref is None:
            continue
        task = putaway_task(q.ref, 0, f"{scan.device_id}:{scan.msg_id}", q.sku, gtins.get(q.sku), q.lot, q.qty,
                            q.to_location, bins.get(q.sku), scan.device_id)
        if task is not None:
            cur.execute("INSERT INTO tasks (task_id, type, ref, line_no, site, sku, gtin, lot, qty, from_location, "
                        "to_location, device_id) VALUES (%s, 'putaway', %s, 0, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING", (task.task_id, task.ref, dock[0], task.sku, task.gtin, task.lot,
                                                   task.qty, task.from_location, task.to_location, task.device_id))
            seam.bump_versions(cur, [task.device_id])


def _loading_and_delivery(cur: psycopg.Cursor, postings: Sequence[tuple[Scan, Posting]]) -> None:
    """Ship scans onto a shipment become ``shipped`` facts of the order linked to it (orders.shipment),
    deliveries of that shipment ``delivered`` facts."""
    loads = [(s, q) for s, q in postings if q.biz_step == "loading" and q.ref]
    deliveries = [(s, q) for s, q in postings if q.biz_step == "arriving" and q.ref]
    refs = sorted({q.ref for _, q in (*loads, *deliveries) if q.ref})
    if not refs:
        return
    linked: dict[str, list[str]] = {}
    skus_of: dict[str, set[str]] = {}
    for order_ref, shipment, sku in cur.execute(
            "SELECT s.order_ref, s.shipment, l.sku FROM order_shipments s JOIN order_lines l "
            "ON l.order_ref = s.order_ref WHERE s.shipment = ANY(%s) ORDER BY s.order_ref", (refs,)):
        if order_ref not in linked.get(shipment, []):
            linked.setdefault(shipment, []).append(order_ref)
        skus_of.setdefault(order_ref, set()).add(sku)
    touched: set[str] = set()
    for scan, q in loads:
        # A load counts for one order: the first (by ref) linked to the shipment that orders the sku.
        for order_ref in [o for o in linked.get(q.ref or "", []) if q.sku in skus_of.get(o, set())][:1]:
            seam.add_facts(cur, order_ref, [Fact(f"ship:{scan.device_id}:{scan.msg_id}", "shipped", q.ts, None,
                                                 q.sku, q.qty, q.ref)])
            touched.add(order_ref)
    for _, q in deliveries:
        for order_ref in linked.get(q.ref or "", []):
            seam.add_facts(cur, order_ref, [Fact(f"delivered:{q.ref}", "delivered", q.ts, shipment=q.ref)])
            touched.add(order_ref)
    for ref in sorted(touched):
        seam.refresh_order(cur, ref)


def refresh_warnings(cur: psycopg.Cursor, pairs: Iterable[tuple[str, str]], now: datetime,
                     expiry_warning_days: int = 30) -> None:
    """Open and clear ``stock_low``, ``stock_out_risk`` and ``lot_expiring`` for the (sku, site) pairs."""
    for sku, site in sorted(set(pairs)):
        holding: list[Warning] = []
        for suggestion, policy in repl.suggestions(cur, now, site, sku):
            holding += stock_warnings(suggestion, policy)
        holding += expiring_lots(repl.lots_on_hand(cur, site, sku), now.date(), expiry_warning_days)
        active = [(r[0], sku, site, r[1] or "", r[2] or "") for r in cur.execute(
            "SELECT type, location, lot FROM alarms WHERE state = 'active' AND type = ANY(%s) AND sku = %s "
            "AND subject LIKE %s", (list(WARNING_TYPES), sku, f"{sku}|{site}|%"))]
        to_open, to_clear = diff_warnings(active, holding)
        for w in to_open:
            cur.execute("INSERT INTO alarms (type, severity, state, location, sku, lot, subject, started_at, "
                        "peak_value, message) VALUES (%s, %s, 'active', %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (type, subject) WHERE state = 'active' DO NOTHING",
                        (w.type, w.severity, w.location, w.sku, w.lot, f"{sku}|{site}|{w.location or ''}|"
                         f"{w.lot or ''}", now, w.value, w.message))
        for type_, _, _, location, lot in to_clear:
            cur.execute("UPDATE alarms SET state = 'cleared', cleared_at = %s, updated_at = now() WHERE state = "
                        "'active' AND type = %s AND subject = %s", (now, type_, f"{sku}|{site}|{location}|{lot}"))
