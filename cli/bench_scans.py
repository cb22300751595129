"""`cargotrace bench scans`: stock movements per second, and how soon a scan is visible as a movement.

Same method as `bench ingest` (private broker and database, backlog drained by the real workers):
  1. N scans (receipts to a dock and putaways to bins, GS1-128 with lots, over many items and bins)
     published while the workers are stopped, then drained; movements/s = movements / drain time;
  2. with the workers and the HTTP API running and a background load of env readings at a fixed
     rate, single scans are published and ``GET /api/v1/movements`` is polled: the latency is from
     the publish to the movement being visible through the API.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import orjson
import psycopg

from api.tokens import create_token
from cli.api_server import ApiServer
from cli.bench_ingest import (
    _fresh_database,
    _now_ms,
    _percentile,
    _progress,
    _provision,
    _publish,
    _rss_mb,
    _Workers,
    bench_settings,
    console,
    drain,
    free_port,
)
from cli.bench_report import Panel, write_report
from cli.local_broker import start_local_broker, stop_local_broker
from core.gs1 import gtin_check_digit_ok
from devices.broker_accounts import BrokerAccounts
from ingest.db import connect
from runtime.settings import Settings
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


def scan_payloads(gtins: list[str], bins: int, base_ms: int) -> Callable[[str], Callable[[int], bytes]]:
    """Even sequence numbers receive 10 units of a lot at the dock, odd ones put them away to a bin."""
    def for_device(device_id: str) -> Callable[[int], bytes]:
        def make(seq: int) -> bytes:
            pair = seq // 2
            gtin = gtins[(pair * 7 + len(device_id)) % len(gtins)]
            code = f"]C101{gtin}10L{pair % 13}"
            body: dict[str, object] = {"msg_id": f"{device_id}-{seq:08d}", "ts": base_ms + seq, "code": code,
                                       "qty": 10}
            if seq % 2:
                body.update(mode="putaway", location="DOCK-B", to_location=f"BIN-{(pair * 31) % bins:04d}")
            else:
                body.update(mode="receive", location="DOCK-B")
            return orjson.dumps(body)
        return make
    return for_device


def _movements(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM movements").fetchone()
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


def run_scan_bench(base: Settings, messages: int, workers: int, background_rate: int, live_scans: int,
                   out_dir: Path) -> ScanBenchResult:
    settings = bench_settings(base, workers).model_copy(update={"api_port": free_port()})
    devices = 8
    messages -= messages % (2 * devices)
    console.print(f"bench scans: private broker on port {settings.mqtt_port}, database cargotrace_bench, "
                  f"{messages:,} scans, {workers} worker(s)")
    _fresh_database(settings)
    start_local_broker(settings)
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
            _publish(settings, scanners, messages, "scans: publishing backlog (workers stopped)", _now_ms(),
                     kind="scan", payload_of=scan_payloads(gtins, 500, _now_ms() - 10 * messages))
            runner = _Workers(settings, workers)
            with _progress() as bar:
                task = bar.add_task("scans: draining into the ledger", total=messages)
                rate, seconds, curve, peak = drain(settings, conn, runner, messages,
                                                   lambda n: bar.advance(task, n), progress=_movements)
            movements = _movements(conn)
            console.print(f"scans: {rate:,.0f} movements/s over {seconds:.1f} s ({movements:,} movements)")
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
        background_achieved_msgs_per_s=round(achieved, 1), peak_rss_mb=round(peak, 1), drain_s=round(seconds, 2))
    write_report(
        "scans", asdict(result), curve, latencies,
        Panel("movements committed per second", result.movements_per_s, 5000,
              f"Drain of {result.messages:,} scans, {result.workers} worker(s)"),
        Panel("publish → visible in GET /movements (ms)", result.latency_p50_ms, 250,
              f"{result.live_scans} scans under {result.background_achieved_msgs_per_s:,.0f} msg/s background"),
        out_dir)
    return result

