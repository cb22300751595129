"""`cargotrace bench scans`: stock movements per second, and how soon a scan is visible as a movement.

Same method as `bench ingest` (private broker and database, backlog drained by the real workers):
  1. N scans (receipts to a dock and putaways to bins, GS1-128 with lots, over many items and bins)
     published while the workers are stopped, then drained; movements/s = movements / drain time;
  2. with ``--prefill N``: N movements of history (receipts and putaways over the same items, lots
     and bins, in the days before the backlog) are written straight into the ledger with
     ``generate_series`` (not through ingest; balances then rebuilt from the ledger), and a second
     backlog of the same size is drained: the cost of a scan must not grow with the history, so
     ``prefilled_ratio`` (prefilled / empty movements/s, same run) should be at least 0.9;
  3. with the workers and the HTTP API running and a background load of env readings at a fixed
     rate, single scans are published and ``GET /api/v1/movements`` is polled: the latency is from
     the publish to the movement being visible through the API.

Its own database (``cargotrace_bench_scans``) and state directory, so it can run beside the
other benchmarks.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.tokens import create_token
from cli.api_server import ApiServer
from cli.bench_ingest import (
    _now_ms,
    _percentile,
    _progress,
    _provision,
    _publish,
    _rss_mb,
    _Workers,
    console,
    drain,
    free_port,
)
from cli.bench_report import Panel, write_report
from cli.local_broker import start_local_broker, stop_local_broker
from core.gs1 import gtin_check_digit_ok
from devices.broker_accounts import BrokerAccounts
from ingest.db import connect, migrate
from ingest.rebuild import rebuild
from runtime.settings import Settings, load_settings
from simulators.loadgen import CountingPublisher, DeviceLogin, LoadError, env_payload


@dataclass
class ScanBenchResult:
    mode: str
    messages: int
    movements: int
    workers: int
    movements_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    live_scans: int
    background_msgs_per_s: int
    background_achieved_msgs_per_s: float
    peak_rss_mb: float
    drain_s: float
    prefill_movements: int = 0
    prefill_s: float = 0.0
    movements_per_s_prefilled: float | None = None
    drain_s_prefilled: float | None = None
    prefilled_ratio: float | None = None
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpus: int = 0

BENCH_DATABASE = "cargotrace_bench_scans"


def scans_bench_settings(base: Settings, workers: int) -> Settings:
    state = base.state_dir / "bench-scans"
    shutil.rmtree(state, ignore_errors=True)
    return load_settings(create_secrets=True, state_dir=state, mqtt_port=free_port(),
                         database_url=make_conninfo(base.database_url, dbname=BENCH_DATABASE),
                         ingest_group="bench-scans", ingest_client_prefix="bench-scans-ingest",
                         ingest_workers=workers, log_level="WARNING")


def _fresh_database(settings: Settings) -> None:
    with connect(make_conninfo(settings.database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DATABASE)))
    migrate(settings.database_url)


def prefill_history(conn: psycopg.Connection, movements: int, items: int, bins: int, end_ms: int) -> float:
    """``movements`` of history ending at ``end_ms``: pairs of a receipt (supplier -> dock) and its
    putaway (dock -> bin), one second apart, over the bench's items, lots and bins; then the
    balances rebuilt from the ledger. Returns the seconds it took."""
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(
            "INSERT INTO movements (ts, sku, qty, from_location, to_location, lot, biz_step, disposition, device_id, "
            "msg_id, line, source) "
            "SELECT to_timestamp(%(end)s / 1000.0) - make_interval(secs => %(n)s - n), "
            "'SKU-' || lpad(((n / 2) %% %(items)s)::text, 4, '0'), 10, "
            "CASE WHEN n %% 2 = 0 THEN 'SUP-B' ELSE 'DOCK-B' END, "
            "CASE WHEN n %% 2 = 0 THEN 'DOCK-B' ELSE 'BIN-' || lpad((((n / 2) * 31) %% %(bins)s)::text, 4, '0') END, "
            "'L' || ((n / 2) %% 13), CASE WHEN n %% 2 = 0 THEN 'receiving' ELSE 'storing' END, "
            "CASE WHEN n %% 2 = 0 THEN 'in_progress' ELSE 'sellable_accessible' END, "
            "'prefill', 'p-' || n, 0, 'scan' FROM generate_series(0, %(n)s - 1) n",
            {"end": end_ms, "n": movements, "items": items, "bins": bins})
    rebuild(conn)
    conn.execute("ANALYZE movements")
    conn.execute("ANALYZE balances")
    return time.perf_counter() - started


def gtin_for(n: int) -> str:
    body = f"0950600{n:06d}"
    return next(body + str(d) for d in range(10) if gtin_check_digit_ok(body + str(d)))


def build_world(conn: psycopg.Connection, items: int, bins: int) -> list[str]:
    with conn.transaction():
        conn.execute("INSERT INTO sites (code, name) VALUES ('BENCH', 'Bench DC')")
        conn.execute("INSERT INTO locations (code, site, type) VALUES ('SUP-B', 'BENCH', 'supplier'), "
                     "('DOCK-B', 'BENCH', 'dock'), ('STAGE-B', 'BENCH', 'staging'), "
                     "('LOSS-B', 'BENCH', 'inventory_loss')")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO locations (code, site, type) VALUES (%s, 'BENCH', 'internal')",
                            [(f"BIN-{b:04d}",) for b in range(bins)])
            cur.executemany("INSERT INTO items (sku, name, gtin) VALUES (%s, %s, %s)",
                            [(f"SKU-{i:04d}", f"Item {i}", gtin_for(i)) for i in range(items)])
    return [gtin_for(i) for i in range(items)]


def scan_payloads(gtins: list[str], bins: int, base_ms: int, tag: str = "") -> Callable[[str], Callable[[int], bytes]]:
    """Even sequence numbers receive 10 units of a lot at the dock, odd ones put them away to a bin."""
    def for_device(device_id: str) -> Callable[[int], bytes]:
        def make(seq: int) -> bytes:
            pair = seq // 2
            gtin = gtins[(pair * 7 + len(device_id)) % len(gtins)]
            code = f"]C101{gtin}10L{pair % 13}"
            body: dict[str, object] = {"msg_id": f"{tag}{device_id}-{seq:08d}", "ts": base_ms + seq, "code": code,
                                       "qty": 10}
            if seq % 2:
                body.update(mode="putaway", location="DOCK-B", to_location=f"BIN-{(pair * 31) % bins:04d}")
            else:
                body.update(mode="receive", location="DOCK-B")
            return orjson.dumps(body)
        return make
    return for_device


def _movements(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM movements WHERE source = 'scan' AND device_id <> 'prefill'").fetchone()
    return int(row[0]) if row else 0


def _new_movements(conn: psycopg.Connection) -> int:
    """Movements ingest committed (the prefilled history excluded), by the highest id: cheap to poll."""
    row = conn.execute("SELECT count(*) FROM movements WHERE id > coalesce((SELECT max(id) FROM movements "
                       "WHERE device_id = 'prefill'), 0)").fetchone()
    return int(row[0]) if row else 0


class _Paced(threading.Thread):
    """Publishes at a fixed rate until stopped (the background load)."""

    def __init__(self, settings: Settings, login: DeviceLogin, rate: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.pub = CountingPublisher(settings.mqtt_host, settings.mqtt_port, login,
                                     f"{settings.topic_prefix}/dev/{login.device_id}/env", window=4000)
        self.make = env_payload(login.device_id, _now_ms() - 3_600_000)
        self.rate, self.stop_event, self.sent, self.elapsed = rate, stop, 0, 0.0

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop_event.is_set():
            due = start + self.sent / self.rate
            if (pause := due - time.perf_counter()) > 0:
                time.sleep(pause)
            self.pub.publish(self.make(self.sent))
            self.sent += 1
        self.elapsed = time.perf_counter() - start
        self.pub.close()


def live_latency(settings: Settings, scanner: DeviceLogin, background: list[DeviceLogin], gtins: list[str],
                 rate: int, scans: int, api_url: str, token: str) -> tuple[list[float], float]:
    stop = threading.Event()
    loads = [_Paced(settings, login, rate // len(background), stop) for login in background]
    for load in loads:
        load.start()
    time.sleep(2)  # let the background load settle
    pub = CountingPublisher(settings.mqtt_host, settings.mqtt_port, scanner,
                            f"{settings.topic_prefix}/dev/{scanner.device_id}/scan")
    latencies: list[float] = []
    try:
        with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as http, \
                _progress() as bar:
            task = bar.add_task(f"live scans at a {rate} msg/s background", total=scans)
            for n in range(scans):
                msg_id = f"live-{n:05d}"
                body = {"msg_id": msg_id, "code": f"]C101{gtins[n % len(gtins)]}10LIVE", "mode": "receive",
                        "location": "DOCK-B", "qty": 1}
                sent = time.perf_counter()
                pub.publish(orjson.dumps(body))
                while True:
                    # ts defaults to the receive time, so the new movement is on the ledger's first page.
                    items = http.get("/api/v1/movements", params={"limit": 20}).json()["items"]
                    if any(i["msg_id"] == msg_id for i in items):
                        latencies.append((time.perf_counter() - sent) * 1000)
                        break
                    if time.perf_counter() - sent > 10:
                        raise LoadError(f"scan {msg_id} was not visible through the API within 10 s")
                    time.sleep(0.005)
                bar.advance(task)
                time.sleep(0.05)
    finally:
        stop.set()
        for load in loads:
            load.join(10)
        pub.close()
    achieved = sum(load.sent for load in loads) / max([load.elapsed for load in loads] + [1e-9])
    return sorted(latencies), achieved


def _drain_backlog(settings: Settings, conn: psycopg.Connection, scanners: list[DeviceLogin], gtins: list[str],
                   messages: int, workers: int, tag: str, base_ms: int, label: str
                   ) -> tuple[float, float, list[tuple[float, float]], float, _Workers]:
    _publish(settings, scanners, messages, f"scans{label}: publishing backlog (workers stopped)", _now_ms(),
             kind="scan", payload_of=scan_payloads(gtins, 500, base_ms, tag))
    runner = _Workers(settings, workers)
    with _progress() as bar:
        task = bar.add_task(f"scans{label}: draining into the ledger", total=messages)
        rate, seconds, curve, peak = drain(settings, conn, runner, messages,
                                           lambda n: bar.advance(task, n), progress=_new_movements)
    console.print(f"scans{label}: {rate:,.0f} movements/s over {seconds:.1f} s")
    return rate, seconds, curve, peak, runner


def run_scan_bench(base: Settings, messages: int, workers: int, background_rate: int, live_scans: int,
                   out_dir: Path, prefill: int = 0) -> ScanBenchResult:
    settings = scans_bench_settings(base, workers).model_copy(update={"api_port": free_port()})
    devices = 8
    messages -= messages % (2 * devices)
    console.print(f"bench scans: private broker on port {settings.mqtt_port}, database {BENCH_DATABASE}, "
                  f"{messages:,} scans, {workers} worker(s), prefill {prefill:,} movements")
    _fresh_database(settings)
    start_local_broker(settings)
    prefill_s = 0.0
    prefilled: tuple[float, float] | None = None
    try:
        with BrokerAccounts(settings) as accounts:
            accounts.ensure_service_accounts()
        with connect(settings.database_url, autocommit=True) as conn:
            gtins = build_world(conn, items=200, bins=500)
            token = create_token(conn, "viewer", "bench")
        scanners = _provision(settings, [f"bench-sc-{i}" for i in range(devices)], "scanner", "BENCH", "DOCK-B")
        live = _provision(settings, ["bench-sc-live"], "scanner", "BENCH", "DOCK-B")[0]
        background = _provision(settings, [f"bench-env-{i}" for i in range(4)])
        with connect(settings.database_url, autocommit=True) as conn:
            warm = _Workers(settings, workers)
            warm.start()
            warm.stop()
            now = _now_ms()
            rate, seconds, curve, peak, runner = _drain_backlog(
                settings, conn, scanners, gtins, messages, workers, "a-", now - 20 * messages, " (empty ledger)")
            movements = _movements(conn)
            if prefill:
                runner.stop()
                console.print(f"prefill: writing {prefill:,} movements of history with generate_series ...")
                prefill_s = prefill_history(conn, prefill, 200, 500, now - 20 * messages - 3_600_000)
                console.print(f"prefill: {prefill:,} movements and rebuilt balances in {prefill_s:.1f} s")
                rate2, seconds2, curve, peak2, runner = _drain_backlog(
                    settings, conn, scanners, gtins, messages, workers, "b-", now - 10 * messages,
                    f" ({prefill:,} movements of history)")
                prefilled, peak = (rate2, seconds2), max(peak, peak2)
            server = ApiServer(settings)
            server.start()
            try:
                latencies, achieved = live_latency(settings, live, background, gtins, background_rate, live_scans,
                                                   server.url, token)
                peak = max(peak, _rss_mb(runner.supervisor.pids()))
            finally:
                server.stop()
                runner.stop()
    finally:
        stop_local_broker(settings)
    result = ScanBenchResult(
        mode="scans", messages=messages, movements=movements, workers=workers, movements_per_s=round(rate, 1),
        latency_p50_ms=round(statistics.median(latencies), 1), latency_p99_ms=round(_percentile(latencies, 0.99), 1),
        latency_max_ms=round(latencies[-1], 1), live_scans=len(latencies), background_msgs_per_s=background_rate,
        background_achieved_msgs_per_s=round(achieved, 1), peak_rss_mb=round(peak, 1), drain_s=round(seconds, 2),
        prefill_movements=prefill, prefill_s=round(prefill_s, 1),
        movements_per_s_prefilled=round(prefilled[0], 1) if prefilled else None,
        drain_s_prefilled=round(prefilled[1], 2) if prefilled else None,
        prefilled_ratio=round(prefilled[0] / rate, 3) if prefilled else None,
        load_average=os.getloadavg(), cpus=os.cpu_count() or 0)
    write_report(
        "scans-prefill" if prefill else "scans", asdict(result), curve, latencies,
        Panel("movements committed per second", result.movements_per_s, 5000,
              f"Drain of {result.messages:,} scans, {result.workers} worker(s)"),
        Panel("publish → visible in GET /movements (ms)", result.latency_p50_ms, 250,
              f"{result.live_scans} scans under {result.background_achieved_msgs_per_s:,.0f} msg/s background"),
        out_dir)
    return result

