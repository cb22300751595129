"""Least-privilege database roles for the long-running services: ingest and the API.

`cargotrace up` (connected with CARGOTRACE_DATABASE_URL, the role that owns the schema and runs the
migrations) creates ``<database>_ingest`` and ``<database>_api``: LOGIN, nothing else (not
superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS), with data privileges only (SELECT,
INSERT, UPDATE, DELETE; sequences), never DDL, TRUNCATE, ``COPY ... TO PROGRAM`` or the catalog's
password hashes. Their generated passwords live in ``<state_dir>/db-roles.json`` (0600 from
creation); `cargotrace run`/`demo` then connect the workers and the API with them.

A role that already exists is never given a new password (someone may have changed it on
purpose); without its password in the state file it is refused with advice, so a pre-existing role
on an external database is used by setting CARGOTRACE_INGEST_DATABASE_URL /
CARGOTRACE_API_DATABASE_URL instead.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.db import StoreError, connect, describe
from runtime.settings import Settings, write_private

PURPOSES = ("ingest", "api")
_ROLE_OPTIONS = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT")


def role_name(database_url: str, purpose: str) -> str:
    return f"{conninfo_to_dict(database_url).get('dbname')}_{purpose}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def ensure_service_roles(settings: Settings) -> dict[str, str]:
    """Create (once) and grant the service roles; returns {purpose: database URL}."""
    admin = settings.database_url
    key = describe(admin)
    path = settings.db_roles_file
    stored = _read(path)
    urls: dict[str, str] = {}
    with connect(admin, autocommit=True) as conn:
        dbname = str(conninfo_to_dict(admin).get("dbname"))
        for purpose in PURPOSES:
            role = role_name(admin, purpose)
            known = stored.get(key, {}).get(purpose)
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if row is None:
                password = known or secrets.token_urlsafe(24)
                # Saved before the role exists: a crash in between cannot strand a role nobody can use.
                stored.setdefault(key, {})[purpose] = password
                settings.state_dir.mkdir(parents=True, exist_ok=True)
                write_private(path, json.dumps(stored, indent=2))
                _create(conn, role, password)
            elif known is None:
                raise StoreError(
                    f"database role {role!r} exists but its password is not in {path}; set "
                    f"CARGOTRACE_{purpose.upper()}_DATABASE_URL to a URL with its credentials (a pre-existing role), "
                    f"or drop the role to have it created again")
            elif row[0]:
                raise StoreError(f"database role {role!r} is a superuser; the {purpose} service must not be")
            _grant(conn, role, dbname)
            urls[purpose] = make_conninfo(admin, user=role, password=stored[key][purpose])
    return urls


def _create(conn: psycopg.Connection, role: str, password: str) -> None:
    try:
        conn.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
            sql.Identifier(role), _ROLE_OPTIONS, sql.Literal(password)))
    except psycopg.errors.DuplicateObject:
        raise StoreError(f"database role {role!r} was just created by another process; run again") from None


def _grant(conn: psycopg.Connection, role: str, dbname: str) -> None:
    r, db = sql.Identifier(role), sql.Identifier(dbname)
    with conn.transaction():
        for statement in (
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {r}",
            "GRANT USAGE ON SCHEMA public TO {r}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}",
            # Tables and sequences later migrations create (run by this same role) are covered too.
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
        ):
            conn.execute(sql.SQL(statement).format(r=r, db=db))


def service_urls(settings: Settings) -> dict[str, str]:
    """The URLs ``ensure_service_roles`` stored for this database ({} when none)."""
    key = describe(settings.database_url)
    entry = _read(settings.db_roles_file).get(key, {})
    return {p: make_conninfo(settings.database_url, user=role_name(settings.database_url, p), password=pw)
            for p, pw in entry.items() if p in PURPOSES}


def drop_service_roles(admin_url: str) -> None:
    """Remove the service roles of this database (their grants too); for tests and decommissioning."""
    with connect(admin_url, autocommit=True) as conn:
        for purpose in PURPOSES:
            role = role_name(admin_url, purpose)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
