"""Tokens (expiry, revocation, last use), the audit log of API writes and the CLI that manages
them, as an outside client (issue 10 points 5 and 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from runtime.settings import Settings
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import build_world

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


@pytest.fixture
def anonymous(api_settings: Settings, world: psycopg.Connection) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as client:
        yield client


def _me(api_settings: Settings, token: str) -> int:
    with TestClient(create_app(api_settings), headers={"Authorization": f"Bearer {token}"}) as client:
        return client.get("/api/v1/me").status_code


def test_expired_and_revoked_tokens_are_refused(api_settings: Settings, world: psycopg.Connection) -> None:
    token = create_token(world, "viewer", "short", timedelta(hours=1))
    assert _me(api_settings, token) == 200
    world.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE label = 'short'")
    assert _me(api_settings, token) == 401
    other = create_token(world, "viewer", "revoked")
    world.execute("UPDATE api_tokens SET revoked_at = now() WHERE label = 'revoked'")
    assert _me(api_settings, other) == 401
    with pytest.raises(ValueError, match="future"):
        create_token(world, "viewer", "past", timedelta(seconds=-1))


def test_last_used_at_is_recorded(api_settings: Settings, world: psycopg.Connection) -> None:
    token = create_token(world, "viewer", "used")
    assert world.execute("SELECT last_used_at FROM api_tokens WHERE label = 'used'").fetchone() == (None,)
    assert _me(api_settings, token) == 200
    row = world.execute("SELECT last_used_at > now() - interval '1 minute' FROM api_tokens "
                        "WHERE label = 'used'").fetchone()
    assert row == (True,)


def test_every_api_write_is_audited_with_before_and_after(world: psycopg.Connection, client_for: ClientFor) -> None:
    admin = client_for("admin", "alice")
    assert admin.put("/api/v1/sites/DC9", json={"name": "First"}).status_code == 201
    assert admin.put("/api/v1/sites/DC9", json={"name": "Second"}).status_code == 200
    operator = client_for("operator", "bob")
    ticket = operator.post("/api/v1/tickets", json={"type": "complaint", "summary": "dented"})
    assert ticket.status_code == 201
    assert operator.put("/api/v1/sites/DC9", json={"name": "Third"}).status_code == 403  # refused: audited too
    refused = client_for("operator").get("/api/v1/audit")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    items = admin.get("/api/v1/audit", params={"limit": 10}).json()["items"]
    summary = [(i["actor"], i["role"], i["method"], i["path"], i["status"]) for i in items]
    assert summary == [("bob", "operator", "PUT", "/api/v1/sites/DC9", 403),
                       ("bob", "operator", "POST", "/api/v1/tickets", 201),
                       ("alice", "admin", "PUT", "/api/v1/sites/DC9", 200),
                       ("alice", "admin", "PUT", "/api/v1/sites/DC9", 201)]
    second, first = items[2], items[3]
    assert first["before"] is None and first["after"]["name"] == "First"
    assert second["before"]["name"] == "First" and second["after"]["name"] == "Second"
    assert second["request"] == {"name": "Second"}
    assert items[0]["after"] is None and items[1]["request"]["summary"] == "dented"
    assert world.execute("SELECT name FROM sites WHERE code = 'DC9'").fetchone() == ("Second",)


def test_unauthenticated_writes_leave_no_audit_row(world: psycopg.Connection, anonymous: TestClient) -> None:
    assert anonymous.put("/api/v1/sites/DC8", json={"name": "x"}).status_code == 401
    assert world.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARGOTRACE_DATABASE_URL": database_url, "CARGOTRACE_LOG_LEVEL": "WARNING",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_token_create_list_revoke(api_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    created = _cli(database_url, "token", "create", "--role", "viewer", "--label", "cli-dash", "--expires-in", "30d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert _me(api_settings, token) == 200
    row = db.execute("SELECT id, expires_at - created_at FROM api_tokens WHERE label = 'cli-dash'").fetchone()
    assert row is not None and timedelta(days=29, hours=23) < row[1] <= timedelta(days=30)
    listed = _cli(database_url, "token", "list")
    assert listed.returncode == 0 and "cli-dash" in listed.stdout and "valid" in listed.stdout
    assert token not in listed.stdout
    revoked = _cli(database_url, "token", "revoke", str(row[0]))
    assert revoked.returncode == 0, revoked.stderr
    assert _me(api_settings, token) == 401
    assert "revoked" in _cli(database_url, "token", "list").stdout
    missing = _cli(database_url, "token", "revoke", "999999")
    assert missing.returncode == 1 and "no token with id" in missing.stderr
    bad = _cli(database_url, "token", "create", "--role", "viewer", "--expires-in", "soon")
    assert bad.returncode == 1 and "invalid duration" in bad.stderr


def test_dead_letters_list_prints_device_markup_literally(database_url: str, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO dead_letters (received_at, last_received_at, topic, device_id, reason, detail, "
               "payload, payload_size, fingerprint) VALUES (now(), now(), 't', '[blink]evil[/blink]', 'invalid_field', "
               "'[bold red]FAKE ALERT[/bold red] [link=http://x]y[/link]', '\\x00', 1, '\\x01')")
    out = _cli(database_url, "dead-letters", "list")
    assert out.returncode == 0, out.stderr
    assert "[bold red]FAKE ALERT[/bold red]" in out.stdout and "[blink]evil[/blink]" in out.stdout
