"""The real API served over HTTP (uvicorn in a thread), a Server-Sent Events reader, and a seeded
world for the dashboard.

The SSE tests and the browser tests need a real server: Starlette's TestClient collects a whole
response before returning it, which an endless stream never finishes.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import uvicorn

from api.app import create_app
from api.tokens import create_token
from runtime.settings import Settings
from tests.integration.world import GTIN_A, GTIN_B, apply, build_world, gs1, scan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_api(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` on a free port; yields the base URL.

    ``timeout_graceful_shutdown``: uvicorn otherwise waits for open event streams to end on
    their own before it stops.
    """
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "the API did not stop"


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: Any
    id: str | None
    received: float  # time.monotonic() when it arrived


class SseReader:
    """Reads one event stream in a thread; ``next()`` hands out the events (comments are skipped)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[SseEvent | BaseException] = queue.Queue()
        self.client = httpx.Client(timeout=httpx.Timeout(5.0, read=60.0))
        self.response: httpx.Response | None = None
        self.status: int | None = None
        self.body: bytes = b""
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, headers or {}, params or {}), daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the event stream did not answer"

    def _read(self, url: str, headers: dict[str, str], params: dict[str, str]) -> None:
        try:
            with self.client.stream("GET", url, headers=headers, params=params) as response:
                self.response, self.status = response, response.status_code
                if response.status_code != 200:
                    self.body = response.read()
                    self._opened.set()
                    return
                self._opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "event" in fields or "data" in fields:
                            data = json.loads(fields.get("data", "null"))
                            self.events.put(SseEvent(fields.get("event", "message"), data, fields.get("id"),
                                                     time.monotonic()))
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except (httpx.HTTPError, RuntimeError) as exc:  # closed by close(): the reader just ends
            self.events.put(exc)
        finally:
            self._opened.set()

    def next(self, timeout: float = 5.0) -> SseEvent:
        item = self.events.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise AssertionError(f"the event stream ended: {item!r}")
        return item

    def next_of(self, kinds: tuple[str, ...], timeout: float = 5.0) -> SseEvent:
        """The next event of one of ``kinds``, skipping others (e.g. a device's first-contact event)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            if event.event in kinds:
                return event

    def ready(self, timeout: float = 10.0) -> int:
        """Wait for the stream's ``ready`` event; returns the id it continues after."""
        event = self.next(timeout)
        assert event.event == "ready", event
        return int(event.data["after"])

    def nothing_more(self, wait: float = 0.7) -> bool:
        try:
            item = self.events.get(timeout=wait)
        except queue.Empty:
            return True
        self.events.put(item)
        return False

    def close(self) -> None:
        """Hang up as a browser tab does: shutting the socket down wakes the reader's blocked read
        (closing the response from this thread would wait for the next heartbeat)."""
        if self.response is not None and self.status == 200:
            sock = self.response.extensions["network_stream"].get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.client.close()
        self._thread.join(10)


@contextmanager
def sse(url: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Iterator[SseReader]:
    reader = SseReader(url, headers, params)
    try:
        yield reader
    finally:
        reader.close()


# --- a world for the dashboard: stock, a shipment on the road with its track and temperatures,
# alarms, devices; times are relative to now so that "today" and "online" mean something ---------

SHIPMENT = "SHP-1"
PUBLIC_TOKEN = "tok-shp-1"
ORIGIN = (52.45, 13.25)       # DC1's yard
DESTINATION = (52.5, 13.4)    # GF-CUST (from build_world)


def seed_dashboard_world(db: psycopg.Connection) -> dict[str, str]:
    """``build_world`` plus what the dashboard shows; returns an API token per role."""
    build_world(db)
    now = datetime.now(UTC)
    soon = (now + timedelta(days=12)).strftime("%y%m%d")
    apply(db, [
        scan("SC-1", "s1", gs1(GTIN_A, lot="L1", expiry="271231"), 0, qty=24),
        scan("SC-1", "s2", gs1(GTIN_A, lot="L2", expiry=soon), 1, qty=12),
        scan("SC-1", "s3", gs1(GTIN_B), 2, qty=10),
        scan("SC-2", "s4", gs1(GTIN_B), 3, mode="putaway", location="DOCK-1", to_location="BIN-A1", qty=6),
        scan("SC-2", "s5", gs1(GTIN_A, lot="L1", expiry="271231"), 4, mode="putaway", location="DOCK-1",
             to_location="BIN-A2", qty=20),
    ])
    db.execute("INSERT INTO profiles (code, temp_min_c, temp_max_c) VALUES ('CHILL', 2, 8)")
    db.execute("INSERT INTO geofences (code, type, lat, lon, radius_m) VALUES ('GF-DC1', 'circle', %s, %s, 400)",
               ORIGIN)
    db.execute("UPDATE sites SET geofence = 'GF-DC1' WHERE code = 'DC1'")
    db.execute("UPDATE shipments SET profile = 'CHILL', status = 'in_transit', created_at = %s, promised_at = %s, "
               "lines = '[{\"sku\": \"SKU-B\", \"qty\": 5}]' WHERE ref = %s",
               (now - timedelta(hours=5), now + timedelta(hours=2), SHIPMENT))
    db.execute("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES "
               "(%s, %s, 'loading', 'first ship scan'), (%s, %s, 'departed', 'left the DC1 yard')",
               (SHIPMENT, now - timedelta(hours=4), SHIPMENT, now - timedelta(hours=3, minutes=30)))
    db.execute("INSERT INTO devices (device_id, kind, site, vehicle) VALUES "
               "('TRK-1', 'gps_tracker', 'DC1', 'TRUCK-1'), ('TS-1', 'env_sensor', 'DC1', 'TRUCK-1')")
    track_start = now - timedelta(hours=3, minutes=30)
    steps = 20
    last = ORIGIN
    for i in range(steps + 1):
        f = i / steps * 0.85  # not there yet
        lat = ORIGIN[0] + (DESTINATION[0] - ORIGIN[0]) * f + 0.01 * math.sin(f * math.pi)
        lon = ORIGIN[1] + (DESTINATION[1] - ORIGIN[1]) * f
        last = (lat, lon)
        db.execute("INSERT INTO positions (ts, received_at, device_id, msg_id, lat, lon, speed_kmh, source, fix_valid) "
                   "VALUES (%s, %s, 'TRK-1', %s, %s, %s, 42, 'json', true)",
                   (track_start + timedelta(minutes=10 * i), now, f"p{i}", lat, lon))
    db.execute("INSERT INTO shipment_state (ref, last_lat, last_lon, last_ts, eta, distance_remaining_km) "
               "VALUES (%s, %s, %s, %s, %s, 4.2)", (SHIPMENT, *last, now - timedelta(minutes=10),
                                                     now + timedelta(minutes=40)))
    excursion = (now - timedelta(hours=2), now - timedelta(hours=1, minutes=30))
    for i in range(0, 4 * 60, 5):
        ts = now - timedelta(hours=4) + timedelta(minutes=i)
        temp = 9.6 if excursion[0] <= ts < excursion[1] else 5 + 1.5 * math.sin(i / 30)
        db.execute("INSERT INTO env_readings (ts, received_at, device_id, msg_id, temp_c, rh_pct) "
                   "VALUES (%s, %s, 'TS-1', %s, %s, 70)", (ts, now, f"t{i}", temp))
    db.execute(
        "INSERT INTO alarms (type, severity, state, device_id, shipment, subject, started_at, cleared_at, peak_value, "
        "message) VALUES ('temperature_high', 'critical', 'cleared', 'TS-1', %s, 'TS-1', %s, %s, 9.6, "
        "'TS-1 above 8 °C'), "
        "('temperature_high', 'critical', 'active', 'ENV-1', NULL, 'ENV-1', %s, NULL, 11.2, 'cold room above 8 °C'), "
        "('device_offline', 'warning', 'active', 'SC-2', NULL, 'SC-2', %s, NULL, NULL, 'SC-2 silent for 40 min')",
        (SHIPMENT, *excursion, now - timedelta(minutes=20), now - timedelta(minutes=40)))
    db.execute("DELETE FROM device_state")
    db.execute("INSERT INTO device_state (device_id, last_seen, last_ts, messages) VALUES "
               "('TRK-1', now(), now(), 21), ('TS-1', now(), now(), 48), ('ENV-1', now(), now(), 300), "
               "('SC-1', now() - interval '2 minutes', now(), 5), ('SC-2', now() - interval '40 minutes', now(), 9)")
    db.execute("INSERT INTO device_status (ts, received_at, ts_source, device_id, msg_id, battery_pct) "
               "VALUES (now(), now(), 'device', 'TRK-1', 'b1', 76), (now(), now(), 'device', 'SC-1', 'b2', 31)")
    return {role: create_token(db, role, f"desk-{role}") for role in ("viewer", "operator")}
