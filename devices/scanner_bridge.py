"""Serial barcode scanner to ``scan`` messages, and the serial line reading both bridges share.

A scanner in serial (or USB-CDC "virtual COM") mode sends each read as one line: the data,
then a terminator (``\\r\\n`` by default; ``\\r``, ``\\n`` or any byte string can be configured).
Each line becomes ``{"msg_id", "ts", "code", "mode"?, "location"?}`` in the outbox buffer.

``code`` is the data exactly as the scanner sent it, symbology identifier included (``]C1``,
``]d2``, ...): the server decides what it means. The one optional change is the group separator:

- ``separator=None`` (default): the data is left as sent. The server reads both GS (0x1D) and
  ``|`` as the separator, so a scanner that sends GS, or that is set to send ``|``, needs nothing.
- ``separator="^"`` (any single character): the scanner sends that character in place of GS and
  the bridge turns each one back into GS. Only set this when the character cannot occur in the
  data itself (``^`` never appears in GS1 element strings, but may in free-text QR codes).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import serial

from core.contract import SCAN_MODES
from devices.buffer import OutboxBuffer
from devices.publisher import now_rfc3339

log = logging.getLogger(__name__)

GS: Final = "\x1d"
MAX_LINE_BYTES: Final = 64 * 1024  # far above any barcode; bounds memory if the terminator is wrong
_READ_TIMEOUT_S: Final = 0.2
_REOPEN_DELAYS_S: Final = (1.0, 2.0, 5.0)


class BridgeError(Exception):
    """A bridge cannot run as configured; the message says what to fix."""


# --- serial lines (shared with the GPS bridge) -----------------------------------------------------


class LineSplitter:
    """Bytes as they arrive to complete lines without their terminator."""

    def __init__(self, terminator: bytes, max_line: int = MAX_LINE_BYTES) -> None:
        if not terminator:
            raise BridgeError("the line terminator must not be empty")
        self.terminator = terminator
        self._max_line = max_line
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        *lines, self._pending = self._pending.split(self.terminator)
        if len(self._pending) > self._max_line:
            # Not silently: a wrong terminator setting would otherwise look like a dead scanner.
            log.error("discarding %d bytes without a line terminator %r; check the terminator setting",
                      len(self._pending), self.terminator)
            self._pending = b""
        return lines


def open_serial(port: str, baudrate: int) -> serial.SerialBase:
    """A device path (``/dev/ttyUSB0``) or a pyserial URL (``socket://host:port``, ``rfc2217://``)."""
    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=_READ_TIMEOUT_S)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise BridgeError(f"cannot open serial port {port!r} at {baudrate} baud: {exc}; check the device path "
                          "(ls /dev/serial/by-id), that no other program holds it, and that this user may "
                          "use it (group dialout)") from exc


def pump_serial(port: str, baudrate: int, terminator: bytes, stop: threading.Event,
                on_line: Callable[[bytes], None], on_tick: Callable[[], None] | None = None,
                ready: threading.Event | None = None, outgoing: queue.SimpleQueue[bytes] | None = None) -> None:
    """Read lines from ``port`` and hand each to ``on_line`` until ``stop`` is set.

    ``on_tick`` runs after every read (at least every 0.2 s). The first open failing raises
    ``BridgeError`` (a wrong path should be seen at once); a port lost later (a USB scanner
    unplugged) is reopened with backoff, since the device usually comes back.
    """
    ser: serial.SerialBase | None = open_serial(port, baudrate)
    if ready is not None:
        ready.set()
    splitter = LineSplitter(terminator)
    failures = 0
    try:
        while not stop.is_set():
            if ser is None:
                delay = _REOPEN_DELAYS_S[min(failures, len(_REOPEN_DELAYS_S) - 1)]
                if stop.wait(delay):
                    return
                try:
                    ser = open_serial(port, baudrate)
                except BridgeError as exc:
                    failures += 1
                    log.debug("%s", exc)
                    continue
                log.info("serial port %s is back", port)
                failures = 0
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as exc:
                log.warning("serial port %s failed (%s); reopening it", port, exc)
                _close_quietly(ser)
                ser = None
                splitter = LineSplitter(terminator)  # a half line from before the loss is not trusted
                continue
            for line in splitter.feed(data) if data else ():
                on_line(line)
            while outgoing is not None and not outgoing.empty():
                # Feedback to the device (a beep, a line on its display); written between reads
                # because the port has one owner. A write that fails is lost with the port.
                try:
                    ser.write(outgoing.get_nowait())
                except (serial.SerialException, OSError) as exc:
                    log.warning("serial port %s: feedback not written (%s)", port, exc)
                    break
            if on_tick is not None:
                on_tick()
    finally:
        if ser is not None:
            _close_quietly(ser)


def _close_quietly(ser: serial.SerialBase) -> None:
    try:
        ser.close()
    except (serial.SerialException, OSError) as exc:
        log.debug("closing the serial port: %s", exc)


def decode_line(line: bytes) -> str:
    """UTF-8 when it is (QR codes carry UTF-8), else Latin-1, which maps every byte as sent."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


# --- scans ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    terminator: bytes = b"\r\n"
    # The character the scanner sends instead of GS, turned back into GS; None leaves data as sent.
    separator: str | None = None
    mode: str | None = None
    location: str | None = None
    # A symbology identifier every read should start with (e.g. "]C1"): a read without it is
    # still sent as is, with a warning, since it usually means AIM identifiers were switched off.
    expected_symbology: str | None = None

    def __post_init__(self) -> None:
        if not self.terminator:
            raise BridgeError("the line terminator must not be empty")
        if self.separator is not None and (len(self.separator) != 1 or self.separator == GS):
            raise BridgeError(f"separator must be one character other than GS, got {self.separator!r}")
        if self.mode is not None and self.mode not in SCAN_MODES:
            raise BridgeError(f"mode {self.mode!r} is not one of {', '.join(SCAN_MODES)}")
        if self.location is not None and not 1 <= len(self.location) <= 64:
            raise BridgeError("location must be 1 to 64 characters")


def scan_message(line: bytes, config: ScannerConfig, msg_id: str, ts: str) -> dict[str, Any] | None:
    """One scanner line to a ``scan`` message; None for an empty line."""
    # CR/LF never belong to barcode data; stray ones come from a terminator set to only one of them.
    code = decode_line(line).strip("\r\n")
    if not code:
        return None
    if config.separator is not None:
        code = code.replace(config.separator, GS)
    if config.expected_symbology and not code.startswith(config.expected_symbology):
        log.warning("scan %s does not start with the expected symbology identifier %r; sent as read",
                    msg_id, config.expected_symbology)
    message: dict[str, Any] = {"msg_id": msg_id, "ts": ts, "code": code}
    if config.mode is not None:
        message["mode"] = config.mode
    if config.location is not None:
        message["location"] = config.location
    return message


class ScannerBridge:
    """Turns lines into buffered ``scan`` messages; ``on_appended`` wakes the publisher."""

    def __init__(self, device_id: str, config: ScannerConfig, buffer: OutboxBuffer,
                 on_appended: Callable[[], None]) -> None:
        self.device_id = device_id
        self.config = config
        self._buffer = buffer
        self._on_appended = on_appended
        self.scans = 0

    def handle_line(self, line: bytes) -> None:
        if not line.strip(b"\r\n"):
            return  # before taking a msg_id: blank lines should not burn counter values
        message = scan_message(line, self.config, self._buffer.next_msg_id(self.device_id), now_rfc3339())
        if message is None:
            return
        self._buffer.append("scan", message)
        self.scans += 1
        log.debug("scan %s: %r", message["msg_id"], message["code"])
        self._on_appended()



# --- feedback (CONTRACT 3.1) ----------------------------------------------------------------------


def _unescape(text: str) -> bytes:
    """``\\a``, ``\\r``, ``\\n``, ``\\xNN`` as a command line can carry them."""
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """What the bridge writes back to the scanner for each ``feedback`` message.

    Many scanners beep on BEL (0x07) and show text sent to their serial port; the bytes are
    configurable because models differ (``--beep-ok``, ``--beep-refused``, ``--feedback-line``).
    """

    beep_ok: bytes = b"\x07"
    beep_refused: bytes = b"\x07\x07\x07"
    # {ok}, {reason}, {task_id}, {msg_id}; empty: no line, beep only.
    line: str = "{ok} {reason} {task_id}\r\n"

    @classmethod
    def from_text(cls, beep_ok: str, beep_refused: str, line: str) -> FeedbackConfig:
        return cls(_unescape(beep_ok), _unescape(beep_refused), _unescape(line).decode("latin-1"))


def feedback_bytes(feedback: dict[str, Any], config: FeedbackConfig) -> bytes:
    """The bytes for one feedback message: the beep, then the line (``OK done``, ``NO wrong_bin``)."""
    ok = feedback.get("ok") is True
    beep = config.beep_ok if ok else config.beep_refused
    if not config.line:
        return beep
    text = config.line.format(ok="OK" if ok else "NO", reason=feedback.get("reason") or "",
                              task_id=feedback.get("task_id") or "", msg_id=feedback.get("msg_id") or "")
    text = re.sub(r" +(?=\r|\n|$)", "", re.sub(r" {2,}", " ", text))  # empty fields leave no gaps
    return beep + text.encode("latin-1", errors="replace")


def feedback_handler(config: FeedbackConfig, outgoing: queue.SimpleQueue[bytes]) -> Callable[[bytes], None]:
    """The device's ``feedback`` messages (read on its one MQTT session) to bytes queued for the serial
    port. Not retained and not buffered: a beep for a scan made while the bridge was offline would
    only confuse the operator."""
    def on_message(payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            log.warning("feedback that is not JSON ignored: %r", payload[:80])
            return
        if isinstance(body, dict):
            outgoing.put(feedback_bytes(body, config))
    return on_message
