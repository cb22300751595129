"""Entry points of the serial bridges, as plain functions for the CLI (typer) to wire up.

Each runs until ``stop`` is set or the process gets SIGINT/SIGTERM, then drains what the broker
takes within a few seconds and leaves the rest in the buffer file for the next run. Every
failure a user can fix (serial port, buffer file, broker address) is raised as ``BridgeError``
with a message saying what to check.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devices.buffer import OutboxBuffer, OutboxError
from devices.gps_bridge import GpsBridge
from devices.publisher import BrokerTarget, BufferedPublisher, PublisherError
from devices.scanner_bridge import (
    BridgeError,
    FeedbackConfig,
    ScannerBridge,
    ScannerConfig,
    feedback_handler,
    pump_serial,
)

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0

__all__ = ["BridgeError", "run_gps_bridge", "run_scanner_bridge"]


@dataclass(frozen=True, slots=True)
class _Runtime:
    buffer: OutboxBuffer
    publisher: BufferedPublisher
    stop: threading.Event


def run_scanner_bridge(port: str, device_id: str, password: str, *, host: str, port_mqtt: int, prefix: str,
                       buffer_path: str | Path, ca_file: str | None = None, mqtt_version: int = 5,
                       baudrate: int = 9600,
                       terminator: bytes = b"\r\n",
                       separator: str | None = None, mode: str | None = None, location: str | None = None,
                       expected_symbology: str | None = None, stop: threading.Event | None = None,
                       ready: threading.Event | None = None, feedback: FeedbackConfig | None = None) -> None:
    """Serial barcode scanner on ``port`` to ``scan`` messages of ``device_id``.

    ``separator``: the character the scanner sends instead of GS, turned back into GS (None: the
    data is sent as read; the server accepts GS and ``|``). ``ready`` is set once the serial
    port is open (anything the port received before that is discarded by the open).
    """
    config = ScannerConfig(terminator=terminator, separator=separator, mode=mode, location=location,
                           expected_symbology=expected_symbology)
    target = BrokerTarget(host, port_mqtt, prefix, device_id, password, ca_file, mqtt_version)
    outgoing: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    listen = {"feedback": feedback_handler(feedback, outgoing)} if feedback is not None else None
    with _runtime(buffer_path, target, stop, listen) as rt:
        bridge = ScannerBridge(device_id, config, rt.buffer, rt.publisher.notify)
        log.info("scanner bridge %s: opening %s at %d baud", device_id, port, baudrate)
        pump_serial(port, baudrate, terminator, rt.stop, bridge.handle_line, ready=ready, outgoing=outgoing)
        log.info("scanner bridge %s: %d scan(s) read", device_id, bridge.scans)


def run_gps_bridge(port: str, device_id: str, password: str, *, host: str, port_mqtt: int, prefix: str,
                   buffer_path: str | Path, ca_file: str | None = None, mqtt_version: int = 5,
                   baudrate: int = 9600, interval_s: float = 5.0,
                   stop: threading.Event | None = None, ready: threading.Event | None = None) -> None:
    """NMEA 0183 GPS on ``port`` to ``position`` messages of ``device_id``, one per ``interval_s`` at most.

    9600 baud suits most current receivers (u-blox and the like); NMEA 0183's own rate is 4800.
    """
    if interval_s < 0:
        raise BridgeError(f"interval must be 0 or more seconds, got {interval_s}")
    target = BrokerTarget(host, port_mqtt, prefix, device_id, password, ca_file, mqtt_version)
    with _runtime(buffer_path, target, stop) as rt:
        bridge = GpsBridge(device_id, rt.buffer, rt.publisher.notify, interval_s=interval_s)
        log.info("GPS bridge %s: opening %s at %d baud, a position every %g s at most", device_id, port,
                 baudrate, interval_s)
        # NMEA lines end in CR LF; splitting on LF and letting the parser strip the CR also copes
        # with receivers that send LF alone.
        pump_serial(port, baudrate, b"\n", rt.stop, bridge.handle_line, on_tick=bridge.tick, ready=ready)
        c = bridge.collector
        log.info("GPS bridge %s: %d position(s); skipped %d bad checksum(s), %d unparseable, %d without fix",
                 device_id, bridge.positions, c.bad_checksums, c.unparseable, c.no_fix)


@contextlib.contextmanager
def _runtime(buffer_path: str | Path, target: BrokerTarget, stop: threading.Event | None,
             listen: dict[str, Callable[[bytes], None]] | None = None) -> Iterator[_Runtime]:
    """Buffer, publisher and stop event; foreign errors become ``BridgeError``; always closes cleanly."""
    stop = stop if stop is not None else threading.Event()
    try:
        buffer = OutboxBuffer(buffer_path)
    except OutboxError as exc:
        raise BridgeError(str(exc)) from exc
    try:
        publisher = BufferedPublisher(buffer, target)
        for kind, on_message in (listen or {}).items():
            publisher.listen(kind, on_message)
        publisher.start()
    except PublisherError as exc:
        buffer.close()
        raise BridgeError(str(exc)) from exc
    pending = len(buffer)
    if pending:
        log.info("%s: %d message(s) from an earlier run are pending in %s", target.device_id, pending,
                 buffer.path)
    try:
        with _stop_on_signals(stop):
            yield _Runtime(buffer, publisher, stop)
    except OutboxError as exc:
        raise BridgeError(str(exc)) from exc
    finally:
        stop.set()
        publisher.close(DRAIN_TIMEOUT_S)
        buffer.close()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; only possible (and only wanted) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
