"""The one store seam of orders and tasks: typed rows in and out, locks, and the difference written back.

Used by the API (release, cancel, short close) and by ingest (scans working tasks, backorders
filled on arrival). Every decision is core's (core.orders, core.tasks); this module loads what a
decision needs, under the locks that keep two concurrent callers from deciding on the same stock,
and stores the result.

Concurrency: allocation of a (sku, site) reads availability and writes reservations. Both
releases and backorder fills take a transaction-scoped advisory lock per (sku, site) in one global
order (sorted key ids) before reading, so two of them serialise on shared items and cannot deadlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg
from psycopg.rows import class_row, dict_row

from core.orders import (
    ZERO,
    Demand,
    Fact,
    OrderLine,
    OrderState,
    Reservation,
    StockLot,
    allocate,
    derive_order,
)
from core.tasks import Task, pick_tasks

# Which location types hold pickable stock.
PICKABLE_TYPES = ("internal",)


@dataclass(frozen=True, slots=True)
class OrderRow:
    ref: str
    customer: str
    site: str
    destination: str | None
    requested_at: datetime
    priority: int
    status: str
    public_token: str


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    type: str
    ref: str
    line_no: int
    site: str
    sku: str
    gtin: str | None
    lot: str | None
    qty: Decimal
    done_qty: Decimal
    from_location: str | None
    to_location: str | None
    device_id: str | None
    due_at: datetime | None
    status: str

    def to_core(self) -> Task:
        return Task(self.task_id, self.type, self.ref, self.line_no, self.sku, self.gtin, self.lot, self.qty,
                    self.from_location, self.to_location, self.device_id, self.due_at, self.status, self.done_qty)


_TASK_COLUMNS = ("task_id, type, ref, line_no, site, sku, gtin, lot, qty, done_qty, from_location, to_location, "
                 "device_id, due_at, status")


def _lock_id(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(("orders", *parts)).encode(), digest_size=8).digest(),
                          "big", signed=True)


def lock_allocation(cur: psycopg.Cursor, site: str, skus: Iterable[str]) -> None:
    """Serialise allocation per (sku, site), locks taken in one global order."""
    ids = sorted({_lock_id(sku, site) for sku in skus})
    if ids:
        cur.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (ids,))


def lock_order(cur: psycopg.Cursor, ref: str, skip_locked: bool = False) -> OrderRow | None:
    """The order, row-locked. Releases and cancels lock the order, then its (sku, site) keys; a
    backorder fill holds the keys already, so it skips an order someone else has locked instead of
    waiting for it (that would be the reverse lock order: a deadlock)."""
    with cur.connection.cursor(row_factory=class_row(OrderRow)) as c:
        return c.execute("SELECT ref, customer, site, destination, requested_at, priority, status, public_token "
                         "FROM orders WHERE ref = %s FOR UPDATE" + (" SKIP LOCKED" if skip_locked else ""),
                         (ref,)).fetchone()


def order_lines(cur: psycopg.Cursor, ref: str) -> list[OrderLine]:
    rows = cur.execute("SELECT line_no, sku, qty, lot FROM order_lines WHERE order_ref = %s ORDER BY line_no",
                       (ref,)).fetchall()
    return [OrderLine(int(r[0]), str(r[1]), Decimal(r[2]), r[3]) for r in rows]


def stock_at_site(cur: psycopg.Cursor, site: str, skus: Sequence[str]) -> list[StockLot]:
    """Pickable balances of ``skus`` at ``site``, with the first receipt into each (FIFO order)."""
    rows = cur.execute(
        "SELECT b.sku, b.location, nullif(b.lot, ''), b.qty, b.expiry, "
        "  coalesce((SELECT min(m.ts) FROM movements m WHERE m.sku = b.sku AND m.to_location = b.location "
        "            AND coalesce(m.lot, '') = b.lot), 'epoch'::timestamptz) "
        "FROM balances b JOIN locations l ON l.code = b.location "
        "WHERE l.site = %s AND l.type = ANY(%s) AND b.sku = ANY(%s) AND b.qty > 0",
        (site, list(PICKABLE_TYPES), list(skus))).fetchall()
    return [StockLot(r[0], r[1], r[2], Decimal(r[3]), r[4], r[5]) for r in rows]


def reservations_on(cur: psycopg.Cursor, site: str, skus: Sequence[str]) -> list[Reservation]:
    rows = cur.execute(
        "SELECT r.order_ref, r.line_no, r.sku, r.location, nullif(r.lot, ''), r.qty FROM reservations r "
        "JOIN locations l ON l.code = r.location WHERE l.site = %s AND r.sku = ANY(%s)",
        (site, list(skus))).fetchall()
    return [Reservation(r[0], int(r[1]), r[2], r[3], r[4], Decimal(r[5])) for r in rows]


def site_scanners(cur: psycopg.Cursor, site: str) -> list[str]:
    return [r[0] for r in cur.execute(
        "SELECT device_id FROM devices WHERE kind = 'scanner' AND site = %s ORDER BY device_id", (site,))]


def staging_of(cur: psycopg.Cursor, site: str) -> str | None:
    row = cur.execute("SELECT code FROM locations WHERE site = %s AND type = 'staging' ORDER BY code LIMIT 1",
                      (site,)).fetchone()
    return None if row is None else str(row[0])


def _take_turns(cur: psycopg.Cursor, site: str, n: int) -> int:
    """Where this release's rotation starts; advances the site's counter by ``n``."""
    row = cur.execute("INSERT INTO site_task_turns (site, turn) VALUES (%s, %s) ON CONFLICT (site) DO UPDATE "
                      "SET turn = site_task_turns.turn + excluded.turn RETURNING turn", (site, n)).fetchone()
    assert row is not None
    return int(row[0]) - n


def _gtins(cur: psycopg.Cursor, skus: Iterable[str]) -> dict[str, str | None]:
    return {r[0]: r[1] for r in cur.execute("SELECT sku, gtin FROM items WHERE sku = ANY(%s)", (list(skus),))}


def add_facts(cur: psycopg.Cursor, ref: str, facts: Iterable[Fact]) -> None:
    rows = [(ref, f.identity, f.kind, f.ts, f.line_no, f.sku, f.qty, f.shipment) for f in facts]
    if rows:
        cur.executemany("INSERT INTO order_facts (order_ref, identity, kind, ts, line_no, sku, qty, shipment) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)


def order_facts(cur: psycopg.Cursor, ref: str) -> list[Fact]:
    rows = cur.execute("SELECT identity, kind, ts, line_no, sku, qty, shipment FROM order_facts "
                       "WHERE order_ref = %s", (ref,)).fetchall()
    return [Fact(r[0], r[1], r[2], r[3], r[4], Decimal(r[5]), r[6]) for r in rows]


def bump_versions(cur: psycopg.Cursor, devices: Iterable[str | None]) -> None:
    """A device's task list changed: its next retained publication gets a new version."""
    ids = sorted({d for d in devices if d is not None})
    if ids:
        cur.execute("INSERT INTO device_task_versions (device_id, version) SELECT d, 1 FROM unnest(%s::text[]) d "
                    "ON CONFLICT (device_id) DO UPDATE SET version = device_task_versions.version + 1", (ids,))


def insert_tasks(cur: psycopg.Cursor, site: str, tasks: Sequence[Task]) -> None:
    cur.executemany(
        f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [(t.task_id, t.type, t.ref, t.line_no, site, t.sku, t.gtin, t.lot, t.qty, t.done_qty, t.from_location,
          t.to_location, t.device_id, t.due_at, t.status) for t in tasks])
    bump_versions(cur, (t.device_id for t in tasks))


def tasks_where(cur: psycopg.Cursor, clause: str, params: Sequence[object], tail: str = "") -> list[TaskRow]:
    """Tasks in id order; ``clause`` and ``tail`` (LIMIT, FOR UPDATE) are literals of the callers."""
    with cur.connection.cursor(row_factory=class_row(TaskRow)) as c:
        return c.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {clause} ORDER BY task_id {tail}",
                         params).fetchall()


def _next_seq(cur: psycopg.Cursor, ref: str) -> int:
    row = cur.execute("SELECT count(*) FROM tasks WHERE ref = %s AND type = 'pick'", (ref,)).fetchone()
    return 1 + (int(row[0]) if row else 0)


def _store_allocation(cur: psycopg.Cursor, order: OrderRow, reservations: Sequence[Reservation], now: datetime,
                      device: str | None) -> list[Task]:
    """Reservations, their pick tasks and the ``allocated`` facts of one order."""
    if not reservations:
        return []
    staging = staging_of(cur, order.site)
    scanners = site_scanners(cur, order.site)
    start = _take_turns(cur, order.site, len(reservations)) if device is None else 0
    tasks = pick_tasks(order.ref, reservations, staging or "", scanners, _gtins(cur, {r.sku for r in reservations}),
                       device=device, first_turn=start, seq_start=_next_seq(cur, order.ref))
    insert_tasks(cur, order.site, tasks)
    cur.executemany("INSERT INTO reservations (order_ref, line_no, sku, location, lot, qty, task_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(r.order_ref, r.line_no, r.sku, r.location, r.lot or "", r.qty, t.task_id)
                     for r, t in zip(reservations, tasks, strict=True)])
    add_facts(cur, order.ref, [Fact(f"alloc:{t.task_id}", "allocated", now, t.line_no, t.sku, t.qty)
                               for t in tasks])
    return tasks


def refresh_order(cur: psycopg.Cursor, ref: str) -> OrderState:
    """Derive the order's state from its facts and store the status."""
    open_tasks = cur.execute("SELECT count(*) FROM tasks WHERE ref = %s AND type = 'pick' AND status = 'open'",
                             (ref,)).fetchone()
    state = derive_order(order_lines(cur, ref), order_facts(cur, ref), int(open_tasks[0]) if open_tasks else 0)
    cur.execute("UPDATE orders SET status = %s, updated_at = now() WHERE ref = %s AND status IS DISTINCT FROM %s",
                (state.status, ref, state.status))
    return state


def release(cur: psycopg.Cursor, order: OrderRow, now: datetime, device: str | None) -> OrderState:
    """Allocate the whole order (the caller holds the order's row lock and checked it is open)."""
    lines = order_lines(cur, order.ref)
    skus = sorted({ln.sku for ln in lines})
    lock_allocation(cur, order.site, skus)
    demands = [Demand(order.ref, ln.line_no, ln.sku, ln.qty, ln.lot, order.priority, order.requested_at)
               for ln in lines]
    result = allocate(demands, stock_at_site(cur, order.site, skus), reservations_on(cur, order.site, skus))
    add_facts(cur, order.ref, [Fact("released", "released", now)])
    _store_allocation(cur, order, result.reservations, now, device)
    return refresh_order(cur, order.ref)


def cancel(cur: psycopg.Cursor, order: OrderRow, now: datetime) -> OrderState:
    """Release the reservations and withdraw the open tasks (their devices get a new list)."""
    lock_allocation(cur, order.site, [ln.sku for ln in order_lines(cur, order.ref)])
    withdrawn = cur.execute("UPDATE tasks SET status = 'cancelled', updated_at = now() WHERE ref = %s "
                            "AND type = 'pick' AND status = 'open' RETURNING device_id", (order.ref,)).fetchall()
    cur.execute("DELETE FROM reservations WHERE order_ref = %s", (order.ref,))
    bump_versions(cur, (r[0] for r in withdrawn))
    add_facts(cur, order.ref, [Fact("cancelled", "cancelled", now)])
    return refresh_order(cur, order.ref)


def fill_backorders(cur: psycopg.Cursor, site: str, skus: Iterable[str], now: datetime) -> list[str]:
    """Allocate newly available stock to backordered lines of ``skus`` at ``site`` in priority then
    requested_at order; returns the orders that got stock."""
    wanted = sorted(set(skus))
    if not wanted:
        return []
    lock_allocation(cur, site, wanted)
    candidates = cur.execute(
        "SELECT DISTINCT o.ref FROM orders o JOIN order_lines l ON l.order_ref = o.ref "
        "WHERE o.site = %s AND l.sku = ANY(%s) AND o.status NOT IN ('open', 'cancelled') "
        "AND EXISTS (SELECT 1 FROM order_facts f WHERE f.order_ref = o.ref AND f.kind = 'released') "
        "ORDER BY o.ref", (site, wanted)).fetchall()
    orders: dict[str, OrderRow] = {}
    demands: list[Demand] = []
    for (ref,) in candidates:
        order = lock_order(cur, ref, skip_locked=True)  # a locked one is being released or cancelled
        if order is None:
            continue
        state = refresh_order(cur, ref)
        if state.status == "cancelled":
            continue
        lines = {ln.line_no: ln for ln in order_lines(cur, ref)}
        for ls in state.lines:
            if ls.backordered > 0 and ls.sku in wanted:
                orders[ref] = order
                demands.append(Demand(ref, ls.line_no, ls.sku, ls.backordered, lines[ls.line_no].lot,
                                      order.priority, order.requested_at))
    if not demands:
        return []
    result = allocate(demands, stock_at_site(cur, site, wanted), reservations_on(cur, site, wanted))
    by_order: dict[str, list[Reservation]] = {}
    for r in result.reservations:
        by_order.setdefault(r.order_ref, []).append(r)
    for ref, held in sorted(by_order.items()):
        _store_allocation(cur, orders[ref], held, now, None)
        refresh_order(cur, ref)
    return sorted(by_order)


def close_task_short(cur: psycopg.Cursor, task: TaskRow, now: datetime, identity: str) -> None:
    """The task is closed with what was picked; the rest of its reservation is released and the
    line's remainder is backordered (a ``short`` fact)."""
    rest = task.qty - task.done_qty
    cur.execute("UPDATE tasks SET status = 'short', updated_at = now() WHERE task_id = %s", (task.task_id,))
    cur.execute("DELETE FROM reservations WHERE task_id = %s", (task.task_id,))
    bump_versions(cur, [task.device_id])
    if task.type == "pick" and rest > ZERO:
        add_facts(cur, task.ref, [Fact(identity, "short", now, task.line_no, task.sku, rest)])
    refresh_order(cur, task.ref)


def order_view(cur: psycopg.Cursor, ref: str) -> tuple[OrderRow, OrderState, list[TaskRow]] | None:
    with cur.connection.cursor(row_factory=class_row(OrderRow)) as c:
        order = c.execute("SELECT ref, customer, site, destination, requested_at, priority, status, public_token "
                          "FROM orders WHERE ref = %s", (ref,)).fetchone()
    if order is None:
        return None
    open_tasks = cur.execute("SELECT count(*) FROM tasks WHERE ref = %s AND type = 'pick' AND status = 'open'",
                             (ref,)).fetchone()
    state = derive_order(order_lines(cur, ref), order_facts(cur, ref), int(open_tasks[0]) if open_tasks else 0)
    return order, state, tasks_where(cur, "ref = %s AND type = 'pick'", (ref,))


def task_scans(cur: psycopg.Cursor, task_ids: Sequence[str]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    with cur.connection.cursor(row_factory=dict_row) as c:
        for r in c.execute("SELECT task_id, device_id, msg_id, ts, qty, short, ok, reason FROM task_scans "
                           "WHERE task_id = ANY(%s) ORDER BY ts, device_id, msg_id", (list(task_ids),)):
            out.setdefault(str(r.pop("task_id")), []).append(r)
    return out
