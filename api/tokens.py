"""API tokens: random, shown once, stored as a SHA-256 hash; optional expiry; revocable."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

ROLES = ("viewer", "operator", "admin")
_PREFIX = "ct_"
# last_used_at is refreshed at most this often, so a busy client does not write on every request.
LAST_USED_RESOLUTION_S = 60


@dataclass(frozen=True)
class TokenInfo:
    id: int
    role: str
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: psycopg.Connection, role: str, label: str | None = None,
                 expires_in: timedelta | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError("the expiry must be in the future")
    token = _PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute("INSERT INTO api_tokens (token_hash, role, label, expires_at) "
                     "VALUES (%s, %s, %s, now() + %s)", (hash_token(token), role, label, expires_in))
    return token


_VALID = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


def lookup_token(conn: psycopg.Connection, token: str) -> tuple[str, str | None, int] | None:
    """(role, label, id) of a valid token (not revoked, not expired); None otherwise.
    Records the use (at most once per LAST_USED_RESOLUTION_S)."""
    row = conn.execute(
        f"UPDATE api_tokens SET last_used_at = now() WHERE token_hash = %s AND {_VALID} "
        "AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %s)) "
        "RETURNING role, label, id", (hash_token(token), LAST_USED_RESOLUTION_S)).fetchone()
    if row is None:
        row = conn.execute(f"SELECT role, label, id FROM api_tokens WHERE token_hash = %s AND {_VALID}",
                           (hash_token(token),)).fetchone()
    return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]), int(row[2]))


STREAM_TICKET_TTL_S = 60


def issue_ticket(conn: psycopg.Connection, token_id: int) -> tuple[str, datetime]:
    """A short-lived stream ticket standing for ``token_id``; only its hash is stored."""
    ticket = "st_" + secrets.token_urlsafe(24)
    with conn.transaction():
        conn.execute("DELETE FROM stream_tickets WHERE expires_at < now()")
        row = conn.execute("INSERT INTO stream_tickets (ticket_hash, token_id, expires_at) "
                           "VALUES (%s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
                           (hash_token(ticket), token_id, STREAM_TICKET_TTL_S)).fetchone()
    assert row is not None
    return ticket, row[0]


def redeem_ticket(conn: psycopg.Connection, ticket: str) -> tuple[str, str | None, int] | None:
    """(role, label, id) of the token behind an unexpired ticket, if that token is still valid."""
    row = conn.execute(
        "SELECT t.role, t.label, t.id FROM stream_tickets s JOIN api_tokens t ON t.id = s.token_id "
        "WHERE s.ticket_hash = %s AND s.expires_at > now() "
        "AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
        (hash_token(ticket),)).fetchone()
    return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]), int(row[2]))


def role_of(conn: psycopg.Connection, token: str) -> str | None:
    """The role of a valid token (not revoked, not expired); None otherwise."""
    found = lookup_token(conn, token)
    return None if found is None else found[0]


def token_is_valid(conn: psycopg.Connection, token_id: int) -> bool:
    row = conn.execute(f"SELECT 1 FROM api_tokens WHERE id = %s AND {_VALID}", (token_id,)).fetchone()
    return row is not None


def list_tokens(conn: psycopg.Connection) -> list[TokenInfo]:
    rows = conn.execute("SELECT id, role, label, created_at, expires_at, last_used_at, revoked_at "
                        "FROM api_tokens ORDER BY id").fetchall()
    return [TokenInfo(*row) for row in rows]


def revoke_token(conn: psycopg.Connection, token_id: int) -> bool:
    """Revoke; False if there is no such token. Revoking twice keeps the first time."""
    with conn.transaction():
        row = conn.execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s "
                           "RETURNING id", (token_id,)).fetchone()
    return row is not None
