"""`cargotrace bench orders`: order lines allocated per second, then picking by simulated scanners.

Method (private broker and database, like the other benchmarks):
  1. a warehouse of 200 items in lots over bins, stock received straight into the ledger (COPY-like
     ``generate_series``, balances rebuilt), and N order lines (5 per order) written as open orders;
  2. every order released through the same code path as ``POST /orders/{ref}/release`` on one
     connection: lines allocated per second = lines / wall time (FEFO allocation, reservations,
     pick tasks, order status);
  3. the real ingest workers and the downlink publisher run; S scanners (``TaskPicker``, each its
     own MQTT login) work their retained task lists (1 % wrong-bin scans, refused; 1 % short
     picks) while a background of env readings is published at a fixed rate. Each scan's latency
     is publish -> the scanner receiving its ``feedback`` (the beep), p50/p99 reported.

Its own database (``cargotrace_bench_orders``) and state directory.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiomqtt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.store import orders as order_store
from cli.bench_ingest import _percentile, _provision, _Workers, console, free_port
from cli.bench_report import Panel, write_report
from cli.bench_scans import _Paced, gtin_for
from cli.local_broker import start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts
from ingest.db import connect, migrate
from ingest.downlink import running_downlink
from ingest.rebuild import rebuild
from runtime.settings import Settings, load_settings
from simulators.loadgen import DeviceLogin, LoadError
from simulators.models.task_worker import TaskPicker, WorkLog, work_tasks

BENCH_DATABASE = "cargotrace_bench_orders"
ITEMS = 200
BINS = 600
LINES_PER_ORDER = 5


@dataclass
class OrderBenchResult:
    mode: str
    lines: int
    orders: int
    scanners: int
    workers: int
    lines_allocated_per_s: float
    release_s: float
    tasks: int
    picks_done: int
    picks_short: int
    scans_refused: int
    feedback_timeouts: int
    picking_s: float
    tasks_closed_per_s: float
    feedback_p50_ms: float
    feedback_p99_ms: float
    feedback_max_ms: float
    feedback_samples: int
    background_msgs_per_s: int
    background_achieved_msgs_per_s: float
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpus: int = 0


def orders_bench_settings(base: Settings, workers: int) -> Settings:
    state = base.state_dir / "bench-orders"
    shutil.rmtree(state, ignore_errors=True)
    return load_settings(create_secrets=True, state_dir=state, mqtt_port=free_port(),
                         database_url=make_conninfo(base.database_url, dbname=BENCH_DATABASE),
                         ingest_group="bench-orders", ingest_client_prefix="bench-orders-ingest",
                         ingest_workers=workers, log_level="WARNING")


def _fresh_database(settings: Settings) -> None:
    with connect(make_conninfo(settings.database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DATABASE)))
    migrate(settings.database_url)


def build_warehouse(conn: psycopg.Connection, lines: int) -> None:
    """Items in three lots each over three bins, enough for every line; open orders of 5 lines."""
    per_bin = max(60, (lines * 2 * 2) // (ITEMS * 3) + 10)  # lines ask 1-3 units: twice the mean demand
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO sites (code, name) VALUES ('BENCH', 'Bench DC')")
        cur.execute("INSERT INTO locations (code, site, type) VALUES ('SUP-B', 'BENCH', 'supplier'), "
                    "('DOCK-B', 'BENCH', 'dock'), ('STAGE-B', 'BENCH', 'staging'), "
                    "('LOSS-B', 'BENCH', 'inventory_loss'), ('CUST-B', 'BENCH', 'customer')")
        cur.executemany("INSERT INTO locations (code, site, type) VALUES (%s, 'BENCH', 'internal')",
                        [(f"BIN-{b:04d}",) for b in range(BINS)])
        cur.executemany("INSERT INTO items (sku, name, gtin) VALUES (%s, %s, %s)",
                        [(f"SKU-{i:04d}", f"Item {i}", gtin_for(i)) for i in range(ITEMS)])
        cur.execute(
            "INSERT INTO movements (ts, sku, qty, from_location, to_location, lot, expiry, biz_step, disposition, "
            "device_id, msg_id, line, source) "
            "SELECT now() - interval '30 days' + make_interval(mins => n), 'SKU-' || lpad((n / 3)::text, 4, '0'), "
            "%(per_bin)s, 'SUP-B', 'BIN-' || lpad(((n * 7) %% %(bins)s)::text, 4, '0'), 'L' || (n %% 3), "
            "current_date + 60 + 30 * (n %% 3), 'receiving', 'in_progress', 'prefill', 'p-' || n, 0, 'scan' "
            "FROM generate_series(0, %(n)s - 1) n", {"per_bin": per_bin, "bins": BINS, "n": ITEMS * 3})
        orders = (lines + LINES_PER_ORDER - 1) // LINES_PER_ORDER
        cur.executemany("INSERT INTO orders (ref, customer, site, requested_at, priority, public_token) "
                        "VALUES (%s, 'CUST-B', 'BENCH', now() + make_interval(secs => %s), %s, %s)",
                        [(f"O{n:06d}", n, 1 + n % 5, f"tok-{n:06d}") for n in range(orders)])
        cur.executemany("INSERT INTO order_lines (order_ref, line_no, sku, qty) VALUES (%s, %s, %s, %s)",
                        [(f"O{k // LINES_PER_ORDER:06d}", k % LINES_PER_ORDER + 1,
                          f"SKU-{(k * 37) % ITEMS:04d}", 1 + k % 3) for k in range(lines)])
    rebuild(conn)
    conn.execute("ANALYZE")


def release_all(conn: psycopg.Connection) -> tuple[int, float]:
    refs = [r[0] for r in conn.execute("SELECT ref FROM orders ORDER BY ref")]
    started = time.perf_counter()
    for ref in refs:
        order_store.release(conn, ref, None)
    return len(refs), time.perf_counter() - started


async def _pick(settings: Settings, logins: list[DeviceLogin], logs: list[WorkLog], done: threading.Event) -> None:
    stop = asyncio.Event()
    bins = [f"BIN-{b:04d}" for b in range(BINS)]

    async def one(login: DeviceLogin, log: WorkLog, seed: int) -> None:
        picker = TaskPicker(login.device_id, random.Random(seed), wrong_bin_rate=0.01, short_rate=0.01,
                            decoy_bins=bins)
        async with aiomqtt.Client(settings.mqtt_host, settings.mqtt_port, username=login.device_id,
                                  password=login.password, identifier=login.device_id,
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await work_tasks(client, settings.topic_prefix, picker, stop, log)

    async def watch() -> None:
        while not done.is_set():
            await asyncio.sleep(0.2)
        stop.set()

    await asyncio.gather(watch(), *(one(login, log, i) for i, (login, log) in enumerate(zip(logins, logs,
                                                                                              strict=True))))


def _open_tasks(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM tasks WHERE status = 'open'").fetchone()
    return int(row[0]) if row else 0


def run_orders_bench(base: Settings, lines: int, scanners: int, workers: int, background_rate: int,
                     out_dir: Path, timeout_s: float = 1200.0) -> OrderBenchResult:
    settings = orders_bench_settings(base, workers)
    console.print(f"bench orders: private broker on port {settings.mqtt_port}, database {BENCH_DATABASE}, "
                  f"{lines:,} order lines, {scanners} scanners, {workers} worker(s)")
    _fresh_database(settings)
    start_local_broker(settings)
    try:
        with BrokerAccounts(settings) as accounts:
            accounts.ensure_service_accounts()
        with connect(settings.database_url, autocommit=True) as conn:
            build_warehouse(conn, lines)
        logins = _provision(settings, [f"bench-picker-{i:03d}" for i in range(scanners)], "scanner", "BENCH",
                            "STAGE-B")
        background = _provision(settings, [f"bench-env-{i}" for i in range(4)])
        with connect(settings.database_url, autocommit=True) as conn:
            orders, release_s = release_all(conn)
            tasks = _open_tasks(conn)
            console.print(f"release: {lines:,} lines in {release_s:.1f} s ({lines / release_s:,.0f} lines/s), "
                          f"{tasks:,} pick tasks")
            runner = _Workers(settings, workers)
            runner.start()
            stop_load = threading.Event()
            loads = [_Paced(settings, login, max(1, background_rate // len(background)), stop_load)
                     for login in background]
            logs = [WorkLog() for _ in logins]
            done = threading.Event()
            try:
                with running_downlink(settings):
                    for load in loads:
                        load.start()
                    started = time.perf_counter()
                    pickers = threading.Thread(target=lambda: asyncio.run(_pick(settings, logins, logs, done)),
                                               daemon=True)
                    pickers.start()
                    while _open_tasks(conn) > 0:
                        if time.perf_counter() - started > timeout_s:
                            raise LoadError(f"picking did not finish in {timeout_s:.0f} s "
                                            f"({_open_tasks(conn)} tasks open)")
                        time.sleep(0.5)
                    picking_s = time.perf_counter() - started
                    done.set()
                    pickers.join(30)
            finally:
                done.set()
                stop_load.set()
                for load in loads:
                    load.join(10)
                runner.stop()
    finally:
        stop_local_broker(settings)
    achieved = sum(load.sent for load in loads) / max([load.elapsed for load in loads] + [1e-9])
    latencies = sorted(ms for log in logs for ms in log.feedback_ms)
    if not latencies:
        raise LoadError("no scan got feedback")
    result = OrderBenchResult(
        mode="orders", lines=lines, orders=orders, scanners=scanners, workers=workers,
        lines_allocated_per_s=round(lines / release_s, 1), release_s=round(release_s, 2), tasks=tasks,
        picks_done=sum(log.done for log in logs), picks_short=sum(log.short for log in logs),
        scans_refused=sum(log.refused for log in logs), feedback_timeouts=sum(log.timeouts for log in logs),
        picking_s=round(picking_s, 2), tasks_closed_per_s=round(tasks / picking_s, 1),
        feedback_p50_ms=round(statistics.median(latencies), 1),
        feedback_p99_ms=round(_percentile(latencies, 0.99), 1), feedback_max_ms=round(latencies[-1], 1),
        feedback_samples=len(latencies), background_msgs_per_s=background_rate,
        background_achieved_msgs_per_s=round(achieved, 1), load_average=os.getloadavg(), cpus=os.cpu_count() or 0)
    write_report("orders", asdict(result), [(0.0, result.tasks_closed_per_s), (picking_s, result.tasks_closed_per_s)],
                 latencies,
                 Panel("tasks closed per second", result.tasks_closed_per_s, result.tasks_closed_per_s,
                       f"{tasks:,} pick tasks by {scanners} scanners"),
                 Panel("scan → feedback (ms)", result.feedback_p50_ms, 250,
                       f"{len(latencies):,} scans under {result.background_achieved_msgs_per_s:,.0f} msg/s background"),
                 out_dir)
    return result
