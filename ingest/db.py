"""PostgreSQL connections and migrations; psycopg errors become ``StoreError`` with advice."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MIGRATION_LOCK = 0x63_61_72_67  # "carg": one migrator at a time across processes


class StoreError(Exception):
    """The database is unreachable or unusable; the message says what to do."""


def describe(url: str) -> str:
    """host:port/dbname of a URL, without credentials, for messages."""
    info = conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(url: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=5, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot connect to PostgreSQL at {describe(url)}: {first}. Start the local stack with "
            "`cargotrace up` (after `make setup`), or point CARGOTRACE_DATABASE_URL at your server."
        ) from None


def ensure_database(url: str) -> bool:
    """Create the URL's database if it does not exist (local stack). True when created."""
    info = conninfo_to_dict(url)
    name = str(info.get("dbname") or "")
    with connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False
        except psycopg.Error as exc:
            raise StoreError(f"cannot create database {name!r} at {describe(url)}: {exc}") from None
    return True


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("ingest.migrations").iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append(Migration(match.group(1), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def _explain_migration_failure(exc: psycopg.Error) -> str:
    text = str(exc)
    if "timescaledb" in text and ("control file" in text or "not available" in text):
        return ("the TimescaleDB extension is not installed in this PostgreSQL server. Run `make setup` "
                "(builds it from Debian's source package) or install TimescaleDB on your server.")
    if "preload" in text:
        return ("TimescaleDB must be preloaded: add shared_preload_libraries = 'timescaledb' to "
                "postgresql.conf and restart PostgreSQL (`make setup` does this for the local server).")
    return text.strip()


def applied_versions(conn: psycopg.Connection) -> set[str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction. Returns their names."""
    done: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version text PRIMARY KEY, name text NOT NULL, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            applied = applied_versions(conn)
            for migration in migrations():
                if migration.version in applied:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                     (migration.version, migration.name))
                except psycopg.Error as exc:
                    raise StoreError(f"migration {migration.name} failed: "
                                     f"{_explain_migration_failure(exc)}") from None
                done.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return done
