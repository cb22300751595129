"""Event stream abuse, as an outside client against a real uvicorn (issue 10 points 4 and 9):
caps per token and in total, revoked tokens' streams closing, stream tickets instead of tokens in URLs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from api.tokens import create_token
from runtime.settings import Settings
from tests.e2e.fixtures import SseReader, running_api, sse
from tests.integration.world import build_world

pytestmark = pytest.mark.integration

STREAM = "/api/v1/events/stream"
TICKETS = "/api/v1/stream-tickets"
DEADLINE_S = 60.0


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


@pytest.fixture
def api(api_settings: Settings, world: psycopg.Connection) -> Iterator[str]:
    with running_api(api_settings.model_copy(update={"api_streams_total": 6})) as url:
        yield url


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _open(api: str, headers: dict[str, str]) -> SseReader:
    reader = SseReader(api + STREAM, headers)
    assert reader.status == 200, reader.body
    reader.ready()
    return reader


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_fifth_stream_of_one_token_gets_429_until_one_closes(api: str, world: psycopg.Connection) -> None:
    headers = _bearer(create_token(world, "viewer", "greedy"))
    readers = [_open(api, headers) for _ in range(4)]
    try:
        with sse(api + STREAM, headers) as fifth:
            assert fifth.status == 429
            assert b'"too_many_requests"' in fifth.body and b"4 open event streams" in fifth.body
        # Another token is not affected by this one's cap.
        other = _open(api, _bearer(create_token(world, "viewer", "modest")))
        other.close()
        readers.pop().close()

        def one_more_opens() -> bool:
            with sse(api + STREAM, headers) as again:
                return again.status == 200
        _until(one_more_opens, "the closed stream's slot to be given back")
    finally:
        for reader in readers:
            reader.close()


def test_total_cap_per_process_gives_429(api: str, world: psycopg.Connection) -> None:
    readers = [_open(api, _bearer(create_token(world, "viewer", f"t{i}"))) for i in range(6)]  # the cap is 6
    try:
        with sse(api + STREAM, _bearer(create_token(world, "viewer", "seventh"))) as seventh:
            assert seventh.status == 429 and b"6 event streams" in seventh.body
    finally:
        for reader in readers:
            reader.close()


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_revoked_or_expired_tokens_stream_closes(api: str, world: psycopg.Connection, how: str) -> None:
    token = create_token(world, "viewer", "to-revoke")
    by_header = _open(api, _bearer(token))
    ticket = httpx.post(api + TICKETS, headers=_bearer(token)).json()["ticket"]
    by_ticket = SseReader(api + STREAM, params={"ticket": ticket})
    by_ticket.ready()
    column = "revoked_at" if how == "revoked" else "expires_at"
    world.execute(f"UPDATE api_tokens SET {column} = now() WHERE label = 'to-revoke'")
    revoked_at = time.monotonic()
    _until(lambda: not by_header._thread.is_alive() and not by_ticket._thread.is_alive(), "the streams to close")
    # By design within REVALIDATE_S (5 s); the figure is printed, not asserted (loaded CI machines).
    print(f"streams closed {time.monotonic() - revoked_at:.1f} s after the {how} token")
    with sse(api + STREAM, params={"ticket": ticket}) as again:
        assert again.status == 401


def test_stream_ticket_is_short_lived_and_needs_a_token(api: str, world: psycopg.Connection) -> None:
    assert httpx.post(api + TICKETS).status_code == 401
    token = create_token(world, "viewer", "ticket-user")
    answer = httpx.post(api + TICKETS, headers=_bearer(token))
    assert answer.status_code == 201
    body = answer.json()
    assert body["ticket"].startswith("st_") and token not in body["ticket"]
    row = world.execute("SELECT expires_at - now() FROM stream_tickets").fetchone()
    assert row is not None and 0 < row[0].total_seconds() <= 60
    assert world.execute("SELECT count(*) FROM stream_tickets WHERE ticket_hash = %s",
                         (body["ticket"],)).fetchone() == (0,)  # only a hash is stored
    world.execute("UPDATE stream_tickets SET expires_at = now() - interval '1 second'")
    with sse(api + STREAM, params={"ticket": body["ticket"]}) as expired:
        assert expired.status == 401 and b"stream ticket" in expired.body
