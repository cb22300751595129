"""Failures in the middle of a stream: a worker killed with SIGKILL, the database stopped and
started again. Nothing may be lost and nothing applied twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest

from ingest.db import connect, ensure_database, migrate
from runtime.settings import Settings
from simulators.loadgen import DeviceLogin, env_payload, publish_backlog
from tests.integration.broker_fixtures import free_port
from tests.integration.stack_helpers import count, provision, running_worker, stack_settings, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def publish_in_background(settings: Settings, logins: list[DeviceLogin], per_device: int) -> threading.Thread:
    now_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000

    def run() -> None:
        publish_backlog(settings.mqtt_host, settings.mqtt_port, logins,
                        lambda d: f"{settings.topic_prefix}/dev/{d}/env", per_device,
                        lambda d: env_payload(d, now_ms))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_of_a_worker_mid_stream_then_restart_stores_every_message_once(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    settings = stack_settings(broker_settings, database_url)
    logins = [DeviceLogin(c.device_id, c.password) for c in (provision(settings, db) for _ in range(4))]
    env = {**os.environ, "CARGOTRACE_DATABASE_URL": database_url, "CARGOTRACE_STATE_DIR": str(settings.state_dir),
           "CARGOTRACE_MQTT_PORT": str(settings.mqtt_port), "CARGOTRACE_INGEST_GROUP": settings.ingest_group,
           "CARGOTRACE_INGEST_CLIENT_PREFIX": settings.ingest_client_prefix, "CARGOTRACE_LOG_LEVEL": "WARNING",
           "CARGOTRACE_INGEST_BATCH_MAX": "500"}
    supervisor = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", "--workers", "1"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: count(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                                 f"{settings.ingest_client_prefix}-%") == 1, timeout=30, what="the worker")
        publisher = publish_in_background(settings, logins, 5000)  # 20,000 messages
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") >= 4000, timeout=60, what="4k stored")
        worker = psutil.Process(supervisor.pid).children()[0]
        os.kill(worker.pid, signal.SIGKILL)  # mid-batch: whatever it held un-acked comes back
        killed_at = count(db, "SELECT count(*) FROM env_readings")
        publisher.join(120)
        # The supervisor restarts the worker; the broker redelivers what it had not acked.
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 20_000, timeout=120,
                   what="all 20,000 after the restart")
        time.sleep(1)
        assert killed_at < 20_000
        assert count(db, "SELECT count(*) FROM env_readings") == 20_000
        assert count(db, "SELECT count(DISTINCT (device_id, msg_id)) FROM env_readings") == 20_000
        assert count(db, "SELECT count(*) FROM message_ids") == 20_000
        alive = [c for c in psutil.Process(supervisor.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
        assert [c.pid for c in alive] != [] and worker.pid not in [c.pid for c in alive]  # a new worker
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)


# --- the database stopped and started during a stream ---------------------------------------------


@dataclass
class PrivateCluster:
    """A throwaway PostgreSQL cluster with TimescaleDB, so stopping it disturbs nobody."""

    bindir: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/cargotrace_restart"

    def _pg(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D", str(self.data),
                        "-w", "-t", "60", *args], check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        self._pg("-l", str(self.data / "log"), "-o",
                 f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data} "
                 "-c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off", "start")

    def stop(self) -> None:
        self._pg("-m", "fast", "stop")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    if not (bindir / "initdb").exists():
        pytest.fail(f"initdb not found in {bindir}: run `make setup`")
    data = Path(tempfile.mkdtemp(prefix="cargotrace-pg-", dir="/tmp"))
    shutil.chown(data, "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
    pg = PrivateCluster(bindir, data, free_port())
    pg.start()
    try:
        ensure_database(pg.url)
        migrate(pg.url)
        yield pg
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(data, ignore_errors=True)


def test_database_stopped_and_restarted_mid_stream_loses_nothing(broker_settings: Settings, database_url: str,
                                                                 db: psycopg.Connection,
                                                                 cluster: PrivateCluster) -> None:
    settings = stack_settings(broker_settings, cluster.url)
    with connect(cluster.url, autocommit=True) as private:
        creds = [provision(settings, private) for _ in range(2)]
    logins = [DeviceLogin(c.device_id, c.password) for c in creds]
    with running_worker(settings) as worker:
        publisher = publish_in_background(settings, logins, 3000)
        with connect(cluster.url, autocommit=True) as private:
            wait_until(lambda: count(private, "SELECT count(*) FROM env_readings") >= 1000, timeout=60,
                       what="1k stored")
        cluster.stop()
        time.sleep(3)  # the worker retries with backoff, acking nothing
        cluster.start()
        publisher.join(120)
        with connect(cluster.url, autocommit=True) as private:
            wait_until(lambda: count(private, "SELECT count(*) FROM env_readings") == 6000, timeout=90,
                       what="all 6,000 after the restart")
            assert count(private, "SELECT count(DISTINCT (device_id, msg_id)) FROM env_readings") == 6000
            assert count(private, "SELECT count(*) FROM message_ids") == 6000
    assert worker.counters.applied == 6000
