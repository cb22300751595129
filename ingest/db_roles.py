"""Least-privilege database roles for the long-running services: owner, ingest and the API.

`cargotrace up` (connected with CARGOTRACE_DATABASE_URL, which creates the database and the
TimescaleDB extension and applies the migrations: the superuser `cargotrace` of `make setup` on a
development machine) creates three roles, none a superuser, none with CREATEDB/CREATEROLE/
REPLICATION/BYPASSRLS:

- ``<database>_owner`` owns every table, sequence and function of the schema (handed over after
  each migration run) and runs retention and the health loop of `cargotrace run`;
- ``<database>_ingest`` and ``<database>_api`` have data privileges only (SELECT, INSERT, UPDATE,
  DELETE; sequences): never DDL, TRUNCATE, ``COPY ... TO PROGRAM`` or the catalog's password
  hashes. `cargotrace run`/`demo` connect the workers and the API with them.

Their generated passwords live in ``<state_dir>/db-roles.json`` (0600 from creation).

A role that already exists is never given a new password (someone may have changed it on
purpose); without its password in the state file it is refused with advice, so a pre-existing role
on an external database is used by setting CARGOTRACE_INGEST_DATABASE_URL /
CARGOTRACE_API_DATABASE_URL instead.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.db import StoreError, connect, describe
from runtime.settings import Settings, write_private

PURPOSES = ("owner", "ingest", "api")
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
            urls[purpose] = make_conninfo(admin, user=role, password=stored[key][purpose])
        owner = role_name(admin, "owner")
        _adopt(conn, owner, dbname)
        for purpose in ("ingest", "api"):
            _grant(conn, role_name(admin, purpose), owner, dbname)
    return urls


def _create(conn: psycopg.Connection, role: str, password: str) -> None:
    try:
        conn.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
            sql.Identifier(role), _ROLE_OPTIONS, sql.Literal(password)))
    except psycopg.errors.DuplicateObject:
        raise StoreError(f"database role {role!r} was just created by another process; run again") from None


# Objects of the schema (not those of extensions) and the ALTER that hands each over.
_OWNED = """
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      ELSE 'TABLE' END, c.oid::regclass::text
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
  AND pg_get_userbyid(c.relowner) <> %(owner)s
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                       AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.oid::regprocedure::text
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
  AND pg_get_userbyid(p.proowner) <> %(owner)s
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
"""


_ADOPT_ATTEMPTS = 5


def _adopt(conn: psycopg.Connection, owner: str, dbname: str) -> None:
    """Hand the schema's objects to the owner role (a sequence owned by a column follows its table)."""
    o = sql.Identifier(owner)
    conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(dbname), o))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(o))
    # One object per transaction (autocommit), so at most one exclusive lock is held at a time: running
    # services and TimescaleDB's background jobs cannot deadlock with it; a deadlock is retried.
    for kind, name in conn.execute(_OWNED, {"owner": owner}).fetchall():
        statement = sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), sql.SQL(name), o)
        for attempt in range(_ADOPT_ATTEMPTS):
            try:
                conn.execute(statement)
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                if attempt == _ADOPT_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))


def _grant(conn: psycopg.Connection, role: str, owner: str, dbname: str) -> None:
    r, o, db = sql.Identifier(role), sql.Identifier(owner), sql.Identifier(dbname)
    with conn.transaction():
        for statement in (
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {r}",
            "GRANT USAGE ON SCHEMA public TO {r}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {r}",
            # Tables and sequences later migrations create are covered too, whether the migrating
            # role (this connection's) or the owner creates them; `up`/`run` also re-grant.
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
        ):
            conn.execute(sql.SQL(statement).format(r=r, o=o, db=db))


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
                # Objects it owns go back to the connecting role first (DROP OWNED would drop tables).
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
