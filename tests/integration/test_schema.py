from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.db import StoreError, connect, migrate, migrations
from ingest.maintenance import HYPERTABLES, apply_retention
from runtime.settings import Settings

pytestmark = pytest.mark.integration


def test_migrations_are_recorded_and_rerun_is_a_noop(database_url: str) -> None:
    assert migrate(database_url) == []
    with connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in migrations()]


def test_telemetry_tables_are_hypertables_with_latest_per_device_indexes(db: psycopg.Connection) -> None:
    hyper = {r[0] for r in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert hyper == set(HYPERTABLES)
    for table in HYPERTABLES:
        indexes = [r[0] for r in db.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]
        assert any("(device_id, ts DESC)" in i for i in indexes), table


def test_unreachable_database_gives_advice_not_a_traceback() -> None:
    with pytest.raises(StoreError, match="cargotrace up"):
        connect("postgresql://nobody@127.0.0.1:1/none")


def _insert_env(conn: psycopg.Connection, ts: datetime, msg_id: str) -> None:
    conn.execute("INSERT INTO env_readings (ts, received_at, device_id, msg_id, temp_c) VALUES (%s, %s, 'd', %s, 1)",
                 (ts, ts, msg_id))


def test_retention_drops_old_chunks_and_keeps_recent_rows(db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    for days in (40, 35, 31):
        _insert_env(db, now - timedelta(days=days), f"old-{days}")
    _insert_env(db, now - timedelta(days=2), "recent")
    db.execute("INSERT INTO message_ids VALUES ('d', 'old', 'env', %s), ('d', 'new', 'env', %s)",
               (now - timedelta(days=30), now))
    db.execute("INSERT INTO dead_letters (received_at, last_received_at, topic, reason, detail, payload, "
               "payload_size, fingerprint) VALUES (%s, %s, 't', 'invalid_json', 'x', 'x', 1, 'a'), "
               "(%s, %s, 't', 'invalid_json', 'x', 'y', 1, 'b')",
               (now - timedelta(days=400), now - timedelta(days=400), now, now))
    settings = Settings(retention_env_readings_days=30, dedupe_window_days=14, retention_dead_letters_days=180)
    report = apply_retention(db, settings)
    assert report.chunks_dropped["env_readings"] == 3  # one-day chunks: one per old day
    assert [r[0] for r in db.execute("SELECT msg_id FROM env_readings")] == ["recent"]
    assert report.message_ids_deleted == 1 and report.dead_letters_deleted == 1
    assert [r[0] for r in db.execute("SELECT msg_id FROM message_ids")] == ["new"]
    # A second run finds nothing more to do.
    again = apply_retention(db, settings)
    assert again.chunks_dropped["env_readings"] == 0 and again.message_ids_deleted == 0
