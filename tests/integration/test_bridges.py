"""Serial bridges end to end: a pty stands in for the scanner or GPS, the bridge publishes to the
project's Mosquitto with the device's own credentials, an ingest worker stores into TimescaleDB.
Store-and-forward is exercised by stopping a private broker (never the shared session one)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cli.local_broker import start_local_broker, stop_local_broker
from devices.bridge_cli import run_gps_bridge, run_scanner_bridge
from devices.buffer import OutboxBuffer
from devices.gps_bridge import FixCollector
from devices.provisioning import Credentials
from devices.publisher import BrokerTarget, BufferedPublisher
from devices.scanner_bridge import GS, BridgeError, LineSplitter, ScannerConfig, scan_message
from ingest.worker import IngestWorker
from runtime.settings import Settings
from tests.integration.broker_fixtures import broker_test_settings, start_test_broker
from tests.integration.stack_helpers import count, provision, running_worker, stack_settings, wait_until

GTIN = "09506000134352"
SCAN_SQL = "SELECT count(*), count(DISTINCT msg_id) FROM scans WHERE device_id = %s"


def gs1(lot: str, sep: str = GS) -> str:
    return f"]C101{GTIN}10{lot}{sep}17261231"


# --- harness -------------------------------------------------------------------------------------


@pytest.fixture
def settings(broker_settings: Settings, database_url: str, db: psycopg.Connection) -> Settings:
    return stack_settings(broker_settings, database_url)


@pytest.fixture
def private_settings(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Iterator[Settings]:
    """A broker of its own: these tests stop and restart it."""
    broker = broker_test_settings(tmp_path / "broker")
    start_test_broker(broker)
    try:
        yield stack_settings(broker, database_url)
    finally:
        stop_local_broker(broker)


def scanner_with_master_data(settings: Settings, db: psycopg.Connection) -> Credentials:
    """A scan is stored once it can be stock: a dock, its site's supplier and the item must exist."""
    creds = provision(settings, db, kind="scanner")
    db.execute("INSERT INTO sites (code, name) VALUES ('S1', 'Site')")
    db.execute("INSERT INTO locations (code, site, type) VALUES ('DOCK-T', 'S1', 'dock'), ('SUP-T', 'S1', 'supplier')")
    db.execute("INSERT INTO items (sku, name, gtin) VALUES ('SKU-T', 'Test item', %s)", (GTIN,))
    db.execute("UPDATE devices SET location = 'DOCK-T', mode = 'receive' WHERE device_id = %s", (creds.device_id,))
    return creds


class Pty:
    """The device end of a serial line: the test writes to the master, the bridge opens the slave."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def lines(self, *codes: str, terminator: bytes = b"\r\n") -> None:
        self.write(b"".join(c.encode() + terminator for c in codes))

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@contextmanager
def bridge(run: Callable[..., None], creds: Credentials, settings: Settings, buffer_path: Path,
           **options: Any) -> Iterator[Pty]:
    """Run a bridge in a thread on a fresh pty until the block ends; its errors fail the test."""
    pty = Pty()
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(pty.path, creds.device_id, creds.password, host=settings.mqtt_host, port_mqtt=settings.mqtt_port,
                prefix=settings.topic_prefix, buffer_path=buffer_path, stop=stop, ready=ready, **options)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        # Only write once the port is open: opening a serial port discards what it had received.
        assert ready.wait(5) or errors, "bridge did not open the serial port"
        if errors:
            raise errors[0]
        yield pty
    finally:
        stop.set()
        thread.join(20)
        pty.close()
    assert not thread.is_alive(), "bridge did not stop"
    if errors:
        raise errors[0]


class Gate:
    """A TCP relay in front of the broker that the test can shut: the bridge's link goes through it.

    Needed because Mosquitto 2.0.11 drops what is published after a restart to a shared
    subscription whose (persistent) session has not reconnected yet: the bridge must not flush
    before the ingest worker is back, or the test would measure that broker bug, not the bridge.
    """

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self.is_open = threading.Event()
        self.is_open.set()
        self._links: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                if not self.is_open.is_set():
                    raise OSError("gate shut")
                upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self._links += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def shut(self) -> None:
        self.is_open.clear()
        for sock in self._links:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._links.clear()

    def close(self) -> None:
        self._closed = True
        self.shut()
        self._server.close()


@contextmanager
def gate(settings: Settings) -> Iterator[tuple[Gate, Settings]]:
    g = Gate(settings.mqtt_port)
    try:
        yield g, settings.model_copy(update={"mqtt_port": g.port})
    finally:
        g.close()


def restart_broker(settings: Settings, worker: IngestWorker, gate: Gate) -> None:
    """Start the stopped broker and let the bridge reconnect only once the worker is back."""
    start_local_broker(settings)  # same dynsec file and persistence: accounts and sessions survive
    # Subscribed, not just connected: the restarted broker forgot the shared subscription until SUBACK.
    wait_until(worker.subscribed.is_set, timeout=60, what="the ingest worker to reconnect and re-subscribe")
    gate.is_open.set()


def pending(buffer_path: Path) -> int:
    with sqlite3.connect(buffer_path) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def scan_codes(db: psycopg.Connection, device_id: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT code FROM scans WHERE device_id = %s ORDER BY msg_id", (device_id,))]


# --- scanner -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_scans_from_the_serial_line_are_stored_exactly(settings: Settings, db: psycopg.Connection,
                                                       tmp_path: Path) -> None:
    creds = scanner_with_master_data(settings, db)
    buffer_path = tmp_path / "scanner.db"
    with running_worker(settings), bridge(run_scanner_bridge, creds, settings, buffer_path, separator="^",
                                          mode="receive", location="DOCK-T") as pty:
        pty.lines(gs1("LOT1"), gs1("LOT2", "^"), "")  # raw GS, substitute separator, a blank line
        pty.write(gs1("LOT3", "^").encode()[:9])  # a line split across reads
        pty.write(gs1("LOT3", "^").encode()[9:] + b"\r\n")
        wait_until(lambda: count(db, SCAN_SQL, creds.device_id) == 3, timeout=10, what="three scans")
        wait_until(lambda: pending(buffer_path) == 0, timeout=5, what="an empty buffer")
    assert scan_codes(db, creds.device_id) == [gs1("LOT1"), gs1("LOT2"), gs1("LOT3")]
    rows = db.execute("SELECT mode, location, ts_source FROM scans WHERE device_id = %s", (creds.device_id,))
    assert set(rows) == {("receive", "DOCK-T", "device")}
    assert count(db, "SELECT count(*) FROM movements WHERE device_id = %s", creds.device_id) == 3
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


@pytest.mark.integration
def test_broker_outage_loses_and_doubles_nothing(private_settings: Settings, db: psycopg.Connection,
                                                  tmp_path: Path) -> None:
    settings = private_settings
    creds = scanner_with_master_data(settings, db)
    buffer_path = tmp_path / "scanner.db"
    # The scanner sends "|" for GS and nothing is configured: "|" reaches the server as sent.
    codes = [gs1(f"L{n:02d}", "|") for n in range(15)]
    with running_worker(settings) as worker, gate(settings) as (link, via_gate), \
            bridge(run_scanner_bridge, creds, via_gate, buffer_path) as pty:
        pty.lines(*codes[:5])
        wait_until(lambda: count(db, SCAN_SQL, creds.device_id) == 5, timeout=10, what="scans before the outage")
        link.shut()
        stop_local_broker(settings)
        for code in codes[5:10]:  # one line at a time, as an operator scans
            pty.lines(code)
        wait_until(lambda: pending(buffer_path) == 5, timeout=5, what="scans buffered during the outage")
        restart_broker(settings, worker, link)
        pty.lines(*codes[10:])
        wait_until(lambda: count(db, SCAN_SQL, creds.device_id) == 15, timeout=30, what="all scans")
        wait_until(lambda: pending(buffer_path) == 0, timeout=10, what="an empty buffer")
    assert db.execute(SCAN_SQL, (creds.device_id,)).fetchone() == (15, 15)
    assert scan_codes(db, creds.device_id) == codes
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


@pytest.mark.integration
def test_a_restarted_bridge_sends_what_the_last_one_buffered(private_settings: Settings, db: psycopg.Connection,
                                                              tmp_path: Path) -> None:
    settings = private_settings
    creds = scanner_with_master_data(settings, db)
    buffer_path = tmp_path / "scanner.db"
    codes = [gs1(f"R{n:02d}") for n in range(9)]
    with running_worker(settings) as worker, gate(settings) as (link, via_gate):
        with bridge(run_scanner_bridge, creds, via_gate, buffer_path) as pty:
            pty.lines(*codes[:3])
            wait_until(lambda: count(db, SCAN_SQL, creds.device_id) == 3, timeout=10, what="first scans")
            link.shut()
            stop_local_broker(settings)
            pty.lines(*codes[3:7])
            wait_until(lambda: pending(buffer_path) == 4, timeout=5, what="scans buffered during the outage")
        # The bridge is gone with four scans on disk only.
        assert pending(buffer_path) == 4
        restart_broker(settings, worker, link)
        with bridge(run_scanner_bridge, creds, via_gate, buffer_path) as pty:
            wait_until(lambda: count(db, SCAN_SQL, creds.device_id) == 7, timeout=30, what="the buffered scans")
            pty.lines(*codes[7:])
            wait_until(lambda: count(db, SCAN_SQL, creds.device_id) == 9, timeout=10, what="all scans")
            wait_until(lambda: pending(buffer_path) == 0, timeout=10, what="an empty buffer")
    assert db.execute(SCAN_SQL, (creds.device_id,)).fetchone() == (9, 9)
    assert scan_codes(db, creds.device_id) == codes  # msg_ids continue across the restart
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


@pytest.mark.integration
def test_a_refused_publish_is_kept_and_not_retried_at_once(settings: Settings, db: psycopg.Connection,
                                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    creds = provision(settings, db, kind="scanner")
    buffer = OutboxBuffer(tmp_path / "b.db")
    buffer.append("scan", {"msg_id": "x1", "code": gs1("X")})
    # A topic prefix the device's account may not publish under: the broker answers PUBACK 135.
    target = BrokerTarget(settings.mqtt_host, settings.mqtt_port, "elsewhere/v1", creds.device_id, creds.password)
    publisher = BufferedPublisher(buffer, target, refused_backoff_s=(30.0, 60.0))
    caplog.set_level(logging.DEBUG, logger="devices.publisher")
    publisher.start()
    try:
        wait_until(lambda: "refused" in caplog.text, timeout=10, what="the refusal to be logged")
        threading.Event().wait(1.0)  # time for a hot loop to show itself
    finally:
        publisher.close(drain_timeout_s=0.5)
    attempts = [r for r in caplog.records if r.getMessage().startswith(f"{creds.device_id}: published")]
    assert len(attempts) == 1 and publisher.published == 0
    assert "Not authorized" in caplog.text and "elsewhere/v1/dev/" in caplog.text
    assert len(buffer) == 1  # kept for when the account is fixed
    buffer.close()


# --- GPS -----------------------------------------------------------------------------------------


def nmea(body: str) -> str:
    checksum = 0
    for char in body:
        checksum ^= ord(char)
    return f"${body}*{checksum:02X}"


def _coord(value: float, width: int) -> str:
    degrees = int(value)
    return f"{degrees:0{width}d}{(value - degrees) * 60:07.4f}"


def rmc(t: datetime, lat: float, lon: float, talker: str = "GP") -> str:
    return nmea(f"{talker}RMC,{t:%H%M%S}.00,A,{_coord(lat, 2)},N,{_coord(lon, 3)},E,012.5,084.4,{t:%d%m%y},,,A")


def gga(t: datetime, lat: float, lon: float, alt: float, talker: str = "GP") -> str:
    return nmea(f"{talker}GGA,{t:%H%M%S}.00,{_coord(lat, 2)},N,{_coord(lon, 3)},E,1,08,0.9,{alt:.1f},M,46.9,M,,")


def corrupt(sentence: str) -> str:
    """Same checksum, one digit of the latitude changed: exactly what a line error looks like."""
    return sentence.replace(",A,", ",A,1", 1)


@pytest.mark.integration
def test_gps_positions_arrive_and_bad_checksums_are_skipped(settings: Settings, db: psycopg.Connection,
                                                             tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    creds = provision(settings, db, kind="gps_tracker")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    t1, t2, t3 = t0, t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)
    caplog.set_level(logging.INFO, logger="devices.bridge_cli")
    with running_worker(settings), bridge(run_gps_bridge, creds, settings, tmp_path / "gps.db",
                                          interval_s=0) as pty:
        pty.lines(nmea("GPGSV,1,1,01,03,03,111,00"), rmc(t1, 48.1173, 11.5167), gga(t1, 48.1173, 11.5167, 545.4))
        wait_until(lambda: count(db, "SELECT count(*) FROM positions WHERE device_id = %s", creds.device_id) == 1,
                   timeout=10, what="the first position")
        pty.lines(corrupt(rmc(t2, 50.0, 10.0)))
        pty.lines(rmc(t3, 52.52, 13.405, "GN"), gga(t3, 52.52, 13.405, 34.0, "GN"))
        wait_until(lambda: count(db, "SELECT count(*) FROM positions WHERE device_id = %s", creds.device_id) == 2,
                   timeout=10, what="the second position")
    rows = db.execute("SELECT ts, source, lat, lon, alt_m, fix_valid FROM positions WHERE device_id = %s "
                      "ORDER BY ts", (creds.device_id,)).fetchall()
    assert [(r[0], r[1], round(r[2], 4), round(r[3], 4), round(r[4], 1), r[5]) for r in rows] == [
        (t1, "nmea", 48.1173, 11.5167, 545.4, True), (t3, "nmea", 52.52, 13.405, 34.0, True)]
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    assert "skipped 1 bad checksum(s)" in caplog.text


# --- pure parts ------------------------------------------------------------------------------------


def test_scan_line_separator_handling() -> None:
    as_sent = ScannerConfig()
    assert scan_message(gs1("A", "|").encode(), as_sent, "m1", "t")["code"] == gs1("A", "|")  # type: ignore[index]
    translated = ScannerConfig(separator="|", mode="pick")
    msg = scan_message(gs1("A", "|").encode() + b"\r", translated, "m2", "t")
    assert msg == {"msg_id": "m2", "ts": "t", "code": gs1("A"), "mode": "pick"}
    assert scan_message(b"\r", as_sent, "m3", "t") is None
    with pytest.raises(BridgeError):
        ScannerConfig(mode="steal")
    with pytest.raises(BridgeError):
        ScannerConfig(separator="||")


def test_line_splitter_terminators() -> None:
    cr = LineSplitter(b"\r")
    assert cr.feed(b"a\rb") == [b"a"]
    assert cr.feed(b"c\r") == [b"bc"]
    custom = LineSplitter(b"\x03")
    assert custom.feed(b"x\x03y\x03") == [b"x", b"y"]


def test_fix_collector_waits_for_the_gga_of_the_same_second() -> None:
    t = datetime(2026, 5, 4, 10, 0, 0, tzinfo=UTC)
    now = datetime.now(UTC)
    c = FixCollector(settle_s=0.5)
    c.feed(rmc(t, 48.1, 11.5), 0.0, now)
    assert c.take(0.1) is None  # the GGA of that second may still come
    c.feed(gga(t, 48.1, 11.5, 500.0), 0.2, now)
    fix = c.take(0.2)
    assert fix is not None and fix.ts == t and fix.ts_from_gps and len(fix.sentences) == 2
    assert c.take(0.3) is None  # taken once
    c.feed(rmc(t + timedelta(seconds=1), 48.1, 11.5), 1.0, now)
    assert c.take(1.1) is None
    fix = c.take(1.6)  # no GGA came: the RMC alone after the settle time
    assert fix is not None and fix.ts == t + timedelta(seconds=1) and len(fix.sentences) == 1
    c.feed(corrupt(rmc(t + timedelta(seconds=2), 48.1, 11.5)), 2.0, now)
    c.feed(rmc(t + timedelta(seconds=3), 48.1, 11.5)[:-3], 2.0, now)  # no checksum at all
    assert c.bad_checksums == 2 and c.take(5.0) is None
    c.feed(nmea(f"GPRMC,{t:%H%M%S},V,,,,,,,{t:%d%m%y},,,N"), 6.0, now)  # receiver without a fix
    assert c.take(7.0) is None and c.no_fix == 1
