"""`cargotrace bench telemetry`: positions and cold-chain readings from a fleet, with every rule on.

1,000 vehicles by default, each with a GPS tracker and a temperature sensor, each carrying a
shipment that is being loaded, so every message runs the real rules: position filters, the
shipment state machine with ETA, and the environmental alarm evaluation against the shipment's
profile. Method as in `bench ingest`: private broker and database; a backlog published while the
workers are stopped is drained (readings/s with rules on); then, with the API up and a
background load running, sensors send the reading that completes a `delay_s` excursion window
and the API is polled until the alarm is visible.

``--prefill N``: the same run is repeated on a database that already holds N readings and N
positions of the same fleet (generated in SQL with generate_series, spread over the past
``PREFILL_DAYS`` days, so there are that many daily chunks), and both figures are reported with
their ratio: the cost of a message must not grow with history. The bench uses its own database
(``cargotrace_bench_telemetry``) so it never collides with another benchmark.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.tokens import create_token
from cli.api_server import ApiServer
from cli.bench_ingest import (
    _percentile,
    _progress,
    _provision,
    _rss_mb,
    _Workers,
    bench_settings,
    console,
    drain,
    free_port,
)
from cli.bench_report import Panel, write_report
from cli.local_broker import start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts
from ingest.db import connect, migrate
from runtime.settings import Settings
from simulators.loadgen import CountingPublisher, DeviceLogin, LoadError, publish_backlog

DC = (52.40, 13.30)
STEP_S = 10  # one fix and one reading per vehicle every 10 s of event time
DATABASE = "cargotrace_bench_telemetry"
PREFILL_DAYS = 20


@dataclass
class TelemetryBenchResult:
    mode: str
    vehicles: int
    messages: int
    workers: int
    readings_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    alarms_timed: int
    background_msgs_per_s: int
    background_achieved_msgs_per_s: float
    peak_rss_mb: float
    drain_s: float
    prefilled_rows: int = 0  # readings (and as many positions) already stored before the drain
    prefilled_readings_per_s: float | None = None
    prefilled_drain_s: float | None = None
    prefill_ratio: float | None = None  # prefilled / empty readings per second
    load_average: tuple[float, float, float] | None = None  # 1/5/15 min, when the run ended


def _fresh_database(settings: Settings) -> None:
    with connect(make_conninfo(settings.database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    migrate(settings.database_url)


def prefill(conn: psycopg.Connection, vehicles: int, rows: int, end: datetime) -> float:
    """``rows`` readings and ``rows`` positions of the fleet's own devices over the
    ``PREFILL_DAYS`` days before ``end``, in range and on a plausible track (history, not
    alarms), written by the database itself. Returns the seconds it took."""
    per_device = max(1, rows // vehicles)
    step_s = PREFILL_DAYS * 86400 / per_device
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute(
            "INSERT INTO env_readings (ts, received_at, device_id, msg_id, temp_c) "
            "SELECT t, t, 'ts-' || i, 'pf' || k, 4.0 + ((k + i) %% 20) / 10.0 FROM generate_series(0, %s - 1) i, "
            "generate_series(1, %s) k, LATERAL (SELECT %s::timestamptz - make_interval(secs => k * %s) AS t) x",
            (vehicles, per_device, end, step_s))
        conn.execute(
            "INSERT INTO positions (ts, received_at, device_id, msg_id, lat, lon, speed_kmh, source, fix_valid) "
            "SELECT t, t, 'trk-' || i, 'pf' || k, %s + (i %% 7) * 1e-4 + (k %% 100) * 1e-5, %s, 0, 'json', true "
            "FROM generate_series(0, %s - 1) i, generate_series(1, %s) k, "
            "LATERAL (SELECT %s::timestamptz - make_interval(secs => k * %s) AS t) x",
            (DC[0], DC[1], vehicles, per_device, end, step_s))
    # Fresh tables have no statistics yet; a database that grew to this size has them.
    conn.execute("ANALYZE env_readings")
    conn.execute("ANALYZE positions")
    return time.perf_counter() - t0


def build_fleet(conn: psycopg.Connection, vehicles: int, start: datetime) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO geofences (code, type, lat, lon, radius_m) VALUES ('GF-DC', 'circle', %s, %s, 400), "
                    "('GF-FAR', 'circle', 53.55, 10.0, 500)", DC)
        cur.execute("INSERT INTO sites (code, name, geofence) VALUES ('DC', 'Bench DC', 'GF-DC')")
        cur.execute("INSERT INTO locations (code, site, type) VALUES ('DC-STAGE', 'DC', 'staging'), "
                    "('DC-CUST', 'DC', 'customer')")
        cur.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c, delay_s) VALUES ('CHILLED', 2, 8, 300)")
        cur.executemany("INSERT INTO locations (code, site, type) VALUES (%s, 'DC', 'vehicle')",
                        [(f"V{i:04d}",) for i in range(vehicles)])
        cur.executemany(
            "INSERT INTO shipments (ref, origin, destination, customer, vehicle, profile, public_token) "
            "VALUES (%s, 'DC-STAGE', 'GF-FAR', 'DC-CUST', %s, 'CHILLED', %s)",
            [(f"S{i:04d}", f"V{i:04d}", f"tok-{i}") for i in range(vehicles)])
        # Each shipment was loaded just before the data starts: its ship scan is on the ledger.
        cur.executemany(
            "INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, ref, source, device_id, "
            "msg_id) VALUES (%s, 'SKU', 1, 'DC-STAGE', %s, 'loading', %s, 'scan', 'bench', %s)",
            [(start - timedelta(minutes=1), f"V{i:04d}", f"S{i:04d}", f"load-{i}") for i in range(vehicles)])
        cur.execute("UPDATE shipments SET status = 'loading'")
        cur.executemany("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES (%s, %s, 'loading', "
                        "'first ship scan')", [(f"S{i:04d}", start - timedelta(minutes=1)) for i in range(vehicles)])


def payloads(start: datetime, kind: str) -> Callable[[str], Callable[[int], bytes]]:
    """Trucks drive north-west from the DC at ~50 km/h; sensors read 4-6 °C."""
    base = start.timestamp()

    def for_device(device_id: str) -> Callable[[int], bytes]:
        n = int(device_id.rsplit("-", 1)[1])

        def make(seq: int) -> bytes:
            ts = int((base + seq * STEP_S) * 1000)
            if kind == "position":
                km = seq * STEP_S * 50 / 3600
                return orjson.dumps({"msg_id": f"p{seq}", "ts": ts, "lat": DC[0] + km / 111 + (n % 7) * 1e-4,
                                     "lon": DC[1] - km / 68, "speed_kmh": 50.0})
            return orjson.dumps({"msg_id": f"e{seq}", "ts": ts, "temp_c": 4.0 + ((seq + n) % 20) / 10})
        return make
    return for_device


def _progress_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(messages), 0) FROM device_state").fetchone()
    return int(row[0]) if row else 0


def alarm_latency(settings: Settings, sensors: list[DeviceLogin], api_url: str, token: str,
                  background: list[DeviceLogin], rate: int) -> tuple[list[float], float]:
    """Each timed sensor gets 5 readings above 8 °C spanning 240 s, then (timed) the one at +300 s
    that completes the 300 s window: the alarm must appear in GET /alarms?device=...&state=active."""
    stop = threading.Event()
    sent = [0]
    elapsed = [0.0]

    def load() -> None:
        pubs = [CountingPublisher(settings.mqtt_host, settings.mqtt_port, login,
                                  f"{settings.topic_prefix}/dev/{login.device_id}/env", window=2000)
                for login in background]
        start, now_ms = time.perf_counter(), int(time.time() * 1000) - 3_600_000
        while not stop.is_set():
            if (pause := start + sent[0] / rate - time.perf_counter()) > 0:
                time.sleep(pause)
            pub = pubs[sent[0] % len(pubs)]
            pub.publish(orjson.dumps({"msg_id": f"bg{sent[0]}", "ts": now_ms + sent[0], "temp_c": 5.0}))
            sent[0] += 1
        elapsed[0] = time.perf_counter() - start
        for pub in pubs:
            pub.close()

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(2)
    latencies: list[float] = []
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    try:
        with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as http, \
                _progress() as bar:
            task = bar.add_task(f"alarm latency under a {rate} msg/s background", total=len(sensors))
            for login in sensors:
                pub = CountingPublisher(settings.mqtt_host, settings.mqtt_port, login,
                                        f"{settings.topic_prefix}/dev/{login.device_id}/env")
                for k in range(5):
                    pub.publish(orjson.dumps({"msg_id": f"x{k}", "ts": (t0 + timedelta(seconds=60 * k)).isoformat(),
                                              "temp_c": 9.5}))
                pub.wait_acked(5)
                time.sleep(0.3)  # let those land: the timed reading is the one that completes the window
                sent_at = time.perf_counter()
                pub.publish(orjson.dumps({"msg_id": "x5", "ts": (t0 + timedelta(seconds=300)).isoformat(),
                                          "temp_c": 9.6}))
                while True:
                    items = http.get("/api/v1/alarms", params={"device": login.device_id, "state": "active"}).json()
                    if items.get("items"):
                        latencies.append((time.perf_counter() - sent_at) * 1000)
                        break
                    if time.perf_counter() - sent_at > 10:
                        raise LoadError(f"no alarm for {login.device_id} within 10 s")
                    time.sleep(0.005)
                pub.close()
                bar.advance(task)
    finally:
        stop.set()
        loader.join(10)
    return sorted(latencies), sent[0] / max(elapsed[0], 1e-9)


@dataclass
class _Phase:
    rate: float
    seconds: float
    curve: list[tuple[float, float]]
    peak_rss_mb: float
    latencies: list[float]
    achieved: float


def _phase(settings: Settings, vehicles: int, per_vehicle: int, workers: int, background_rate: int, timed: int,
           prefill_rows: int) -> _Phase:
    """One full run on a fresh database (pre-filled with ``prefill_rows`` when > 0)."""
    messages = vehicles * per_vehicle * 2
    _fresh_database(settings)
    shutil.rmtree(settings.broker_dir, ignore_errors=True)  # the device accounts of a previous phase
    start_local_broker(settings)
    start = datetime.now(UTC) - timedelta(seconds=per_vehicle * STEP_S + 7200)
    try:
        with BrokerAccounts(settings) as accounts:
            accounts.ensure_service_accounts()
        with connect(settings.database_url, autocommit=True) as conn:
            if prefill_rows:
                took = prefill(conn, vehicles, prefill_rows, start - timedelta(hours=6))
                console.print(f"prefilled {prefill_rows:,} readings and {prefill_rows:,} positions in {took:.0f} s")
            build_fleet(conn, vehicles, start)
            token = create_token(conn, "viewer", "bench")
        with _progress() as bar:
            task = bar.add_task("provisioning trackers and sensors", total=2 * vehicles + 20)
            trackers, sensors = [], []
            for i in range(vehicles):
                trackers += _provision(settings, [f"trk-{i}"], "gps_tracker")
                sensors += _provision(settings, [f"ts-{i}"], "env_sensor")
                bar.advance(task, 2)
            extra = _provision(settings, [f"bg-{i}" for i in range(4)] + [f"ts-timed-{i}" for i in range(timed)])
            bar.advance(task, 20)
        with connect(settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE devices SET vehicle = 'V' || lpad(split_part(device_id, '-', 2), 4, '0') "
                         "WHERE device_id LIKE 'trk-%' OR (device_id LIKE 'ts-%' AND device_id NOT LIKE 'ts-timed-%')")
            conn.execute("UPDATE devices SET vehicle = 'V' || lpad(split_part(device_id, '-', 3), 4, '0') "
                         "WHERE device_id LIKE 'ts-timed-%'")
            warm = _Workers(settings, workers)
            warm.start()
            warm.stop()
            with _progress() as bar:
                task = bar.add_task("publishing the fleet's backlog (workers stopped)", total=messages)
                for kind, logins in (("position", trackers), ("env", sensors)):
                    def topic(device_id: str, kind: str = kind) -> str:
                        return f"{settings.topic_prefix}/dev/{device_id}/{kind}"

                    acked = publish_backlog(settings.mqtt_host, settings.mqtt_port, logins, topic, per_vehicle,
                                            payloads(start, kind), lambda n: bar.advance(task, n))
                    if acked != per_vehicle * len(logins):
                        raise LoadError(f"the broker acknowledged {acked} of {per_vehicle * len(logins)}")
            runner = _Workers(settings, workers)
            with _progress() as bar:
                task = bar.add_task("draining with every rule on", total=messages)
                rate, seconds, curve, peak = drain(settings, conn, runner, messages, lambda n: bar.advance(task, n),
                                                   progress=_progress_count)
            console.print(f"telemetry: {rate:,.0f} messages/s with rules on, over {seconds:.1f} s"
                          + (f" ({prefill_rows:,} rows prefilled)" if prefill_rows else " (empty database)"))
            in_transit = conn.execute("SELECT count(*) FROM shipments WHERE status = 'in_transit'").fetchone()
            console.print(f"shipments in transit after the drain: {in_transit[0] if in_transit else 0} of {vehicles}")
            latencies: list[float] = []
            achieved = 0.0
            try:
                if timed:
                    # The port is picked right before the server binds: picked minutes earlier,
                    # another process on a shared machine may have taken it meanwhile.
                    server = ApiServer(settings.model_copy(update={"api_port": free_port()}))
                    server.start()
                    try:
                        latencies, achieved = alarm_latency(settings, extra[4:], server.url, token, extra[:4],
                                                            background_rate)
                        peak = max(peak, _rss_mb(runner.supervisor.pids()))
                    finally:
                        server.stop()
            finally:
                runner.stop()
    finally:
        stop_local_broker(settings)
    return _Phase(rate, seconds, curve, peak, latencies, achieved)


def run_telemetry_bench(base: Settings, vehicles: int, per_vehicle: int, workers: int, background_rate: int,
                        timed: int, out_dir: Path, prefill_rows: int = 0) -> TelemetryBenchResult:
    settings = bench_settings(base, workers).model_copy(update={
        "database_url": make_conninfo(base.database_url, dbname=DATABASE)})
    messages = vehicles * per_vehicle * 2
    console.print(f"bench telemetry: {vehicles} vehicles x {per_vehicle} positions + {per_vehicle} readings = "
                  f"{messages:,} messages, {workers} worker(s)")
    empty = _phase(settings, vehicles, per_vehicle, workers, background_rate, timed, 0)
    full = _phase(settings, vehicles, per_vehicle, workers, background_rate, 0, prefill_rows) if prefill_rows \
        else None
    latencies = empty.latencies
    result = TelemetryBenchResult(
        mode="telemetry", vehicles=vehicles, messages=messages, workers=workers, readings_per_s=round(empty.rate, 1),
        latency_p50_ms=round(statistics.median(latencies), 1) if latencies else 0.0,
        latency_p99_ms=round(_percentile(latencies, 0.99), 1) if latencies else 0.0,
        latency_max_ms=round(latencies[-1], 1) if latencies else 0.0, alarms_timed=len(latencies),
        background_msgs_per_s=background_rate, background_achieved_msgs_per_s=round(empty.achieved, 1),
        peak_rss_mb=round(max(empty.peak_rss_mb, full.peak_rss_mb if full else 0.0), 1),
        drain_s=round(empty.seconds, 2), prefilled_rows=prefill_rows,
        prefilled_readings_per_s=round(full.rate, 1) if full else None,
        prefilled_drain_s=round(full.seconds, 2) if full else None,
        prefill_ratio=round(full.rate / empty.rate, 3) if full else None,
        load_average=tuple(round(x, 2) for x in os.getloadavg()))  # type: ignore[arg-type]
    write_report(
        "telemetry-prefill" if full else "telemetry", asdict(result), empty.curve, latencies,
        Panel("messages committed per second", result.readings_per_s, 10_000,
              f"{result.vehicles} vehicles, {result.messages:,} positions + readings, rules on"
              + (f"; {prefill_rows:,} rows prefilled: {result.prefilled_readings_per_s:,.0f}/s" if full else "")),
        Panel("window-completing reading → alarm visible in the API (ms)", result.latency_p50_ms, 500,
              f"{result.alarms_timed} alarms under {result.background_achieved_msgs_per_s:,.0f} msg/s background"),
        out_dir)
    return result
