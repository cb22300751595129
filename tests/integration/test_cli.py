"""The `cargotrace` command as a user runs it: subprocesses against a private stack."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.db import connect
from ingest.db_roles import drop_service_roles
from tests.integration.broker_fixtures import free_port
from tests.integration.db_fixtures import recreate_database

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[dict[str, str]]:
    # Named after this run's test database, so that parallel runs (other worktrees) never share it.
    url = make_conninfo(database_url, dbname=f"{conninfo_to_dict(database_url)['dbname']}_cli")
    recreate_database(url)
    drop_service_roles(url)  # `up` creates them again, with passwords in this run's state directory
    # ... and the database too, owned by the owner role (its one-time bootstrap).
    with connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(conninfo_to_dict(url)["dbname"])))
    values = {**os.environ, "CARGOTRACE_STATE_DIR": str(tmp_path_factory.mktemp("cli-state")),
              "CARGOTRACE_MQTT_PORT": str(free_port()), "CARGOTRACE_MQTT_TLS_PORT": str(free_port()),
              "CARGOTRACE_API_PORT": str(free_port()),
              "CARGOTRACE_DATABASE_URL": url, "CARGOTRACE_INGEST_WORKERS": "1", "CARGOTRACE_LOG_LEVEL": "WARNING"}
    yield values
    subprocess.run([*CLI, "down"], env=values, cwd=ROOT, capture_output=True, timeout=90, check=False)


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_up_is_idempotent_and_status_reports_the_stack(env: dict[str, str]) -> None:
    first = cli(env, "up")
    assert first.returncode == 0, first.stderr
    assert "stack is up" in first.stderr and "0001_telemetry.sql" in first.stderr
    before = _roles_and_migrations(env)
    second = cli(env, "up")
    assert second.returncode == 0, second.stderr
    assert "schema up to date" in second.stderr
    # No password changed (catalog hashes, state file), no migration re-run (same rows, same times).
    assert _roles_and_migrations(env) == before
    pid = next(line for line in first.stderr.splitlines() if "Mosquitto pid" in line).split()[3]
    assert f"Mosquitto pid {pid} " in second.stderr  # the running broker was reused, not restarted
    status = cli(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in status.stdout.splitlines() if line.count("│") >= 3}
    assert re.fullmatch(r"2\.\d+\.\d+", rows["timescaledb"])  # the extension's version, not "not installed"
    assert rows["database"].startswith("up") and rows["broker"].startswith("up")
    assert re.fullmatch(r"(\d+) of \1 applied", rows["migrations"])


def _roles_and_migrations(env: dict[str, str]) -> tuple[object, ...]:
    url = env["CARGOTRACE_DATABASE_URL"]
    with connect(url) as conn:
        hashes = conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE %s ORDER BY 1",
                              (f"{conninfo_to_dict(url)['dbname']}\\_%",)).fetchall()
        rows = conn.execute("SELECT version, applied_at, applied_by FROM schema_migrations ORDER BY 1").fetchall()
    assert len(hashes) == 3 and all(h for _, h in hashes)
    return hashes, rows, (Path(env["CARGOTRACE_STATE_DIR"]) / "db-roles.json").read_bytes()


def test_up_migrates_as_the_owner_role_which_is_no_superuser(env: dict[str, str]) -> None:
    assert cli(env, "up").returncode == 0
    url = env["CARGOTRACE_DATABASE_URL"]
    owner = f"{conninfo_to_dict(url)['dbname']}_owner"
    with connect(url) as conn:
        assert conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                            (owner,)).fetchone() == (False, False, False)
        # `up` created the database for the owner role and every migration ran as that role ...
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                            ).fetchone() == (owner,)
        applied_by = conn.execute("SELECT DISTINCT applied_by FROM schema_migrations").fetchall()
        assert applied_by == [(owner,)]
        # ... so it owns what they created (the newest migration's tables included), with no hand-over.
        owners = conn.execute("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
                              "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'S')").fetchall()
        assert owners == [(owner,)]


def test_device_add_prints_credentials_that_work(env: dict[str, str]) -> None:
    assert cli(env, "up").returncode == 0
    out = cli(env, "device", "add", "cli-sensor-1", "--kind", "env_sensor")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split("=", 1) for line in out.stdout.strip().splitlines())
    assert fields["username"] == "cli-sensor-1" and len(fields["password"]) >= 24
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cli-sensor-1", protocol=mqtt.MQTTv5)
    client.username_pw_set(fields["username"], fields["password"])
    host, port = fields["broker"].split(":")
    assert client.connect(host, int(port)) == 0
    client.loop_start()
    info = client.publish("cargotrace/v1/dev/cli-sensor-1/env", b"{}", qos=1)
    info.wait_for_publish(10)
    assert info.is_published()
    client.disconnect()
    client.loop_stop()
    again = cli(env, "device", "add", "cli-sensor-1", "--kind", "env_sensor")
    assert again.returncode == 1 and "rotate" in again.stderr and "Traceback" not in again.stderr
    bad = cli(env, "device", "add", "bad/id", "--kind", "env_sensor")
    assert bad.returncode == 1 and "device id" in bad.stderr and "Traceback" not in bad.stderr


def test_token_create_prints_only_the_token(env: dict[str, str]) -> None:
    out = cli(env, "token", "create", "--role", "operator")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ct_") and len(lines[0]) > 40
    with connect(env["CARGOTRACE_DATABASE_URL"]) as conn:
        from api.tokens import role_of
        assert role_of(conn, lines[0]) == "operator"
    wrong = cli(env, "token", "create", "--role", "superuser")
    assert wrong.returncode == 1 and "role must be one of" in wrong.stderr


def test_run_serves_the_api_and_ingests_then_stops_cleanly_on_sigterm(env: dict[str, str]) -> None:
    assert cli(env, "up").returncode == 0
    creds = cli(env, "device", "add", "cli-sensor-2", "--kind", "env_sensor")
    password = dict(line.split("=", 1) for line in creds.stdout.strip().splitlines())["password"]
    proc = subprocess.Popen([*CLI, "run"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    base = f"http://127.0.0.1:{env['CARGOTRACE_API_PORT']}/api/v1"
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{base}/health", timeout=1).json()
                if health["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert health == {"status": "ok", "db": True, "broker": True}
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cli-sensor-2", protocol=mqtt.MQTTv5)
        client.username_pw_set("cli-sensor-2", password)
        client.connect("127.0.0.1", int(env["CARGOTRACE_MQTT_PORT"]))
        client.loop_start()
        body = {"msg_id": "via-run", "ts": datetime.now(UTC).isoformat(), "temp_c": 3.5}
        client.publish("cargotrace/v1/dev/cli-sensor-2/env", orjson.dumps(body), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        with connect(env["CARGOTRACE_DATABASE_URL"], autocommit=True) as conn:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                row = conn.execute("SELECT temp_c FROM env_readings WHERE msg_id = 'via-run'").fetchone()
                if row:
                    break
                time.sleep(0.1)
        assert row == (3.5,)
        assert httpx.get(f"{base}/stock", timeout=5).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output and "Traceback" not in output


def test_maintain_and_rebuild_check_run(env: dict[str, str]) -> None:
    maintain = cli(env, "maintain")
    assert maintain.returncode == 0, maintain.stderr
    assert "env_readings: 0 chunk(s) dropped" in maintain.stderr
    check = cli(env, "rebuild", "--check")
    assert check.returncode == 0 and "identical to the ledger" in check.stderr


def test_a_missing_database_is_a_clear_error_not_a_traceback(env: dict[str, str]) -> None:
    broken = {**env, "CARGOTRACE_DATABASE_URL": "postgresql://cargotrace:x@127.0.0.1:1/cargotrace"}
    out = cli(broken, "db", "migrate")
    assert out.returncode == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/cargotrace" in out.stderr and "cargotrace up" in out.stderr
    assert "Traceback" not in out.stderr
    status = cli(broken, "status")
    assert status.returncode == 1 and "down" in status.stdout


def test_bridge_commands_report_a_missing_port_or_password_clearly(env: dict[str, str]) -> None:
    missing = cli(env, "bridge", "scanner", "--port", "/dev/no-such-tty", "--device", "x", "--password", "y")
    assert missing.returncode == 1 and "/dev/no-such-tty" in missing.stderr and "Traceback" not in missing.stderr
    no_password = cli({k: v for k, v in env.items() if k != "CARGOTRACE_DEVICE_PASSWORD"},
                      "bridge", "gps", "--port", "/dev/no-such-tty", "--device", "x")
    assert no_password.returncode == 2 and "CARGOTRACE_DEVICE_PASSWORD" in no_password.stderr
