"""`cargotrace up --cluster 3` / `status` / `device add` / `down` as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cli.local_nats import free_port_block
from ingest.db import connect
from ingest.db_roles import drop_service_roles
from tests.integration.db_fixtures import recreate_database
from tests.integration.stack_helpers import count, wait_until
from tests.integration.test_nats_cluster import SLOW

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[dict[str, str]]:
    # Named after this run's test database, so that parallel runs (other worktrees) never share it.
    url = make_conninfo(database_url, dbname=f"{conninfo_to_dict(database_url)['dbname']}_nats_cli")
    recreate_database(url)
    drop_service_roles(url)  # `up` creates them again, with passwords in this run's state directory
    # ... and the database too, owned by the owner role (its one-time bootstrap).
    with connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(conninfo_to_dict(url)["dbname"])))
    base = free_port_block()
    values = {**os.environ, "CARGOTRACE_STATE_DIR": str(tmp_path_factory.mktemp("nats-cli-state")),
              "CARGOTRACE_NATS_PORT_BASE": str(base), "CARGOTRACE_DATABASE_URL": url,
              "CARGOTRACE_LOG_LEVEL": "WARNING"}
    yield values
    subprocess.run([*CLI, "down"], env=values, cwd=ROOT, capture_output=True, timeout=120, check=False)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)


def status_rows(env: dict[str, str]) -> tuple[int, str]:
    status = cli(env, "status")
    return status.returncode, " ".join(status.stdout.split())


def test_up_cluster_status_device_and_down(env: dict[str, str]) -> None:
    up = cli(env, "up", "--cluster", "3", "--workers", "1")
    assert up.returncode == 0, up.stderr
    mqtt_port = up.stderr.split("CARGOTRACE_MQTT_PORT=")[1].split()[0]
    nats_env = {**env, "CARGOTRACE_BROKER": "nats", "CARGOTRACE_MQTT_PORT": mqtt_port}
    code, text = status_rows(nats_env)
    assert code == 0, text
    assert text.count("healthy pid") == 3 and "3 replica(s), leader n" in text and "supervisor pid" in text

    added = cli(nats_env, "device", "add", "cli-dev-1", "--kind", "env_sensor")
    assert added.returncode == 0, added.stderr
    creds = dict(line.split("=", 1) for line in added.stdout.splitlines())
    second_node = str(int(env["CARGOTRACE_NATS_PORT_BASE"]) + 11)
    now = datetime.now(UTC).isoformat()
    published = subprocess.run(
        ["mosquitto_pub", "-V", "mqttv311", "-h", "127.0.0.1", "-p", second_node, "-u", creds["username"],
         "-P", creds["password"], "-q", "1", "-t", "cargotrace/v1/dev/cli-dev-1/env",
         "-m", f'{{"msg_id": "c1", "ts": "{now}", "temp_c": 3.5}}'], capture_output=True, text=True, timeout=60,
        check=False)
    assert published.returncode == 0, published.stderr
    with connect(env["CARGOTRACE_DATABASE_URL"], autocommit=True) as conn:
        wait_until(lambda: count(conn, "SELECT count(*) FROM env_readings WHERE device_id = 'cli-dev-1'") == 1,
                   timeout=SLOW, what="the device's reading stored by the cluster's workers")

    down = cli(nats_env, "down")
    assert down.returncode == 0, down.stderr
    assert "NATS cluster stopped (3 node(s))" in down.stderr
    code, text = status_rows(nats_env)
    assert code != 0 and "healthy pid" not in text
