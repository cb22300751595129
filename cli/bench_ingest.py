"""`cargotrace bench ingest`: ingest throughput as a ratio to ceilings measured in the same run.

Runs on a private broker (the project's mosquitto.conf, its own state directory and port) and a
private database, so it neither disturbs nor is disturbed by a running stack. Phases:
  1. broker ceiling: a backlog of N QoS 1 messages drained by a bare subscriber that only acks;
  2. database ceiling: N equivalent rows COPYed straight into the same hypertable;
  3. ingest: N messages published into the workers' persistent sessions while they are stopped
     (every PUBACK counted), then the workers started and timed until all N are committed;
  4. live: a fixed publish rate with the workers running; publish-to-visible latency per message.
The load generator never competes with the workers for the 2 cores in phases 1-3 (VERIFIED.md).
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.local_broker import start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts
from devices.provisioning import DeviceSpec, add_device
from ingest.db import connect, migrate
from ingest.supervisor import Supervisor, wait_until_connected
from runtime.settings import Settings, load_settings
from simulators.loadgen import CountingPublisher, DeviceLogin, LoadError, env_payload, publish_backlog

console = Console(stderr=True)
POLL_S = 0.25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BenchResult:
    messages: int
    workers: int
    throughput_msgs_per_s: float
    ceiling_broker_msgs_per_s: float
    ceiling_copy_rows_per_s: float
    ratio_to_broker: float
    ratio_to_copy: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    live_rate_msgs_per_s: int
    live_messages: int
    peak_rss_mb: float
    drain_s: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, msg/s) while draining


def bench_settings(base: Settings, workers: int) -> Settings:
    state = base.state_dir / "bench"
    shutil.rmtree(state, ignore_errors=True)
    # The benchmark measures the plain listener: no TLS port to collide with a running stack.
    return load_settings(create_secrets=True, state_dir=state, mqtt_port=free_port(), mqtt_tls=False, mqtt_tls_port=0,
                         database_url=make_conninfo(base.database_url, dbname="cargotrace_bench"),
                         ingest_group="bench", ingest_client_prefix="bench-ingest", ingest_workers=workers,
                         log_level="WARNING")


def _fresh_database(settings: Settings) -> None:
    from psycopg import sql

    with connect(make_conninfo(settings.database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS cargotrace_bench WITH (FORCE)"))
        conn.execute(sql.SQL("CREATE DATABASE cargotrace_bench"))
    migrate(settings.database_url)


def _provision(settings: Settings, names: list[str], kind: str = "env_sensor", site: str | None = None,
               location: str | None = None) -> list[DeviceLogin]:
    with connect(settings.database_url, autocommit=True) as conn:
        return [DeviceLogin(n, add_device(settings, conn, DeviceSpec(n, kind, site=site, location=location)).password)
                for n in names]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _publish(settings: Settings, logins: list[DeviceLogin], total: int, label: str, base_ms: int,
             kind: str = "env", payload_of: Callable[[str], Callable[[int], bytes]] | None = None) -> None:
    per_device = total // len(logins)
    with _progress() as bar:
        task = bar.add_task(label, total=per_device * len(logins))
        acked = publish_backlog(settings.mqtt_host, settings.mqtt_port, logins,
                                lambda d: f"{settings.topic_prefix}/dev/{d}/{kind}", per_device,
                                payload_of or (lambda d: env_payload(d, base_ms)), lambda n: bar.advance(task, n))
    if acked != per_device * len(logins):
        raise LoadError(f"the broker acknowledged {acked} of {per_device * len(logins)} messages")


# --- phase 1: broker ceiling ---------------------------------------------------------------------


class _BareSubscriber:
    """Shared-subscription QoS 1 consumer that only acks (paho acks as each message is handled)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cargotrace-bench-ceiling",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(settings.mqtt_service_user, settings.mqtt_service_password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        client.subscribe(f"$share/ceiling/{self.settings.topic_prefix}/dev/+/+", qos=1)
        self._ready.set()

    def _on_message(self, _c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.count += 1
        self.last = now

    def connect(self, expiry_s: int) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry_s
        props.ReceiveMaximum = self.settings.ingest_inflight
        self._ready.clear()
        self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise LoadError("the bench subscriber could not connect")

    def disconnect(self, end_session: bool = False) -> None:
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()


def broker_ceiling(settings: Settings, logins: list[DeviceLogin], n: int) -> float:
    sub = _BareSubscriber(settings)
    sub.connect(expiry_s=3600)
    time.sleep(0.3)
    sub.disconnect()
    _publish(settings, logins, n, "broker ceiling: publishing backlog", base_ms=_now_ms() - 10 * n)
    sub.connect(expiry_s=3600)
    deadline = time.monotonic() + 600
    while sub.count < n and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.disconnect(end_session=True)
    if sub.count < n or sub.first is None:
        raise LoadError(f"the bare subscriber received {sub.count} of {n}")
    return (n - 1) / max(sub.last - sub.first, 1e-9)


# --- phase 2: database ceiling -------------------------------------------------------------------


def copy_ceiling(settings: Settings, n: int) -> float:
    now = datetime.now(UTC)
    rows = [(now - timedelta(milliseconds=i), now, "bench-copy", f"c{i:08d}", 4.0 + (i % 50) / 25, 55.5, None)
            for i in range(n)]
    with connect(settings.database_url) as conn:
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY env_readings (ts, received_at, device_id, msg_id, temp_c, rh_pct, probe) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        elapsed = time.perf_counter() - start
        conn.execute("TRUNCATE env_readings")
        conn.commit()
    return n / elapsed


# --- phase 3: drain by the workers ---------------------------------------------------------------


def _committed(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(messages), 0) FROM device_state").fetchone()
    return int(row[0]) if row else 0


class _Workers:
    """The real supervisor (spawned worker processes) run from a thread of this process."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.supervisor = Supervisor(settings, workers, maintain=False)
        self.thread = threading.Thread(target=self.supervisor.run, daemon=True)
        self.settings = settings
        self.workers = workers

    def start(self) -> None:
        self.thread.start()
        wait_until_connected(self.settings, self.workers)

    def stop(self) -> None:
        self.supervisor.request_stop()
        self.thread.join(60)


def _rss_mb(pids: list[int]) -> float:
    peak = 0.0
    for pid in pids:
        try:
            peak = max(peak, psutil.Process(pid).memory_info().rss / 2**20)
        except psutil.Error:
            continue
    return peak


def drain(settings: Settings, conn: psycopg.Connection, workers: _Workers, target: int,
          on_sample: Callable[[int], None], progress: Callable[[psycopg.Connection], int] = _committed,
          ) -> tuple[float, float, list[tuple[float, float]], float]:
    """Time from the first commit to the last; returns (rate, seconds, curve, peak RSS MB)."""
    start_count = progress(conn)
    t_start = time.perf_counter()
    workers.start()
    samples: list[tuple[float, int]] = []
    peak = 0.0
    last = start_count
    t_first: float | None = None
    while last < start_count + target:
        time.sleep(POLL_S)
        now = time.perf_counter()
        current = progress(conn)
        peak = max(peak, _rss_mb(workers.supervisor.pids()))
        if t_first is None and current > start_count:
            # Progress happened somewhere in the last poll interval: count from its start.
            t_first = samples[-1][0] if samples else t_start
        samples.append((now, current))
        on_sample(current - last)
        last = current
        if now - t_start > 900:
            raise LoadError(f"drain did not finish in 15 minutes ({current - start_count} of {target})")
    assert t_first is not None
    seconds = samples[-1][0] - t_first
    curve = [(b[0] - t_first, (b[1] - a[1]) / (b[0] - a[0])) for a, b in itertools.pairwise(samples)]
    return target / seconds, seconds, curve, peak


# --- phase 4: live latency -----------------------------------------------------------------------


def live_latency(settings: Settings, conn: psycopg.Connection, login: DeviceLogin, rate: int,
                 seconds: float) -> list[float]:
    total = int(rate * seconds)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        watermark = datetime.now(UTC) - timedelta(seconds=5)
        with connect(settings.database_url, autocommit=True) as wconn:
            while not done.is_set() or len(seen) < total:
                rows = wconn.execute("SELECT msg_id, received_at FROM message_ids WHERE device_id = %s "
                                     "AND received_at > %s", (login.device_id, watermark)).fetchall()
                now = time.perf_counter()
                for msg_id, received in rows:
                    seen.setdefault(msg_id, now)
                    watermark = max(watermark, received - timedelta(seconds=5))
                if done.is_set() and time.perf_counter() - done_at[0] > 30:
                    return
                time.sleep(0.005)

    done_at = [0.0]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    pub = CountingPublisher(settings.mqtt_host, settings.mqtt_port, login,
                            f"{settings.topic_prefix}/dev/{login.device_id}/env")
    make = env_payload(login.device_id, _now_ms() - total)
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(f"live phase at {rate} msg/s", total=total)
        for seq in range(total):
            due = start + seq / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            payload = make(seq)
            sent[f"{login.device_id}-{seq:08d}"] = time.perf_counter()
            pub.publish(payload)
            if seq % 500 == 499:
                bar.advance(task, 500)
        bar.update(task, completed=total)
    pub.wait_acked(total)
    pub.close()
    done_at[0] = time.perf_counter()
    done.set()
    watcher.join(60)
    if len(seen) < total:
        raise LoadError(f"only {len(seen)} of {total} live messages became visible")
    return sorted((seen[m] - sent[m]) * 1000 for m in sent)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def plot(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = [c[0] for c in result.curve]
    ax.plot(xs, [c[1] for c in result.curve], label=f"ingest, {result.workers} worker(s)", color="tab:blue")
    ax.axhline(result.ceiling_broker_msgs_per_s, color="tab:orange", linestyle="--",
               label=f"broker ceiling {result.ceiling_broker_msgs_per_s:,.0f} msg/s")
    ax.axhline(result.throughput_msgs_per_s, color="tab:blue", linestyle=":",
               label=f"ingest mean {result.throughput_msgs_per_s:,.0f} msg/s")
    ax.set_xlabel("seconds since the first commit")
    ax.set_ylabel("messages committed per second")
    ax.set_title(f"Backlog drain of {result.messages:,} QoS 1 messages (COPY ceiling "
                 f"{result.ceiling_copy_rows_per_s:,.0f} rows/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_bench(base: Settings, messages: int, workers: int, devices: int, live_rate: int, live_seconds: float,
              out_dir: Path) -> BenchResult:
    settings = bench_settings(base, workers)
    console.print(f"bench: private broker on port {settings.mqtt_port}, database cargotrace_bench, "
                  f"{messages:,} messages, {workers} worker(s)")
    _fresh_database(settings)
    start_local_broker(settings)
    try:
        with BrokerAccounts(settings) as accounts:
            accounts.ensure_service_accounts()
        logins = _provision(settings, [f"bench-{i}" for i in range(devices)] + ["bench-live"])
        load, live = logins[:-1], logins[-1]
        messages -= messages % devices

        broker_rate = broker_ceiling(settings, load, messages)
        console.print(f"broker ceiling: {broker_rate:,.0f} msg/s")
        copy_rate = copy_ceiling(settings, messages)
        console.print(f"COPY ceiling: {copy_rate:,.0f} rows/s")

        with connect(settings.database_url, autocommit=True) as conn:
            warm = _Workers(settings, workers)  # creates the persistent sessions, then stops
            warm.start()
            warm.stop()
            _publish(settings, load, messages, "ingest: publishing backlog (workers stopped)",
                     base_ms=_now_ms() - 5 * messages)
            runner = _Workers(settings, workers)
            with _progress() as bar:
                task = bar.add_task("ingest: draining", total=messages)
                rate, seconds, curve, peak = drain(settings, conn, runner, messages,
                                                   lambda n: bar.advance(task, n))
            console.print(f"ingest: {rate:,.0f} msg/s over {seconds:.1f} s; peak worker RSS {peak:.0f} MB")
            try:
                latencies = live_latency(settings, conn, live, live_rate, live_seconds)
                peak = max(peak, _rss_mb(runner.supervisor.pids()))
            finally:
                runner.stop()
    finally:
        stop_local_broker(settings)
    result = BenchResult(
        messages=messages, workers=workers, throughput_msgs_per_s=round(rate, 1),
        ceiling_broker_msgs_per_s=round(broker_rate, 1), ceiling_copy_rows_per_s=round(copy_rate, 1),
        ratio_to_broker=round(rate / broker_rate, 3), ratio_to_copy=round(rate / copy_rate, 3),
        latency_p50_ms=round(_percentile(latencies, 0.5), 1), latency_p99_ms=round(_percentile(latencies, 0.99), 1),
        latency_max_ms=round(latencies[-1], 1), live_rate_msgs_per_s=live_rate, live_messages=len(latencies),
        peak_rss_mb=round(peak, 1), drain_s=round(seconds, 2), curve=curve)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(result, out_dir / "ingest-throughput.png")
    summary = {k: v for k, v in asdict(result).items() if k != "curve"}
    (out_dir / "ingest.json").write_text(json.dumps(asdict(result), indent=2))
    console.print(f"plot: {out_dir / 'ingest-throughput.png'}")
    print(json.dumps(summary))
    return result
