"""`cargotrace bench ingest --broker nats`: backlog-drain throughput with 1, 2, 4 workers on both brokers.

For each broker (a private Mosquitto; a private 3-node NATS cluster with a 3-replica stream) and
each worker count, the same backlog is put into the broker while the workers are stopped, then the
real supervisor's worker processes are started and timed from the first commit to the last. A
fresh private database per broker; the Mosquitto broker is restarted without its persistence file
between worker counts (no session of a previous run keeps receiving copies). Per-worker
efficiency = rate(n) / (n x rate(1)). The load generator never runs while the workers drain.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cli.bench_ingest import _fresh_database, _now_ms, _progress, _provision, _publish, _Workers, bench_settings, drain
from cli.local_broker import start_local_broker, stop_local_broker
from cli.local_nats import free_port_block, start_local_cluster, stop_local_cluster
from devices.accounts import open_accounts
from ingest.db import connect
from ingest.transport import prepare_ingest
from ingest.transport.nats import connect_service
from runtime.settings import Settings
from simulators.loadgen import DeviceLogin, LoadError, env_payload


@dataclass
class ScalingRow:
    broker: str
    workers: int
    messages: int
    msgs_per_s: float
    drain_s: float
    per_worker_efficiency: float
    peak_rss_mb: float


async def _publish_js(settings: Settings, logins: list[DeviceLogin], per_device: int, base_ms: int) -> int:
    """JetStream-confirmed backlog: every message has its PubAck (stored on the replicas) when this returns."""
    nc = await connect_service(settings, "bench-publisher")
    js = nc.jetstream(timeout=30)
    window = asyncio.Semaphore(512)
    acked = 0

    async def one(subject: str, payload: bytes) -> None:
        nonlocal acked
        async with window:
            await js.publish(subject, payload)
            acked += 1

    try:
        prefix = settings.topic_prefix.replace("/", ".")
        for login in logins:
            make = env_payload(login.device_id, base_ms)
            await asyncio.gather(*(one(f"{prefix}.dev.{login.device_id}.env", make(i)) for i in range(per_device)))
    finally:
        await nc.close()
    return acked


def _measure(settings: Settings, broker: str, workers: int, messages: int, logins: list[DeviceLogin],
             base_ms: int) -> tuple[float, float, float]:
    per_device = messages // len(logins)
    if broker == "mosquitto":
        warm = _Workers(settings, workers)  # the persistent sessions of this worker count, then stopped
        warm.start()
        warm.stop()
        _publish(settings, logins, messages, f"mosquitto x{workers}: backlog", base_ms=base_ms)
    else:
        acked = asyncio.run(_publish_js(settings, logins, per_device, base_ms))
        if acked != per_device * len(logins):
            raise LoadError(f"JetStream acknowledged {acked} of {per_device * len(logins)} messages")
    with connect(settings.database_url, autocommit=True) as conn, _progress() as bar:
        task = bar.add_task(f"{broker} x{workers}: draining", total=messages)
        runner = _Workers(settings, workers)
        try:
            rate, seconds, _curve, peak = drain(settings, conn, runner, per_device * len(logins),
                                                lambda n: bar.advance(task, n))
        finally:
            runner.stop()
    return rate, seconds, peak


def _mosquitto_run(base: Settings, workers: int, messages: int, devices: int) -> tuple[float, float, float]:
    """A fresh private Mosquitto and database for each worker count: Debian's Mosquitto 2.0.11 loses
    shared-subscription messages after a broker restart (issue 14 point 7), so none is restarted."""
    settings = bench_settings(base, workers).model_copy(update={"ingest_group": f"bench-{workers}",
                                                                "ingest_client_prefix": f"bench-{workers}-ingest"})
    _fresh_database(settings)
    start_local_broker(settings)
    try:
        with open_accounts(settings) as accounts:
            accounts.ensure_service_accounts()
        logins = _provision(settings, [f"bench-{i}" for i in range(devices)])
        return _measure(settings, "mosquitto", workers, messages, logins, _now_ms())
    finally:
        stop_local_broker(settings)


def _nats_runs(base: Settings, worker_counts: list[int], messages: int, devices: int
               ) -> list[tuple[float, float, float]]:
    """One private 3-node cluster and database; each worker count drains its own new backlog."""
    port_base = free_port_block()
    settings = bench_settings(base, max(worker_counts)).model_copy(
        update={"broker": "nats", "nats_port_base": port_base, "mqtt_port": port_base + 10})
    _fresh_database(settings)
    try:
        with open_accounts(settings) as accounts:
            accounts.ensure_service_accounts()
        start_local_cluster(settings)
        prepare_ingest(settings, 1)
        out = []
        for workers in worker_counts:
            # Each run has its own devices: message identities (device, msg_id) never repeat a run's.
            logins = _provision(settings, [f"bench-w{workers}-{i}" for i in range(devices)])
            run = settings.model_copy(update={"ingest_client_prefix": f"bench-{workers}-ingest"})
            out.append(_measure(run, "nats", workers, messages, logins, _now_ms()))
        return out
    finally:
        stop_local_cluster(settings)
        shutil.rmtree(settings.nats_dir, ignore_errors=True)


def run_scaling(base: Settings, messages: int, devices: int, worker_counts: list[int], out_dir: Path
                ) -> list[ScalingRow]:
    messages -= messages % devices
    results = {"mosquitto": [_mosquitto_run(base, w, messages, devices) for w in worker_counts],
               "nats": _nats_runs(base, worker_counts, messages, devices)}
    rows: list[ScalingRow] = []
    for broker, measured in results.items():
        single = measured[0][0] / worker_counts[0]  # the first count's rate per worker is the baseline
        for workers, (rate, seconds, peak) in zip(worker_counts, measured, strict=True):
            rows.append(ScalingRow(broker, workers, messages, round(rate, 1), round(seconds, 2),
                                   round(rate / (workers * single), 3), round(peak, 1)))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ingest-scaling.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return rows


def print_table(rows: list[ScalingRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="backlog drain: msg/s by broker and worker processes (2 cores)")
    for col in ("broker", "workers", "messages", "msg/s", "drain s", "per-worker efficiency", "peak RSS MB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.broker, str(r.workers), f"{r.messages:,}", f"{r.msgs_per_s:,.0f}", f"{r.drain_s:.1f}",
                      f"{r.per_worker_efficiency:.2f}", f"{r.peak_rss_mb:.0f}")
    Console(stderr=True).print(table)
    print(json.dumps({"scaling": [asdict(r) for r in rows]}))
