"""API tokens: random, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

import psycopg

ROLES = ("viewer", "operator", "admin")
_PREFIX = "ct_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: psycopg.Connection, role: str, label: str | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    token = _PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute("INSERT INTO api_tokens (token_hash, role, label) VALUES (%s, %s, %s)",
                     (hash_token(token), role, label))
    return token


def role_of(conn: psycopg.Connection, token: str) -> str | None:
    row = conn.execute("SELECT role FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
                       (hash_token(token),)).fetchone()
    return None if row is None else str(row[0])


def lookup_token(conn: psycopg.Connection, token: str) -> tuple[str, str | None] | None:
    """(role, label) of a valid, unrevoked token; None otherwise."""
    row = conn.execute("SELECT role, label FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
                       (hash_token(token),)).fetchone()
    return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))
