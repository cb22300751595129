"""`cargotrace demo`: the local stack, the platform, and sample traffic a person can watch.

Demo devices get real broker credentials and publish over MQTT exactly as field devices do:
every kind of message, an offline-buffer array, a duplicate, and a few bad messages that must
end up as dead letters, not lost and not crashing anything.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from devices.provisioning import DeviceSpec, add_device, rotate_device
from ingest.db import connect
from runtime.settings import Settings

if TYPE_CHECKING:
    from cli.api_server import ApiServer

console = Console()
T = TypeVar("T")

_WORLD_SQL = [
    "INSERT INTO sites (code, name) VALUES ('DC1', 'Demo distribution centre') ON CONFLICT DO NOTHING",
    *[f"INSERT INTO locations (code, site, type, name) VALUES ('{c}', 'DC1', '{t}', '{n}') ON CONFLICT DO NOTHING"
      for c, t, n in [("SUP-DEMO", "supplier", "Demo supplier"), ("DOCK-1", "dock", "Dock door 1"),
                      ("DOCK-1-IN", "internal", "Behind dock door 1"), ("BIN-A1", "internal", "Bin A1"),
                      ("STAGE-1", "staging", "Outbound staging"), ("LOSS", "inventory_loss", "Inventory loss")]],
    "INSERT INTO items (sku, name, gtin) VALUES ('YOG-6', 'Yoghurt 6-pack', '09506000134352') ON CONFLICT DO NOTHING",
    "INSERT INTO items (sku, name, gtin) VALUES ('CRATE', 'Returnable crate', '80614141123458') ON CONFLICT DO NOTHING",
]
_DEVICES = [
    DeviceSpec("demo-scanner", "scanner", site="DC1", location="DOCK-1", mode="receive"),
    DeviceSpec("demo-gate", "rfid_gate", site="DC1", gate={"outer": {"antennas": [1], "location": "DOCK-1"},
                                                           "inner": {"antennas": [2], "location": "DOCK-1-IN"}}),
    DeviceSpec("demo-tracker", "gps_tracker", site="DC1"),
    DeviceSpec("demo-sensor", "env_sensor", site="DC1", location="BIN-A1"),
]


@dataclass(frozen=True)
class DemoDevice:
    device_id: str
    password: str


def provision_demo(settings: Settings, conn: psycopg.Connection) -> list[DemoDevice]:
    with conn.transaction():
        for statement in _WORLD_SQL:
            conn.execute(statement.encode())
    out = []
    for spec in _DEVICES:
        exists = conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (spec.device_id,)).fetchone()
        creds = rotate_device(settings, conn, spec.device_id) if exists else add_device(settings, conn, spec)
        out.append(DemoDevice(spec.device_id, creds.password))
    return out


def _samples(now: datetime, run: str) -> list[tuple[str, str, bytes, str]]:
    """(device, kind, payload, what it shows)."""
    def j(obj: object) -> bytes:
        return orjson.dumps(obj)

    ts = now.isoformat()
    rmc = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
    return [
        ("demo-scanner", "scan", j({"msg_id": f"{run}-s1", "ts": ts,
                                    "code": "]C10109506000134352" "10LOT42\x1d17261231", "qty": 12}),
         "GS1-128 receipt: 12 x YOG-6 lot LOT42 into DOCK-1"),
        ("demo-scanner", "scan", j({"msg_id": f"{run}-s2", "ts": ts, "code": "]C10109506000134352" "10LOT42",
                                    "mode": "putaway", "to_location": "BIN-A1", "qty": 12}), "putaway to BIN-A1"),
        ("demo-gate", "rfid", j({"msg_id": f"{run}-r1", "ts": ts, "reads": [
            {"epc": "3074257BF7194E4000001A85", "antenna": a, "rssi": r,
             "ts": (now + timedelta(milliseconds=ms)).isoformat()}
            for a, r, ms in [(1, -60, 0), (1, -48, 300), (1, -55, 600),
                             (2, -58, 900), (2, -46, 1200), (2, -57, 1500)]]}),
         "a tagged crate passes the dock door outside -> inside"),
        ("demo-tracker", "position", j({"msg_id": f"{run}-p1", "ts": ts, "lat": 52.5200, "lon": 13.4050,
                                        "speed_kmh": 42.5}), "GPS position (JSON)"),
        ("demo-tracker", "position", j({"msg_id": f"{run}-p2", "ts": ts, "nmea": rmc}), "GPS position (NMEA RMC)"),
        ("demo-sensor", "env", j([{"msg_id": f"{run}-e{i}", "ts": (now - timedelta(minutes=5 - i)).isoformat(),
                                   "temp_c": 4.0 + i / 10, "rh_pct": 60} for i in range(5)]),
         "cold-room readings flushed as one array"),
        ("demo-sensor", "status", j({"msg_id": f"{run}-h1", "battery_pct": 81, "fw": "2.3.1"}), "heartbeat"),
        ("demo-sensor", "env", j({"msg_id": f"{run}-e0", "ts": (now - timedelta(minutes=5)).isoformat(),
                                  "temp_c": 4.0, "rh_pct": 60}), "a duplicate (applied once)"),
        ("demo-sensor", "env", b'{"msg_id": "broken", "temp_c": 4.1', "BAD: malformed JSON"),
        ("demo-sensor", "env", j({"msg_id": f"{run}-bad1", "ts": ts, "temp_c": "cold"}), "BAD: wrong type"),
        ("demo-sensor", "env", j({"msg_id": f"{run}-bad2", "ts": (now + timedelta(hours=1)).isoformat(),
                                  "temp_c": 3}), "BAD: timestamp an hour in the future"),
        ("demo-scanner", "scan", j({"msg_id": f"{run}-bad3", "code": "]C10109506000134353"}),
         "BAD: GTIN with a wrong check digit"),
        ("demo-tracker", "position", j({"msg_id": f"{run}-bad4", "ts": ts, "nmea": rmc[:-1] + "B"}),
         "BAD: NMEA checksum"),
        ("demo-sensor", "env", j({"msg_id": f"{run}-bad5", "ts": ts, "temp_c": 1, "pad": "x" * 300_000}),
         "BAD: 300 KB payload"),
    ]


def publish_samples(settings: Settings, devices: list[DemoDevice], run: str) -> int:
    clients: dict[str, mqtt.Client] = {}
    for d in devices:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=d.device_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(d.device_id, d.password)
        client.connect(settings.mqtt_host, settings.mqtt_port)
        client.loop_start()
        clients[d.device_id] = client
    table = Table(title="published over MQTT (QoS 1, each device with its own credentials)")
    table.add_column("device")
    table.add_column("kind")
    table.add_column("what")
    samples = _samples(datetime.now(UTC), run)
    for device_id, kind, payload, what in samples:
        info = clients[device_id].publish(f"{settings.topic_prefix}/dev/{device_id}/{kind}", payload, qos=1)
        info.wait_for_publish(10)
        table.add_row(device_id, kind, what)
    for client in clients.values():
        client.disconnect()
        client.loop_stop()
    console.print(table)
    return len(samples)


def show_state(conn: psycopg.Connection, since: datetime) -> None:
    arrived = Table(title="arrived (TimescaleDB hypertables)")
    for col in ("table", "device", "ts (device time)", "received", "values"):
        arrived.add_column(col)
    queries = [
        ("scans", "SELECT device_id, ts, received_at, code || ' ' || coalesce(mode, '') FROM scans"),
        ("rfid_reads", "SELECT device_id, ts, received_at, epc || ' ant ' || antenna || ' ' || rssi || ' dBm' "
                       "FROM rfid_reads"),
        ("positions", "SELECT device_id, ts, received_at, round(lat::numeric, 5) || ', ' || round(lon::numeric, 5) "
                      "|| ' (' || source || ')' FROM positions"),
        ("env_readings", "SELECT device_id, ts, received_at, temp_c || ' °C ' || rh_pct || ' %%' FROM env_readings"),
        ("device_status", "SELECT device_id, ts, received_at, 'battery ' || battery_pct || ' %% fw ' || fw "
                          "FROM device_status"),
    ]
    for name, query in queries:
        for row in conn.execute(f"{query} WHERE received_at >= %s ORDER BY ts", (since,)):
            arrived.add_row(name, row[0], f"{row[1]:%H:%M:%S.%f}"[:-3], f"{row[2]:%H:%M:%S}", str(row[3]))
    console.print(arrived)
    moves = Table(title="stock movements (double entry)")
    for col in ("sku", "qty", "from", "to", "lot", "serial", "step", "device"):
        moves.add_column(col)
    for row in conn.execute("SELECT sku, qty, from_location, to_location, lot, serial, biz_step, device_id "
                            "FROM movements WHERE recorded_at >= %s ORDER BY id", (since,)):
        moves.add_row(*[str(v) if v is not None else "" for v in row])
    console.print(moves)
    dead = Table(title="dead letters (nothing is dropped silently)")
    for col in ("device", "reason", "detail"):
        dead.add_column(col)
    for row in conn.execute("SELECT device_id, reason, detail FROM dead_letters WHERE last_received_at >= %s "
                            "ORDER BY id", (since,)):
        dead.add_row(row[0] or "", row[1], row[2][:90])
    console.print(dead)


class DemoStoppedError(Exception):
    """Ctrl-C (or SIGTERM) arrived: the show ends where it is."""


def run_demo_command(settings: Settings, *, once: bool, scenario: bool) -> None:
    """The platform in this process (ingest workers, retention and health loops, the API and
    dashboard), the sample traffic, the normal-day scenario; then it runs until Ctrl-C.

    The show runs in a thread and waits on ``stop`` wherever it waits, so that Ctrl-C ends it at
    any point (a playing scenario is cancelled) instead of after the whole story; the main thread
    only waits for Ctrl-C or the show's end, then stops the API and the workers."""
    from cli.api_server import ApiServer
    from ingest.supervisor import Supervisor

    supervisor = Supervisor(settings, settings.ingest_workers, maintain=True)
    platform = threading.Thread(target=supervisor.run, daemon=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    platform.start()
    server = ApiServer(settings)
    failures: list[Exception] = []

    def show() -> None:
        try:
            _show(settings, server, stop, once=once, scenario=scenario)
        except DemoStoppedError:
            pass
        except Exception as exc:  # reported by the main thread once everything is stopped
            if not stop.is_set():  # after Ctrl-C, whatever broke because the platform went away is moot
                failures.append(exc)
        finally:
            if once or failures:
                stop.set()

    show_thread = threading.Thread(target=show, name="demo-show", daemon=True)
    show_thread.start()
    try:
        while not stop.wait(0.2):
            pass
    finally:
        if server.thread.is_alive():
            server.stop()
        supervisor.request_stop()
        platform.join(30)
        show_thread.join(3)  # a cancelled scenario closes its connections; never wait for more
    if failures:
        raise failures[0]


def _show(settings: Settings, server: ApiServer, stop: threading.Event, *, once: bool, scenario: bool) -> None:
    from api.tokens import create_token
    from ingest.supervisor import wait_until_connected

    wait_until_connected(settings, settings.ingest_workers)
    _check(stop)
    server.start()
    with connect(settings.database_url) as conn:
        token = create_token(conn, "admin", "demo")
    console.print(f"[bold]dashboard[/bold] {server.url}/   [bold]API[/bold] {server.url}/api/v1 "
                  f"(docs {server.url}/docs)\n[bold]admin token[/bold] {token}")
    run_demo(settings, stop)
    if scenario:
        run_story(settings, server.url, token, stop)
    if not once:
        console.print(f"[green]the platform keeps running[/green] at {server.url}/ ; Ctrl-C stops it")


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise DemoStoppedError


def _pause(stop: threading.Event, seconds: float) -> None:
    if stop.wait(seconds):
        raise DemoStoppedError


def _until_stopped(work: Coroutine[object, object, T], stop: threading.Event) -> T:
    """Run ``work`` in a new event loop; cancel it (its connections close) as soon as ``stop`` is set."""
    async def watch() -> T:
        task = asyncio.ensure_future(work)
        while not task.done():
            if stop.is_set():
                task.cancel()
                break
            await asyncio.wait({task}, timeout=0.2)
        try:
            return await task
        except asyncio.CancelledError:
            raise DemoStoppedError from None

    return asyncio.run(watch())


# (scenario, speed-up, wall seconds): a warehouse day, then a cold-chain excursion and a late
# delivery, then after-sales (a damaged delivery answered end to end), about six and a half
# minutes in all. One after the other: scenarios share the DC's handheld scanners, whose
# passwords each run rotates.
STORY = (("normal-day", 72.0, 200.0), ("cold-chain-excursion", 150.0, 60.0), ("late-delivery", 150.0, 70.0),
         ("after-sales", 150.0, 60.0))


def run_story(settings: Settings, api_url: str, token: str, stop: threading.Event) -> None:
    from simulators.loadgen import LoadError
    from simulators.provision import ApiError
    from simulators.runner import RunnerError
    from simulators.scenarios import arun_scenario

    for name, speedup, seconds in STORY:
        console.print(f"[bold]playing {name}[/bold] at {speedup:g}x: {seconds * speedup / 3600:.1f} simulated "
                      f"hours in {seconds / 60:.1f} minutes")
        try:
            report = _until_stopped(arun_scenario(
                name, api_url=api_url, admin_token=token, broker_host=settings.mqtt_host,
                broker_port=settings.mqtt_port, topic_prefix=settings.topic_prefix, seed=7, speedup=speedup,
                duration_s=seconds, run_id=f"demo{int(time.time()) % 100000}"), stop)
        except (RunnerError, ApiError, LoadError, ValueError) as exc:
            raise ValueError(f"the {name} scenario failed: {exc}") from None
        if report.failed:
            console.print(f"[yellow]{report.failed} publish(es) of {name} were not acknowledged[/yellow]")
        if name == "after-sales":  # then the people's side: complaint, RMA, inspection, refund, repair
            from simulators.scenarios.after_sales import service_steps
            try:
                for line in service_steps(api_url, token, report.expected):
                    console.print(f"  after-sales: {line}")
            except ApiError as exc:
                raise ValueError(f"the after-sales service steps failed: {exc}") from None
    _pause(stop, 3)  # the last batches commit and the RFID passages close
    with connect(settings.database_url) as conn:
        show_story(conn)


def show_story(conn: psycopg.Connection) -> None:
    """What the platform derived from the story: shipments, alarms, tickets."""
    shipments = Table(title="shipments (status derived from scans and GPS in event time)")
    for col in ("ref", "status", "events", "delayed"):
        shipments.add_column(col)
    for ref, status, events, delayed in conn.execute(
            "SELECT s.ref, s.status, string_agg(e.type, ' > ' ORDER BY e.ts), coalesce(st.delayed, false) "
            "FROM shipments s LEFT JOIN shipment_events e ON e.shipment = s.ref "
            "LEFT JOIN shipment_state st ON st.ref = s.ref WHERE s.ref LIKE 'SIM-%%' "
            "GROUP BY s.ref, s.status, st.delayed ORDER BY s.created_at DESC LIMIT 6"):
        shipments.add_row(ref, status, events or "", "yes" if delayed else "no")
    console.print(shipments)
    alarms = Table(title="alarms")
    for col in ("type", "state", "device", "shipment", "message"):
        alarms.add_column(col)
    for row in conn.execute("SELECT type, state, device_id, shipment, message FROM alarms "
                            "ORDER BY started_at DESC LIMIT 8"):
        alarms.add_row(*[str(v) if v is not None else "" for v in row[:4]], str(row[4])[:60])
    console.print(alarms)
    tickets = Table(title="after-sales tickets opened for logistics exceptions")
    for col in ("id", "type", "cause", "shipment", "summary"):
        tickets.add_column(col)
    for row in conn.execute("SELECT id, type, cause, shipment, summary FROM tickets ORDER BY id DESC LIMIT 5"):
        tickets.add_row(str(row[0]), row[1], row[2] or "", row[3] or "", row[4][:60])
    console.print(tickets)


def run_demo(settings: Settings, stop: threading.Event) -> None:
    from ingest.rfid_sweep import sweep

    since = datetime.now(UTC) - timedelta(seconds=1)
    run = f"{int(time.time())}"
    with connect(settings.database_url, autocommit=True) as conn:
        devices = provision_demo(settings, conn)
        console.print(f"provisioned {len(devices)} demo devices with broker credentials")
        _check(stop)
        publish_samples(settings, devices, run)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            letters = conn.execute("SELECT count(*) FROM dead_letters WHERE last_received_at >= %s",
                                   (since,)).fetchone()
            rows = conn.execute("SELECT count(*) FROM message_ids WHERE received_at >= %s", (since,)).fetchone()
            if letters and rows and letters[0] >= 6 and rows[0] >= 11:
                break
            _pause(stop, 0.2)
        _pause(stop, 7)  # the RFID passage closes once the tag has been silent for absent_after_s
        sweep(conn)
        show_state(conn, since)
