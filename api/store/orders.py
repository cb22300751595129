"""Orders, tasks and purchase orders for the API: reference checks, transactions, and shaping rows.

Decisions are core's, reached through the ingest seam (``ingest.tasks_store``) that ingest uses
too, so a release from the API and a backorder fill from a scan take the same locks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.errors import ConflictError, InvalidReferenceError, NotFoundError
from api.schemas.orders import OrderIn, PurchaseOrderIn, SitePolicyIn
from api.store.filters import Where
from api.store.records import Row, integrity_errors_translated
from ingest import tasks_replenishment as repl
from ingest import tasks_store as seam


def _location_of_type(cur: psycopg.Cursor, code: str, type_: str, field: str) -> None:
    row = cur.execute("SELECT type FROM locations WHERE code = %s", (code,)).fetchone()
    if row is None:
        raise InvalidReferenceError(f"{field}: location {code!r} does not exist")
    if row[0] != type_:
        raise InvalidReferenceError(f"{field}: location {code!r} is of type {row[0]!r}, not {type_!r}")


def _exists(cur: psycopg.Cursor, table: str, column: str, code: str, field: str) -> None:
    # table and column come from this module's literals only, never from a request
    if cur.execute(f"SELECT 1 FROM {table} WHERE {column} = %s", (code,)).fetchone() is None:
        raise InvalidReferenceError(f"{field}: {code!r} does not exist")


def _skus_exist(cur: psycopg.Cursor, skus: list[str]) -> None:
    known = {r[0] for r in cur.execute("SELECT sku FROM items WHERE sku = ANY(%s)", (skus,))}
    missing = sorted(set(skus) - known)
    if missing:
        raise InvalidReferenceError(f"lines: unknown sku {', '.join(map(repr, missing))}")


def put_order(conn: psycopg.Connection, ref: str, body: OrderIn) -> tuple[Row, bool]:
    """Create or replace an open order; an order already released is 409 (cancel it first)."""
    with conn.transaction(), conn.cursor() as cur:
        _location_of_type(cur, body.customer, "customer", "customer")
        _exists(cur, "sites", "code", body.site, "site")
        if body.destination is not None:
            _exists(cur, "geofences", "code", body.destination, "destination")
        _skus_exist(cur, [ln.sku for ln in body.lines])
        for shipment in body.shipments:
            _exists(cur, "shipments", "ref", shipment, "shipments")
        current = seam.lock_order(cur, ref)
        if current is not None and current.status != "open":
            raise ConflictError(f"order {ref!r} is {current.status}; only an open order can be replaced")
        requested = body.requested_at or (current.requested_at if current else datetime.now(UTC))
        with integrity_errors_translated(f"order {ref!r}"):
            cur.execute(
                "INSERT INTO orders (ref, customer, site, destination, requested_at, priority, public_token) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (ref) DO UPDATE SET customer = excluded.customer, "
                "site = excluded.site, destination = excluded.destination, requested_at = excluded.requested_at, "
                "priority = excluded.priority, updated_at = now()",
                (ref, body.customer, body.site, body.destination, requested, body.priority,
                 secrets.token_urlsafe(24)))
            cur.execute("DELETE FROM order_lines WHERE order_ref = %s", (ref,))
            cur.executemany("INSERT INTO order_lines (order_ref, line_no, sku, qty, lot) VALUES (%s, %s, %s, %s, %s)",
                            [(ref, i, ln.sku, ln.qty, ln.lot) for i, ln in enumerate(body.lines, start=1)])
            cur.execute("DELETE FROM order_shipments WHERE order_ref = %s", (ref,))
            cur.executemany("INSERT INTO order_shipments (order_ref, shipment) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            [(ref, s) for s in body.shipments])
        row = order_out(cur, ref)
    assert row is not None
    return row, current is None


def release(conn: psycopg.Connection, ref: str, device: str | None) -> Row:
    """Allocate and create pick tasks; releasing a released order again is a no-op (a retried request)."""
    with conn.transaction(), conn.cursor() as cur:
        order = seam.lock_order(cur, ref)
        if order is None:
            raise NotFoundError(f"order {ref!r} does not exist")
        if device is not None:
            row = cur.execute("SELECT kind, site FROM devices WHERE device_id = %s", (device,)).fetchone()
            if row is None or row[0] != "scanner":
                raise InvalidReferenceError(f"device: {device!r} is not a known scanner")
        if order.status == "cancelled":
            raise ConflictError(f"order {ref!r} is cancelled")
        released = cur.execute("SELECT 1 FROM order_facts WHERE order_ref = %s AND kind = 'released'",
                               (ref,)).fetchone()
        if released is None:
            seam.release(cur, order, datetime.now(UTC), device)
        out = order_out(cur, ref)
    assert out is not None
    return out


def cancel(conn: psycopg.Connection, ref: str) -> Row:
    with conn.transaction(), conn.cursor() as cur:
        order = seam.lock_order(cur, ref)
        if order is None:
            raise NotFoundError(f"order {ref!r} does not exist")
        if order.status not in ("cancelled", "open", "allocated", "backordered", "picking", "partially_picked",
                                "picked"):
            raise ConflictError(f"order {ref!r} is {order.status}; goods already left, it cannot be cancelled")
        if order.status != "cancelled":
            seam.cancel(cur, order, datetime.now(UTC))
        out = order_out(cur, ref)
    assert out is not None
    return out


def _task_dict(t: seam.TaskRow, scans: dict[str, list[dict[str, Any]]]) -> Row:
    return {"task_id": t.task_id, "type": t.type, "ref": t.ref, "sku": t.sku, "gtin": t.gtin, "lot": t.lot,
            "qty": t.qty, "done_qty": t.done_qty, "from_location": t.from_location, "to_location": t.to_location,
            "due_at": t.due_at, "status": t.status, "device_id": t.device_id, "scans": scans.get(t.task_id, [])}


def order_out(cur: psycopg.Cursor, ref: str) -> Row | None:
    view = seam.order_view(cur, ref)
    if view is None:
        return None
    order, state, tasks = view
    scans = seam.task_scans(cur, [t.task_id for t in tasks])
    lots: dict[int, str | None] = dict(cur.execute("SELECT line_no, lot FROM order_lines WHERE order_ref = %s",
                                                   (ref,)).fetchall())
    return {"ref": order.ref, "status": state.status, "customer": order.customer, "site": order.site,
            "priority": order.priority, "requested_at": order.requested_at, "destination": order.destination,
            "lines": [{"line_no": ln.line_no, "sku": ln.sku, "qty": ln.qty, "lot": lots.get(ln.line_no),
                       "allocated": ln.allocated, "picked": ln.picked, "shipped": ln.shipped,
                       "delivered": ln.delivered, "backordered": ln.backordered} for ln in state.lines],
            "tasks": [_task_dict(t, scans) for t in tasks], "shipments": list(state.shipments),
            "events": [{"ts": e.ts, "type": e.type, "detail": e.detail} for e in state.events],
            "public_token": order.public_token}


def get_order(conn: psycopg.Connection, ref: str) -> Row | None:
    with conn.cursor() as cur:
        return order_out(cur, ref)


def list_orders(conn: psycopg.Connection, status: str | None, site: str | None, after: str | None,
                limit: int) -> list[Row]:
    w = Where()
    w.when(status, "status = %(status)s", "status")
    w.when(site, "site = %(site)s", "site")
    w.when(after, "ref > %(after)s", "after")
    with conn.cursor() as cur:
        refs = [r[0] for r in cur.execute(f"SELECT ref FROM orders {w.sql()} ORDER BY ref LIMIT %(limit)s",
                                          {**w.params, "limit": limit})]
        return [row for ref in refs if (row := order_out(cur, ref)) is not None]


def list_tasks(conn: psycopg.Connection, device: str | None, status: str | None, ref: str | None,
               after: str | None, limit: int) -> list[Row]:
    clauses, params = ["true"], []
    for value, clause in ((device, "device_id = %s"), (status, "status = %s"), (ref, "ref = %s"),
                          (after, "task_id > %s")):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    with conn.cursor() as cur:
        tasks = seam.tasks_where(cur, " AND ".join(clauses), params, f"LIMIT {int(limit)}")
        scans = seam.task_scans(cur, [t.task_id for t in tasks])
        return [_task_dict(t, scans) for t in tasks]


def close_task_short(conn: psycopg.Connection, task_id: str, by: str) -> Row:
    with conn.transaction(), conn.cursor() as cur:
        found = seam.tasks_where(cur, "task_id = %s", (task_id,))
        if not found:
            raise NotFoundError(f"task {task_id!r} does not exist")
        # The order's lock first, then the task's: the order ingest takes them in.
        if found[0].type == "pick":
            seam.lock_order(cur, found[0].ref)
        task = seam.tasks_where(cur, "task_id = %s", (task_id,), "FOR UPDATE")[0]
        if task.status != "open":
            raise ConflictError(f"task {task_id!r} is {task.status}")
        seam.close_task_short(cur, task, datetime.now(UTC), f"short:{task_id}:api:{by}")
        after = seam.tasks_where(cur, "task_id = %s", (task_id,))[0]
        return _task_dict(after, seam.task_scans(cur, [task_id]))


# --- purchase orders ------------------------------------------------------------------------------


def put_purchase_order(conn: psycopg.Connection, ref: str, body: PurchaseOrderIn) -> tuple[Row, bool]:
    with conn.transaction(), conn.cursor() as cur:
        _location_of_type(cur, body.supplier, "supplier", "supplier")
        _exists(cur, "sites", "code", body.site, "site")
        _skus_exist(cur, [ln.sku for ln in body.lines])
        lines = [{"sku": ln.sku, "qty": str(ln.qty)} for ln in body.lines]
        row = cur.execute(
            "INSERT INTO purchase_orders (ref, supplier, site, expected_at, lines) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (ref) DO UPDATE SET supplier = excluded.supplier, site = excluded.site, "
            "expected_at = excluded.expected_at, lines = excluded.lines, updated_at = now() "
            "RETURNING (xmax = 0)", (ref, body.supplier, body.site, body.expected_at, Jsonb(lines))).fetchone()
        out = purchase_order_out(cur, ref)
    assert row is not None and out is not None
    return out, bool(row[0])


def close_purchase_order(conn: psycopg.Connection, ref: str) -> Row:
    with conn.transaction(), conn.cursor() as cur:
        if cur.execute("UPDATE purchase_orders SET closed = true, updated_at = now() WHERE ref = %s RETURNING 1",
                       (ref,)).fetchone() is None:
            raise NotFoundError(f"purchase order {ref!r} does not exist")
        out = purchase_order_out(cur, ref)
    assert out is not None
    return out


def purchase_order_out(cur: psycopg.Cursor, ref: str) -> Row | None:
    with cur.connection.cursor(row_factory=dict_row) as c:
        po = c.execute("SELECT * FROM purchase_orders WHERE ref = %s", (ref,)).fetchone()
    if po is None:
        return None
    state = repl.po_state(cur, ref, po["lines"], bool(po["closed"]))
    if state.status != po["status"]:
        cur.execute("UPDATE purchase_orders SET status = %s WHERE ref = %s", (state.status, ref))
    return {"ref": ref, "status": state.status, "supplier": po["supplier"], "site": po["site"],
            "expected_at": po["expected_at"],
            "lines": [{"sku": ln["sku"], "qty": Decimal(str(ln["qty"])),
                       "received": state.received.get(ln["sku"], Decimal(0))} for ln in po["lines"]],
            "exceptions": [{"ts": e.ts, "kind": e.kind, "sku": e.sku, "excess": e.excess, "device_id": e.device_id,
                            "msg_id": e.msg_id, "message": e.message} for e in state.exceptions]}


def get_purchase_order(conn: psycopg.Connection, ref: str) -> Row | None:
    with conn.cursor() as cur:
        return purchase_order_out(cur, ref)


def list_purchase_orders(conn: psycopg.Connection, after: str | None, limit: int) -> list[Row]:
    with conn.cursor() as cur:
        refs = [r[0] for r in cur.execute("SELECT ref FROM purchase_orders WHERE %(a)s::text IS NULL OR ref > %(a)s "
                                          "ORDER BY ref LIMIT %(l)s", {"a": after, "l": limit})]
        return [row for ref in refs if (row := purchase_order_out(cur, ref)) is not None]


# --- replenishment and public tracking ------------------------------------------------------------


def replenishment(conn: psycopg.Connection, site: str | None, sku: str | None) -> list[Row]:
    with conn.cursor() as cur:
        return [{"sku": s.sku, "site": s.site, "available": s.available, "reorder_point": s.reorder_point,
                 "suggested_qty": s.suggested_qty, "days_of_cover": s.days_of_cover,
                 "stockout_expected_at": s.stockout_expected_at, "daily_rate": s.daily_rate,
                 "on_order": s.on_order, "lead_time_days": p.lead_time_days}
                for s, p in repl.suggestions(cur, datetime.now(UTC), site, sku)]


def order_by_public_token(conn: psycopg.Connection, token: str) -> Row | None:
    """The customer's view: status, shipments (status, eta) and events; no lines, no stock, no tasks."""
    digest = hashlib.md5(token.encode(), usedforsecurity=False).hexdigest()
    with conn.cursor() as cur:
        row = cur.execute("SELECT ref, public_token FROM orders WHERE md5(public_token) = %s", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(str(row[1]).encode(), token.encode()):
            return None
        view = seam.order_view(cur, str(row[0]))
        if view is None:
            return None
        _, state, _ = view
        shipments = []
        for ref in state.shipments:
            s = cur.execute("SELECT s.status, st.eta FROM shipments s LEFT JOIN shipment_state st "
                            "ON st.ref = s.ref WHERE s.ref = %s", (ref,)).fetchone()
            if s is not None:
                shipments.append({"ref": ref, "status": s[0], "eta": s[1]})
        customer_events = {"released", "picked", "shipped", "delivered", "cancelled"}
        return {"status": state.status, "shipments": shipments,
                "events": [{"ts": e.ts, "type": e.type, "detail": ""} for e in state.events
                           if e.type in customer_events]}


def put_site_policy(conn: psycopg.Connection, sku: str, site: str, body: SitePolicyIn) -> tuple[Row, bool]:
    with conn.transaction(), conn.cursor() as check, conn.cursor(row_factory=dict_row) as cur:
        _skus_exist(check, [sku])
        _exists(check, "sites", "code", site, "site")
        row = cur.execute(
            "INSERT INTO item_site_policies (sku, site, reorder_point, reorder_qty, lead_time_days) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sku, site) DO UPDATE SET reorder_point = excluded.reorder_point, "
            "reorder_qty = excluded.reorder_qty, lead_time_days = excluded.lead_time_days "
            "RETURNING *, (xmax = 0) AS created",
            (sku, site, body.reorder_point, body.reorder_qty, body.lead_time_days)).fetchone()
    assert row is not None
    return row, bool(row.pop("created"))
