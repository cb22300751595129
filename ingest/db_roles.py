"""The one-time database bootstrap and the least-privilege roles: owner, ingest and the API.

Only the bootstrap (`cargotrace db bootstrap`, also run by `cargotrace up`/`run`/`demo`) connects
with CARGOTRACE_DATABASE_URL, which must be a superuser (the `cargotrace` role of `make setup` on a
development machine): CREATE EXTENSION timescaledb needs one, and so do CREATE DATABASE ... OWNER,
ALTER ... OWNER TO and default privileges FOR ROLE the owner on PostgreSQL 15 unless the connecting
role is a member of the owner role. Idempotently, it:

- creates the three roles when missing, none a superuser, none with CREATEDB/CREATEROLE/
  REPLICATION/BYPASSRLS (an existing role keeps its password);
- creates the database OWNED BY ``<database>_owner`` when missing (an existing database keeps its
  owner; the owner role gets CONNECT/TEMPORARY on it and USAGE/CREATE on schema public);
- installs TimescaleDB (``CREATE EXTENSION`` needs a superuser: it is not a trusted extension);
- hands the schema objects an earlier version created as the superuser to the owner role;
- grants ``<database>_ingest`` and ``<database>_api`` data privileges only (SELECT, INSERT,
  UPDATE, DELETE; sequences), also on what later migrations create (default privileges of the
  owner role): never DDL, TRUNCATE, ``COPY ... TO PROGRAM`` or the catalog's password hashes.

Every migration then runs as the owner role (cli/main.py), as do retention and the health loop of
`cargotrace run`; the workers and the API connect as their roles.

Generated passwords live in ``<state_dir>/db-roles.json`` (0600 from creation). A role that
already exists is never given a new password (someone may have changed it on purpose); without its
password in the state file it is refused with advice. Pre-existing roles on an external database
(any names) are used by setting CARGOTRACE_OWNER_DATABASE_URL / CARGOTRACE_INGEST_DATABASE_URL /
CARGOTRACE_API_DATABASE_URL: the bootstrap then checks and grants those roles, never creates or
alters them, and with all three set `up`/`run` skip the bootstrap (a DBA ran it once).
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

from ingest.db import StoreError, connect, connect_server, describe, explain_extension_failure
from runtime.settings import Settings, write_private

PURPOSES = ("owner", "ingest", "api")
_ROLE_OPTIONS = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT")


def role_name(database_url: str, purpose: str) -> str:
    return f"{conninfo_to_dict(database_url).get('dbname')}_{purpose}"


def configured_url(settings: Settings, purpose: str) -> str:
    """The URL set for a purpose (CARGOTRACE_<PURPOSE>_DATABASE_URL), "" when unset."""
    return str(getattr(settings, f"{purpose}_database_url"))


def _role_of(settings: Settings, purpose: str) -> str:
    url = configured_url(settings, purpose)
    return str(conninfo_to_dict(url).get("user")) if url else role_name(settings.database_url, purpose)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def bootstrap(settings: Settings) -> dict[str, str]:
    """The superuser's one-time part (idempotent): roles, database, extension, ownership, grants.
    Returns {purpose: database URL} for the owner, ingest and API roles."""
    admin = settings.database_url
    dbname = str(conninfo_to_dict(admin).get("dbname"))
    owner = _role_of(settings, "owner")
    with connect_server(admin) as conn:  # roles are the cluster's; the database may not exist yet
        urls = {purpose: _ensure_role(conn, settings, purpose) for purpose in PURPOSES}
        _ensure_database(conn, dbname, owner, admin)
    with connect(admin, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            raise StoreError(f"cannot install TimescaleDB in {describe(admin)}: "
                             f"{explain_extension_failure(exc)}") from None
        _adopt(conn, owner, dbname)
        for purpose in ("ingest", "api"):
            _grant(conn, _role_of(settings, purpose), owner, dbname)
    return urls


def _ensure_role(conn: psycopg.Connection, settings: Settings, purpose: str) -> str:
    """The role of a purpose exists and is no superuser; returns the URL the service connects with."""
    admin, path = settings.database_url, settings.db_roles_file
    role = _role_of(settings, purpose)
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if configured_url(settings, purpose):
        if row is None:
            raise StoreError(f"database role {role!r} of CARGOTRACE_{purpose.upper()}_DATABASE_URL does not exist; "
                             f"create it (LOGIN, no superuser) or unset the variable to have {purpose} created")
    elif row is None:
        stored = _read(path)
        key = describe(admin)
        password = stored.get(key, {}).get(purpose) or secrets.token_urlsafe(24)
        # Saved before the role exists: a crash in between cannot strand a role nobody can use.
        stored.setdefault(key, {})[purpose] = password
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(stored, indent=2))
        _create(conn, role, password)
    if row is not None and row[0]:
        raise StoreError(f"database role {role!r} is a superuser; the {purpose} service must not be")
    if configured_url(settings, purpose):
        return configured_url(settings, purpose)
    known = _read(path).get(describe(admin), {}).get(purpose)
    if known is None:
        raise StoreError(
            f"database role {role!r} exists but its password is not in {path}; set "
            f"CARGOTRACE_{purpose.upper()}_DATABASE_URL to a URL with its credentials (a pre-existing role), "
            f"or drop the role to have it created again")
    return make_conninfo(admin, user=role, password=known)


def _ensure_database(conn: psycopg.Connection, dbname: str, owner: str, admin: str) -> None:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
        return
    try:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(owner)))
    except psycopg.errors.DuplicateDatabase:
        return
    except psycopg.Error as exc:
        raise StoreError(f"cannot create database {describe(admin)} owned by {owner}: {exc}".strip()) from None


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
            # Tables and sequences later migrations create are covered too: the owner role runs them
            # (and this connection's role, for a database migrated by an earlier version).
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
        ):
            conn.execute(sql.SQL(statement).format(r=r, o=o, db=db))


def service_urls(settings: Settings) -> dict[str, str]:
    """The URLs ``bootstrap`` stored for this database ({} when none)."""
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
