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
        raise _unreachable(url, exc) from None


def connect_server(url: str) -> psycopg.Connection:
    """An autocommit connection to the server's maintenance database ``postgres`` (for roles and
    CREATE DATABASE, before the URL's database exists); errors name the URL's database."""
    try:
        return psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise _unreachable(url, exc) from None


def _unreachable(url: str, exc: psycopg.OperationalError) -> StoreError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(
        f"cannot connect to PostgreSQL at {describe(url)}: {first}. Start the local stack with "
        "`cargotrace up` (after `make setup`), or point CARGOTRACE_DATABASE_URL at your server.")


def ensure_database(url: str) -> bool:
    """Create the URL's database if it does not exist (local stack). True when created."""
    info = conninfo_to_dict(url)
    name = str(info.get("dbname") or "")
    with connect_server(url) as conn:
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


def explain_extension_failure(exc: psycopg.Error) -> str:
    text = str(exc)
    if "timescaledb" in text and ("control file" in text or "not available" in text):
        return ("the TimescaleDB extension is not installed in this PostgreSQL server. Run `make setup` "
                "(builds it from Debian's source package) or install TimescaleDB on your server.")
    if "preload" in text:
        return ("TimescaleDB must be preloaded: add shared_preload_libraries = 'timescaledb' to "
                "postgresql.conf and restart PostgreSQL (`make setup` does this for the local server).")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return (f"{text.strip()}. Migrations run as the schema's owner role, which is no superuser: what "
                "needs one belongs in the bootstrap (`cargotrace db bootstrap`, ingest/db_roles.py).")
    return text.strip()


def applied_versions(conn: psycopg.Connection) -> set[str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction, as the URL's role (the
    schema's owner role in a deployment; see ingest/db_roles.py). Returns their names."""
    done: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            _ensure_migrations_table(conn)
            applied = applied_versions(conn)
            for migration in migrations():
                if migration.version in applied:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute("INSERT INTO schema_migrations (version, name, applied_by) "
                                     "VALUES (%s, %s, current_user)", (migration.version, migration.name))
                except psycopg.Error as exc:
                    raise StoreError(f"migration {migration.name} failed: "
                                     f"{explain_extension_failure(exc)}") from None
                done.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return done


def _ensure_migrations_table(conn: psycopg.Connection) -> None:
    """schema_migrations, with the role that applied each migration (NULL: before it was recorded)."""
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version text PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now(), applied_by text)")
        # Databases migrated before applied_by existed; checked first, so that an up-to-date schema
        # costs no exclusive lock.
        if not conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = 'schema_migrations'::regclass "
                            "AND attname = 'applied_by' AND NOT attisdropped").fetchone():
            conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS applied_by text")
    except psycopg.Error as exc:
        raise StoreError(f"cannot prepare schema_migrations as {conn.info.user}: "
                         f"{str(exc).strip()}. Run `cargotrace db bootstrap` (as a superuser) first, which "
                         "hands the schema to the owner role.") from None
