"""`cargotrace up --cluster N` / `status` / `down` for the local NATS cluster and its ingest workers.

The workers run as one detached `cargotrace ingest` process (its own supervisor and worker
processes) with ``CARGOTRACE_BROKER=nats``; its pid file sits beside the nodes' in ``nats_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import nats.errors

from cli.local_broker import _alive, _children
from cli.local_nats import nodes, start_local_cluster, stop_local_cluster
from devices.accounts import open_accounts
from devices.broker_accounts import BrokerError
from ingest.db import StoreError
from ingest.transport import prepare_ingest
from ingest.transport.nats import connect_service
from runtime.settings import Settings

STOP_TIMEOUT_S = 30.0


def cluster_settings(settings: Settings, size: int) -> Settings:
    """The settings of a local cluster of ``size`` nodes; devices get node 1's MQTT listener."""
    update: dict[str, Any] = {"broker": "nats", "nats_cluster_size": size,
                              "nats_replicas": min(settings.nats_replicas, size)}
    if settings.mqtt_port == Settings.model_fields["mqtt_port"].default:
        update["mqtt_port"] = nodes(settings, size)[0].mqtt_port
    return settings.model_copy(update=update)


def bring_up_cluster(settings: Settings, workers: int) -> list[int]:
    """Accounts file, nodes, stream and consumer, then the ingest workers; idempotent."""
    with open_accounts(settings) as accounts:
        accounts.ensure_service_accounts()
    pids = start_local_cluster(settings)
    prepare_ingest(settings, workers)
    if workers > 0:
        start_workers(settings, workers)
    return pids


def _ingest_pid_file(settings: Settings) -> Any:
    return settings.nats_dir.resolve() / "ingest.pid"


def ingest_pid(settings: Settings) -> int | None:
    try:
        pid = int(_ingest_pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start_workers(settings: Settings, workers: int) -> int:
    pid = ingest_pid(settings)
    if pid is not None:
        return pid
    env = {**os.environ, "CARGOTRACE_BROKER": "nats", "CARGOTRACE_NATS_PORT_BASE": str(settings.nats_port_base),
           "CARGOTRACE_NATS_CLUSTER_SIZE": str(settings.nats_cluster_size),
           "CARGOTRACE_NATS_REPLICAS": str(settings.nats_replicas), "CARGOTRACE_STATE_DIR": str(settings.state_dir),
           "CARGOTRACE_DATABASE_URL": settings.database_url}
    log_path = settings.nats_dir.resolve() / "ingest.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", "--workers", str(workers)], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _children[proc.pid] = proc
    _ingest_pid_file(settings).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_workers(settings: Settings) -> bool:
    pid = ingest_pid(settings)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # the supervisor stops its workers: batch committed and acked
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise BrokerError(f"the ingest supervisor (pid {pid}) did not stop within {STOP_TIMEOUT_S:g} s")
        time.sleep(0.1)
    _children.pop(pid, None)
    _ingest_pid_file(settings).unlink(missing_ok=True)
    return True


def bring_down_cluster(settings: Settings) -> int:
    stop_workers(settings)
    return stop_local_cluster(settings)


async def _stream_state(settings: Settings) -> dict[str, Any]:
    nc = await connect_service(settings, "cargotrace-status", reconnect=False)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(settings.nats_stream)
        consumer = await js.consumer_info(settings.nats_stream, settings.nats_durable)
    finally:
        await nc.close()
    cluster = info.cluster
    replicas = [{"name": r.name, "current": r.current, "lag": r.lag} for r in (cluster.replicas or [])] \
        if cluster else []
    return {"messages": info.state.messages, "replicas_configured": info.config.num_replicas,
            "leader": cluster.leader if cluster else None, "replicas": replicas,
            "pending": consumer.num_pending, "ack_pending": consumer.num_ack_pending}


def stream_state(settings: Settings) -> dict[str, Any]:
    """The device stream as JetStream reports it: leader, followers and whether they are current."""
    try:
        return asyncio.run(asyncio.wait_for(_stream_state(settings), 15))
    except (nats.errors.Error, TimeoutError, OSError, StoreError) as exc:
        return {"error": repr(exc)}
