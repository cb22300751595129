"""Database least privilege (issue 10 points 6 and 9): the API's and ingest's roles are not
superusers, cannot run programs on the server nor read password hashes, yet serve their purpose;
a password someone changed is never reset; the password file is private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from api.app import create_app
from api.tokens import create_token
from ingest.db import StoreError, connect, migrate, migrations
from ingest.db_roles import bootstrap, drop_service_roles, role_name
from runtime.settings import Settings
from tests.integration.db_fixtures import recreate_database
from tests.integration.stack_helpers import count, device, provision, running_worker, stack_settings, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def roles(broker_settings: Settings, database_url: str, db: psycopg.Connection,
          tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    drop_service_roles(database_url)  # left over from an earlier run whose state directory is gone
    settings = stack_settings(broker_settings, database_url, state_dir=tmp_path)
    urls = bootstrap(settings)
    try:
        yield settings, urls
    finally:
        drop_service_roles(database_url)


@pytest.mark.parametrize("purpose", ["ingest", "api"])
def test_service_roles_cannot_run_programs_or_read_password_hashes(
        roles: tuple[Settings, dict[str, str]], purpose: str) -> None:
    _, urls = roles
    with psycopg.connect(urls[purpose], autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == (False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT rolpassword FROM pg_authid")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE dead_letters")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE api_tokens")


def test_the_api_works_as_its_role(roles: tuple[Settings, dict[str, str]], db: psycopg.Connection) -> None:
    settings, urls = roles
    token = create_token(db, "admin", "least-privilege")
    api_settings = settings.model_copy(update={"api_database_url": urls["api"]})
    with TestClient(create_app(api_settings), headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.put("/api/v1/sites/LP1", json={"name": "Least privilege"}).status_code == 201
        assert client.get("/api/v1/sites/LP1").json()["name"] == "Least privilege"
        assert client.get("/api/v1/audit").json()["items"][0]["path"] == "/api/v1/sites/LP1"
        # The pool's connections (and the event listener's) are the API role's.
        assert count(db, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = current_database()",
                     role_name(urls["api"], "api")) >= 1


def test_ingest_works_as_its_role(roles: tuple[Settings, dict[str, str]], db: psycopg.Connection) -> None:
    settings, urls = roles
    ingest_settings = settings.model_copy(update={"ingest_database_url": urls["ingest"]})
    creds = provision(ingest_settings, db)
    with running_worker(ingest_settings) as worker, device(creds, ingest_settings) as d:
        d.publish("env", orjson.dumps({"msg_id": "lp-1", "ts": datetime.now(UTC).isoformat(), "temp_c": 2.0}))
        d.publish("env", b"not json")
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'lp-1'") == 1
                   and count(db, "SELECT count(*) FROM dead_letters") == 1, timeout=60, what="stored as ingest")
        assert worker._db().execute("SELECT current_user").fetchone() == (role_name(urls["ingest"], "ingest"),)


def test_a_changed_password_is_never_reset(roles: tuple[Settings, dict[str, str]], database_url: str) -> None:
    settings, urls = roles
    role = role_name(database_url, "api")
    with connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal("chosen-by-ops")))
    bootstrap(settings)  # `cargotrace up` / `make setup` again
    changed = psycopg.conninfo.make_conninfo(urls["api"], password="chosen-by-ops")
    with psycopg.connect(changed) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_an_existing_role_without_its_password_is_refused_with_advice(
        roles: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    settings, _ = roles
    elsewhere = settings.model_copy(update={"state_dir": tmp_path / "another-state"})
    with pytest.raises(StoreError, match=r"exists but its password is not in .*CARGOTRACE_OWNER_DATABASE_URL"):
        bootstrap(elsewhere)


def test_the_owner_role_owns_the_schema_and_is_no_superuser(roles: tuple[Settings, dict[str, str]],
                                                            db: psycopg.Connection, database_url: str) -> None:
    owner = role_name(database_url, "owner")
    others = db.execute("SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
                        "AND c.relkind IN ('r', 'p', 'v') AND pg_get_userbyid(c.relowner) <> %s", (owner,)).fetchall()
    assert others == []
    _, urls = roles
    with psycopg.connect(urls["owner"], autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
        # Retention as the owner: TimescaleDB's drop_chunks needs the hypertable's owner.
        conn.execute("SELECT drop_chunks('env_readings', older_than => interval '3650 days')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT rolpassword FROM pg_authid")


def test_the_password_file_is_private(roles: tuple[Settings, dict[str, str]]) -> None:
    settings, _ = roles
    assert stat.S_IMODE(settings.db_roles_file.stat().st_mode) == 0o600


@pytest.fixture
def external_roles(database_url: str) -> Iterator[dict[str, str]]:
    """Roles a DBA created beforehand, named as they like (not <db>_<purpose>), with their passwords."""
    names = {p: f"{role_name(database_url, 'dba')}_{p}_x" for p in ("owner", "ingest", "api")}

    def drop(conn: psycopg.Connection) -> None:
        for role in names.values():
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    with connect(database_url, autocommit=True) as conn:
        drop(conn)
        for purpose, role in names.items():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(f"dba-{purpose}")))
        try:
            yield {p: psycopg.conninfo.make_conninfo(database_url, user=r, password=f"dba-{p}")
                   for p, r in names.items()}
        finally:
            drop(conn)


def test_pre_existing_roles_are_granted_never_altered_and_migrate(
        external_roles: dict[str, str], broker_settings: Settings, database_url: str, tmp_path: Path) -> None:
    settings = stack_settings(broker_settings, database_url, state_dir=tmp_path).model_copy(
        update={f"{p}_database_url": url for p, url in external_roles.items()})
    with connect(database_url) as conn:
        hashes = conn.execute("SELECT rolname, rolpassword FROM pg_authid ORDER BY 1").fetchall()
    assert bootstrap(settings) == external_roles
    assert not settings.db_roles_file.exists()  # nothing generated: their passwords are the DBA's
    with connect(database_url) as conn:
        assert conn.execute("SELECT rolname, rolpassword FROM pg_authid ORDER BY 1").fetchall() == hashes
    assert migrate(external_roles["owner"]) == []  # the owner role can run migrations: schema up to date
    with psycopg.connect(external_roles["owner"], autocommit=True) as owner:
        assert owner.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                             "AND relkind = 'r' AND relowner <> current_user::regrole").fetchone() == (0,)
    with psycopg.connect(external_roles["api"], autocommit=True) as api:
        assert api.execute("SELECT count(*) FROM devices").fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            api.execute("DROP TABLE dead_letters")


def test_a_superuser_given_as_a_service_role_is_refused(roles: tuple[Settings, dict[str, str]],
                                                      database_url: str) -> None:
    settings, _ = roles
    with pytest.raises(StoreError, match="is a superuser; the owner service must not be"):
        bootstrap(settings.model_copy(update={"owner_database_url": database_url}))


def test_a_database_migrated_by_the_superuser_is_taken_over_and_migrated_by_the_owner(
        database_url: str, tmp_path: Path) -> None:
    """An earlier version ran migrations as the superuser: `cargotrace db migrate` hands the schema
    to the owner role, which applies the pending migrations (ALTERing the superuser's old tables)."""
    url = psycopg.conninfo.make_conninfo(database_url, dbname=f"{conninfo_to_dict(database_url)['dbname']}_legacy")
    recreate_database(url)
    drop_service_roles(url)
    every = migrations()
    with connect(url, autocommit=True) as conn:  # the old migrator, for the first half
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        for m in every[:len(every) // 2]:
            conn.execute(m.sql.encode())
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
    env = {**os.environ, "CARGOTRACE_DATABASE_URL": url, "CARGOTRACE_STATE_DIR": str(tmp_path),
           "CARGOTRACE_LOG_LEVEL": "WARNING"}
    try:
        out = subprocess.run([sys.executable, "-m", "cli.main", "db", "migrate"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        assert every[-1].name in out.stderr
        owner = role_name(url, "owner")
        with connect(url) as conn:
            by = dict(conn.execute("SELECT version, applied_by FROM schema_migrations").fetchall())
            assert by == {m.version: None if i < len(every) // 2 else owner for i, m in enumerate(every)}
            owners = conn.execute("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE "
                                  "relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')").fetchall()
            assert owners == [(owner,)]
    finally:
        drop_service_roles(url)
        with connect(psycopg.conninfo.make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(conninfo_to_dict(url)["dbname"])))
