"""GET /api/v1/events/stream against a real uvicorn, a real PostgreSQL and the outbox triggers;
and GET /api/v1/telemetry/{device_id}."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from api.tokens import create_token
from ingest.db import connect
from runtime.settings import Settings
from tests.e2e.fixtures import SseReader, running_api, sse
from tests.integration.api_fixtures import ClientFor
from tests.integration.world import GTIN_B, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration

STREAM = "/api/v1/events/stream"


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


@pytest.fixture
def api(api_settings: Settings, world: psycopg.Connection) -> Iterator[str]:
    with running_api(api_settings) as url:
        yield url


@pytest.fixture
def auth(world: psycopg.Connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(world, 'viewer', 'sse-test')}"}


def insert_movement(conn: psycopg.Connection, qty: int = 1, ref: str | None = None) -> int:
    row = conn.execute(
        "INSERT INTO movements (ts, sku, qty, from_location, to_location, biz_step, source, ref) "
        "VALUES (now(), 'SKU-B', %s, 'SUP-ACME', 'DOCK-1', 'receiving', 'api', %s) RETURNING id", (qty, ref)).fetchone()
    assert row is not None
    return int(row[0])


def insert_alarm(conn: psycopg.Connection) -> int:
    row = conn.execute("INSERT INTO alarms (type, severity, state, device_id, subject, started_at, message) "
                       "VALUES ('temperature_high', 'critical', 'active', 'ENV-1', 'ENV-1', now(), 'too warm') "
                       "RETURNING id").fetchone()
    assert row is not None
    return int(row[0])


def test_movement_alarm_and_shipment_event_arrive_within_a_second(api: str, auth: dict[str, str],
                                                                   world: psycopg.Connection) -> None:
    alarm_id = insert_alarm(world)
    with sse(api + STREAM, auth) as stream:
        stream.ready()

        # A movement through the real ingest pipeline (a scan applied in one transaction).
        committed = time.monotonic()
        apply(world, [scan("SC-1", "live-1", gs1(GTIN_B), 0, qty=3)])
        event = stream.next_of(("movement",), 2)  # SC-1's first message is also a `device` event
        assert event.received - committed < 1.0
        assert event.event == "movement"
        assert event.data["sku"] == "SKU-B" and event.data["qty"] == 3
        assert event.data["from_location"] == "SUP-ACME" and event.data["to_location"] == "DOCK-1"
        assert event.data["msg_id"] == "live-1" and event.data["ts"].endswith("Z")

        committed = time.monotonic()
        world.execute("UPDATE alarms SET acknowledged = true, ack_by = 'op', ack_note = 'seen', ack_at = now() "
                      "WHERE id = %s", (alarm_id,))
        event = stream.next(2)
        assert event.received - committed < 1.0
        assert (event.event, event.data["id"], event.data["acknowledged"], event.data["ack_note"]) == (
            "alarm", alarm_id, True, "seen")

        committed = time.monotonic()
        world.execute("INSERT INTO shipment_events (shipment, ts, type, detail) "
                      "VALUES ('SHP-1', '2026-11-20T09:00:00+01:00', 'loading', 'first ship scan')")
        event = stream.next(2)
        assert event.received - committed < 1.0
        assert event.event == "shipment_event"
        assert event.data == {"shipment": "SHP-1", "ts": "2026-11-20T08:00:00Z", "type": "loading",
                              "detail": "first ship scan"}

        # A change nobody watches (updated_at only) is no event.
        world.execute("UPDATE alarms SET updated_at = now() WHERE id = %s", (alarm_id,))
        assert stream.nothing_more()


def test_ids_follow_commit_order_so_resuming_never_skips(api: str, auth: dict[str, str], world: psycopg.Connection,
                                                         database_url: str) -> None:
    """The transaction that inserts first but commits last still gets the larger id."""
    with sse(api + STREAM, auth) as stream, connect(database_url) as slow:
        stream.ready()
        slow_movement = insert_movement(slow, qty=7)           # open transaction, not committed
        fast_movement = insert_movement(world, qty=8)          # autocommit: commits first
        first = stream.next(2)
        slow.commit()
        second = stream.next(2)
    assert slow_movement < fast_movement  # the ledger's own ids are in insert order...
    assert [first.data["id"], second.data["id"]] == [fast_movement, slow_movement]
    assert first.id is not None and second.id is not None
    assert int(first.id) < int(second.id)  # ...the events' ids in commit order


def test_resume_with_last_event_id_without_gaps_or_repeats(api: str, auth: dict[str, str],
                                                            world: psycopg.Connection) -> None:
    with sse(api + STREAM, auth) as stream:
        stream.ready()
        seen = [insert_movement(world, qty=q) for q in (1, 2)]
        events = [stream.next(2), stream.next(2)]
    assert [e.data["id"] for e in events] == seen
    last_id = events[-1].id
    assert last_id is not None

    missed = [insert_movement(world, qty=q) for q in (3, 4, 5)]  # while nobody listens
    with sse(api + STREAM, {**auth, "Last-Event-ID": last_id}) as stream:
        assert stream.ready() == int(last_id)
        replayed = [stream.next(2) for _ in missed]
        live = insert_movement(world, qty=6)
        after = stream.next(2)
        assert stream.nothing_more()
    assert [e.data["id"] for e in replayed] == missed
    assert after.data["id"] == live
    ids = [int(e.id or 0) for e in [*events, *replayed, after]]
    assert ids == sorted(set(ids)), "event ids repeat or go backwards"

    # The same with the query parameter (a client that opens a new EventSource to resume).
    with sse(api + STREAM, auth, {"lastEventId": last_id}) as stream:
        stream.ready()
        assert [stream.next(2).data["id"] for _ in range(4)] == [*missed, live]


def test_auth_header_or_stream_ticket(api: str, world: psycopg.Connection) -> None:
    token = create_token(world, "viewer", "sse-auth")
    with sse(api + STREAM) as anonymous:
        assert anonymous.status == 401
        assert b'"unauthorized"' in anonymous.body
    with sse(api + STREAM, params={"ticket": "not-a-ticket"}) as bad:
        assert bad.status == 401
    # A long-lived token in the URL is no longer accepted: only a short-lived ticket.
    with sse(api + STREAM, params={"access_token": token}) as by_token_in_url:
        assert by_token_in_url.status == 401
    ticket = httpx.post(api + "/api/v1/stream-tickets", headers={"Authorization": f"Bearer {token}"}).json()["ticket"]
    with sse(api + STREAM, params={"ticket": ticket}) as by_ticket:
        assert by_ticket.status == 200
        by_ticket.ready()
    with sse(api + STREAM, {"Last-Event-ID": "abc", "Authorization": f"Bearer {token}"}) as malformed:
        assert malformed.status == 400


def test_two_api_processes_both_receive_every_event(api_settings: Settings, api: str, auth: dict[str, str],
                                                    world: psycopg.Connection) -> None:
    with running_api(api_settings) as other, sse(api + STREAM, auth) as one, sse(other + STREAM, auth) as two:
        one.ready()
        two.ready()
        movement = insert_movement(world)
        a, b = one.next(2), two.next(2)
    assert (a.id, a.data["id"]) == (b.id, b.data["id"])
    assert a.data["id"] == movement


def test_one_listener_connection_serves_every_stream(api: str, auth: dict[str, str],
                                                    world: psycopg.Connection) -> None:
    def listeners() -> int:
        row = world.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cargotrace-events' "
                            "AND datname = current_database()").fetchone()
        return int(row[0]) if row else 0

    readers = [SseReader(api + STREAM, auth) for _ in range(3)]
    try:
        for reader in readers:
            reader.ready()
        assert listeners() == 1
        movement = insert_movement(world)
        assert all(reader.next_of(("movement",), 10).data["id"] == movement for reader in readers)
    finally:
        for reader in readers:
            reader.close()


# --- GET /telemetry/{device_id} ----------------------------------------------------------------

def test_telemetry_buckets_env_readings_and_speeds(client_for: ClientFor, world: psycopg.Connection) -> None:
    t0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    for minute, temp, rh in [(0, 4.0, 60.0), (2, 6.0, None), (5, 9.5, 70.0), (11, 5.0, 65.0)]:
        world.execute("INSERT INTO env_readings (ts, received_at, device_id, msg_id, temp_c, rh_pct) "
                      "VALUES (%s, %s, 'ENV-1', %s, %s, %s)", (t0 + timedelta(minutes=minute), t0, f"e{minute}",
                                                                temp, rh))
    world.execute("INSERT INTO devices (device_id, kind) VALUES ('TRK-9', 'gps_tracker')")
    for minute, speed in [(0, 40.0), (1, 60.0)]:
        world.execute("INSERT INTO positions (ts, received_at, device_id, msg_id, lat, lon, speed_kmh, source, "
                      "fix_valid) VALUES (%s, %s, 'TRK-9', %s, 52.5, 13.4, %s, 'json', true)",
                      (t0 + timedelta(minutes=minute), t0, f"p{minute}", speed))
    viewer = client_for("viewer")
    params = {"from": "2026-11-20T08:00:00Z", "to": "2026-11-20T08:15:00Z", "bucket": "5 minutes"}
    body = viewer.get("/api/v1/telemetry/ENV-1", params=params).json()
    assert (body["kind"], body["bucket"], body["bucket_s"], body["from"], body["next"]) == (
        "env_sensor", "5 minutes", 300, "2026-11-20T08:00:00Z", None)
    assert [i["bucket"] for i in body["items"]] == ["2026-11-20T08:00:00Z", "2026-11-20T08:05:00Z",
                                                    "2026-11-20T08:10:00Z"]
    first = body["items"][0]
    assert first["count"] == 2
    assert first["temp_c"] == {"min": 4.0, "max": 6.0, "avg": 5.0, "count": 2}
    assert first["rh_pct"] == {"min": 60.0, "max": 60.0, "avg": 60.0, "count": 1}

    speeds = viewer.get("/api/v1/telemetry/TRK-9", params=params).json()
    assert speeds["items"] == [{"bucket": "2026-11-20T08:00:00Z", "count": 2, "temp_c": None, "rh_pct": None,
                                "speed_kmh": {"min": 40.0, "max": 60.0, "avg": 50.0, "count": 2}}]

    # Default bucket from the range: 15 minutes fits in 300 buckets of 10 seconds.
    assert viewer.get("/api/v1/telemetry/ENV-1", params={k: params[k] for k in ("from", "to")}
                      ).json()["bucket"] == "10 seconds"
    bad = viewer.get("/api/v1/telemetry/ENV-1", params={**params, "bucket": "5 minutes; DROP TABLE x"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    backwards = viewer.get("/api/v1/telemetry/ENV-1", params={**params, "from": params["to"], "to": params["from"]})
    assert backwards.status_code == 422
    too_many = viewer.get("/api/v1/telemetry/ENV-1", params={"from": "2020-01-01T00:00:00Z", "to": params["to"],
                                                              "bucket": "10 seconds"})
    assert too_many.status_code == 422
    assert viewer.get("/api/v1/telemetry/NOPE").status_code == 404


# --- the dashboard's extensions: /me and /overview ----------------------------------------------

def test_me_and_overview_counts(client_for: ClientFor, world: psycopg.Connection) -> None:
    operator = client_for("operator")
    assert operator.get("/api/v1/me").json() == {"role": "operator", "label": "test-operator"}
    insert_alarm(world)
    insert_movement(world)
    world.execute("INSERT INTO device_state (device_id, last_seen, last_ts) VALUES ('SC-1', now(), now()), "
                  "('SC-2', now() - interval '2 hours', now())")
    head = world.execute("SELECT max(id) FROM events_outbox").fetchone()
    body = operator.get("/api/v1/overview").json()
    assert body["events_head"] == (head[0] if head else None)
    assert body["alarms_active"] == {"critical": 1}
    assert body["alarms_unacknowledged"] == 1
    assert body["shipments"] == {"planned": 1}
    assert (body["devices_online"], body["devices_total"]) == (1, 4)
    assert body["movements_since"] == 1
    later = operator.get("/api/v1/overview", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert later["movements_since"] == 0
