"""Warehouse tasks: pick tasks from reservations, putaway tasks from receipts, and scans matched to tasks.

A scan that works a task must be the right item, the right lot (when the task names one) at the
right bin; anything else is refused and moves nothing, so the scanner can beep at once. The task's
progress is decided from the set of scans that worked it, sorted in event time, so arrival order
and redeliveries do not matter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

from core.orders import ZERO, Reservation

TASK_TYPES: Final = ("pick", "putaway", "receive", "count")
TASK_STATUSES: Final = ("open", "done", "short", "cancelled")


class Refusal:
    """Feedback reason codes (CONTRACT 3.1) for a scan that works no task."""

    WRONG_ITEM: Final = "wrong_item"
    WRONG_LOT: Final = "wrong_lot"
    WRONG_BIN: Final = "wrong_bin"
    UNKNOWN_TASK: Final = "unknown_task"      # task_id is not one of this device's tasks
    TASK_CLOSED: Final = "task_closed"        # the task is done, short or withdrawn


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    type: str
    ref: str                      # the order (pick) or purchase order (putaway/receive)
    line_no: int
    sku: str
    gtin: str | None
    lot: str | None
    qty: Decimal
    from_location: str | None
    to_location: str | None
    device_id: str | None
    due_at: datetime | None = None
    status: str = "open"
    done_qty: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class TaskScan:
    """What the adapter read from a scan that may work a task."""

    device_id: str
    msg_id: str
    ts: datetime
    sku: str
    lot: str | None
    location: str | None          # where the scan happened: the bin the goods come from
    qty: Decimal
    short: bool = False
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class Matched:
    task: Task


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    task_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """The task after a scan, and the feedback owed to the scanner (None: nothing to say)."""

    task: Task
    feedback: str | None          # done, short, overfilled, or None for a partial pick
    backorder: Decimal            # what the short pick gives up


def pick_tasks(order_ref: str, reservations: Sequence[Reservation], staging: str, scanners: Sequence[str],
               gtins: Mapping[str, str | None], device: str | None = None, first_turn: int = 0,
               due_at: datetime | None = None, seq_start: int = 1) -> list[Task]:
    """One pick task per reservation, from its bin to ``staging``, for ``device`` or the scanners in turn.

    ``first_turn`` is where the rotation starts (the site's running count of assigned tasks), so
    work spreads across releases; with no scanner the task is unassigned (``device_id`` None).
    Task ids are deterministic (order, line, sequence) so a retried release makes the same ids.
    """
    ordered = sorted(scanners)
    tasks = []
    for i, r in enumerate(reservations):
        who = device if device is not None else (ordered[(first_turn + i) % len(ordered)] if ordered else None)
        tasks.append(Task(f"{order_ref}:{r.line_no}:{seq_start + i}", "pick", order_ref, r.line_no, r.sku,
                          gtins.get(r.sku), r.lot, r.qty, r.location, staging, who, due_at))
    return tasks


def putaway_task(po_ref: str, line_no: int, msg_id: str, sku: str, gtin: str | None, lot: str | None,
                 qty: Decimal, dock: str, default_bin: str | None, device: str | None) -> Task | None:
    """Putaway of received goods from the dock to the item's default bin; None when the item has none."""
    if default_bin is None or default_bin == dock:
        return None
    # msg_id is free text from a device: a digest keeps the id path-safe and bounded.
    digest = hashlib.blake2b(msg_id.encode(), digest_size=6).hexdigest()
    return Task(f"{po_ref}:put:{digest}", "putaway", po_ref, line_no, sku, gtin, lot, qty, dock, default_bin,
                device)


def match(scan: TaskScan, tasks: Iterable[Task]) -> Matched | Refused | None:
    """The device's task this scan works, a refusal, or None when the device has no open task of that kind.

    By ``task_id`` when the scan names one, else by sku + from-location (+ lot when the task names
    one). The refusal says what is wrong so the operator knows where to look: a sku none of the
    tasks wants (wrong item), the wanted item at another bin (wrong bin), or the wrong lot.
    """
    mine = [t for t in tasks if t.device_id == scan.device_id]
    if scan.task_id is not None:
        named = next((t for t in mine if t.task_id == scan.task_id), None)
        if named is None:
            return Refused(Refusal.UNKNOWN_TASK, scan.task_id, f"task {scan.task_id} is not assigned to this scanner")
        if named.status != "open":
            return Refused(Refusal.TASK_CLOSED, named.task_id, f"task {named.task_id} is {named.status}")
        return _check(scan, named)
    open_ = sorted((t for t in mine if t.status == "open"), key=lambda t: (t.due_at is None, t.due_at, t.task_id))
    if not open_:
        return None
    same_sku = [t for t in open_ if t.sku == scan.sku]
    if not same_sku:
        return Refused(Refusal.WRONG_ITEM, open_[0].task_id, f"no open task wants {scan.sku}")
    def at_bin(t: Task) -> bool:
        return t.from_location is None or t.from_location == scan.location

    def lot_ok(t: Task) -> bool:
        return t.lot is None or t.lot == scan.lot

    exact = [t for t in same_sku if at_bin(t) and lot_ok(t)]
    if exact:
        return Matched(exact[0])
    # The scanned lot is wanted, elsewhere: the picker is at the wrong bin. Else the bin is right
    # and the lot is not. Else neither: send them to the bin of the first task.
    elsewhere = [t for t in same_sku if lot_ok(t)]
    here = [t for t in same_sku if at_bin(t)]
    if here and not elsewhere:
        t = here[0]
        return Refused(Refusal.WRONG_LOT, t.task_id, f"task {t.task_id} wants lot {t.lot}, not {scan.lot}")
    t = (elsewhere or same_sku)[0]
    return Refused(Refusal.WRONG_BIN, t.task_id, f"{scan.sku} is to be taken from {t.from_location}, "
                                                f"not {scan.location}")


def _check(scan: TaskScan, task: Task) -> Matched | Refused:
    if scan.sku != task.sku:
        return Refused(Refusal.WRONG_ITEM, task.task_id, f"task {task.task_id} wants {task.sku}, not {scan.sku}")
    if task.from_location is not None and scan.location != task.from_location:
        return Refused(Refusal.WRONG_BIN, task.task_id, f"task {task.task_id} is at {task.from_location}, "
                                                       f"not {scan.location}")
    if task.lot is not None and scan.lot != task.lot:
        return Refused(Refusal.WRONG_LOT, task.task_id, f"task {task.task_id} wants lot {task.lot}, not {scan.lot}")
    return Matched(task)


def work(task: Task, scan: TaskScan) -> Outcome:
    """Apply one matched scan: progress, done when the quantity is reached, short when the scan says so."""
    done_qty = task.done_qty + scan.qty
    if scan.short or done_qty >= task.qty:
        if done_qty > task.qty:
            return Outcome(replace(task, status="done", done_qty=done_qty), "overfilled", ZERO)
        if done_qty == task.qty:
            return Outcome(replace(task, status="done", done_qty=done_qty), "done", ZERO)
        return Outcome(replace(task, status="short", done_qty=done_qty), "short", task.qty - done_qty)
    return Outcome(replace(task, done_qty=done_qty), None, ZERO)


def close_short(task: Task) -> Outcome:
    """An operator closes the task with what was picked so far (the API's short close)."""
    if task.status != "open":
        return Outcome(task, None, ZERO)
    return Outcome(replace(task, status="short"), "short", task.qty - task.done_qty)


def replay_task(task: Task, scans: Iterable[TaskScan]) -> tuple[Task, list[tuple[TaskScan, Outcome]]]:
    """The task's state from all scans that worked it, in event time (ties by device, msg_id).

    The same scans in any arrival order, with duplicates, give the same task: a redelivered
    (device, msg_id) counts once, and scans after the task closed are ignored (they were refused).
    """
    seen: dict[tuple[str, str], TaskScan] = {}
    for s in scans:
        seen.setdefault((s.device_id, s.msg_id), s)
    state = replace(task, status="open", done_qty=ZERO)
    outcomes = []
    for s in sorted(seen.values(), key=lambda s: (s.ts, s.device_id, s.msg_id)):
        if state.status != "open":
            break
        out = work(state, s)
        outcomes.append((s, out))
        state = out.task
    return state, outcomes
