"""Serial NMEA 0183 GPS receiver to ``position`` messages.

A receiver sends a burst of sentences every second. The bridge keeps the RMC (position, speed,
course, date) and GGA (altitude, fix quality) of the same fix time, of any GNSS talker (GP, GN,
GL, GA, GB, BD, ...; see core.nmea), verifies every checksum with
pynmea2 (a bad one is counted and skipped: a corrupted digit would put the truck elsewhere), and
at most every ``interval_s`` publishes the newest complete fix as
``{"msg_id", "ts", "nmea": [rmc, gga]}``. The raw sentences go to the server, which verifies them
again and derives lat/lon itself (CONTRACT s.1).

``ts`` is the RMC date and time (UTC, the satellites' clock, right even when this host's clock is
not); without an RMC, or with an implausible RMC date (before 2000, e.g. after a GPS week
rollover bug), it is the time the sentences were received. A fix the receiver marks invalid (RMC
status ``V``, GGA quality 0) or without coordinates is not published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import pynmea2

from core.nmea import NmeaError, is_position_sentence, parse_fix
from devices.buffer import OutboxBuffer
from devices.scanner_bridge import decode_line

log = logging.getLogger(__name__)

_MIN_YEAR: Final = 2000  # the server refuses earlier device times as "clock not set"
# How long an RMC waits for the GGA of the same second before it counts as complete alone.
DEFAULT_SETTLE_S: Final = 0.5


@dataclass(slots=True)
class _Group:
    """The sentences of one fix time."""

    key: object  # the fix time of day, or a fresh object() when the sentence carries none
    received_mono: float
    received_at: datetime
    rmc: str | None = None
    gga: str | None = None
    rmc_ts: datetime | None = None
    taken: bool = False


@dataclass(frozen=True, slots=True)
class Fix:
    sentences: list[str]
    ts: datetime  # RMC date+time, else the receive time
    ts_from_gps: bool


@dataclass(slots=True)
class FixCollector:
    """Sentences in, the newest complete fix out; counts what it skipped."""

    settle_s: float = DEFAULT_SETTLE_S
    bad_checksums: int = 0
    unparseable: int = 0
    no_fix: int = 0
    _groups: list[_Group] = field(default_factory=list)

    def feed(self, sentence: str, now_mono: float, now: datetime) -> None:
        sentence = sentence.strip()
        if not sentence.startswith("$"):
            return  # noise between sentences, a partial first line
        if not is_position_sentence(sentence):
            return  # GSV, GSA, VTG, ...: not used, and not worth parsing
        try:
            msg = pynmea2.parse(sentence, check=True)
        except pynmea2.ChecksumError as exc:
            self.bad_checksums += 1
            log.debug("skipping NMEA sentence with a bad or missing checksum (%s): %r", exc.args[0], sentence)
            return
        except (pynmea2.ParseError, ValueError, TypeError, AttributeError) as exc:
            self.unparseable += 1
            log.debug("skipping unparseable NMEA sentence (%s): %r", exc, sentence)
            return
        try:
            fix_time = msg.timestamp
        except (ValueError, TypeError):
            fix_time = None
        key: object = fix_time if fix_time is not None else object()
        group = self._group(key, now_mono, now)
        if sentence[3:6] == "RMC":
            group.rmc = sentence
            group.rmc_ts = _rmc_datetime(msg)
        else:
            group.gga = sentence

    def _group(self, key: object, now_mono: float, now: datetime) -> _Group:
        if self._groups and self._groups[-1].key == key:
            return self._groups[-1]
        group = _Group(key, now_mono, now)
        # The newest two are enough: the one being received and the one completed before it.
        self._groups = [*self._groups[-1:], group]
        return group

    def take(self, now_mono: float) -> Fix | None:
        """The newest complete fix not yet taken (older ones are skipped: only the latest counts)."""
        for index in range(len(self._groups) - 1, -1, -1):
            group = self._groups[index]
            newest = index == len(self._groups) - 1
            complete = (group.rmc is not None and group.gga is not None) or not newest \
                or now_mono - group.received_mono >= self.settle_s
            if group.taken:
                return None
            if not complete:
                continue
            for older in self._groups[: index + 1]:
                older.taken = True
            return self._fix(group)
        return None

    def _fix(self, group: _Group) -> Fix | None:
        sentences = [s for s in (group.rmc, group.gga) if s is not None]
        try:
            parsed = parse_fix(sentences)  # the server's own reading: publish only what it accepts
        except NmeaError as exc:
            self.unparseable += 1
            log.debug("skipping fix the server would refuse (%s): %r", exc, sentences)
            return None
        if not parsed.valid or parsed.lat is None:
            self.no_fix += 1
            return None
        if group.rmc_ts is not None:
            return Fix(sentences, group.rmc_ts, True)
        return Fix(sentences, group.received_at, False)


def _rmc_datetime(msg: Any) -> datetime | None:
    try:
        ts = msg.datetime
    except (ValueError, TypeError, AttributeError):
        return None  # no date in the sentence (receiver still acquiring)
    if not isinstance(ts, datetime) or ts.year < _MIN_YEAR:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def position_message(fix: Fix, msg_id: str) -> dict[str, Any]:
    return {"msg_id": msg_id, "ts": fix.ts.isoformat(timespec="milliseconds"), "nmea": fix.sentences}


class GpsBridge:
    """Feeds lines to a ``FixCollector`` and buffers the newest fix every ``interval_s``."""

    def __init__(self, device_id: str, buffer: OutboxBuffer, on_appended: Callable[[], None], *,
                 interval_s: float = 5.0, settle_s: float = DEFAULT_SETTLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.device_id = device_id
        self.interval_s = interval_s
        self.collector = FixCollector(settle_s)
        self._buffer = buffer
        self._on_appended = on_appended
        self._clock = clock
        self._last_emit: float | None = None
        self.positions = 0

    def handle_line(self, line: bytes) -> None:
        self.collector.feed(decode_line(line), self._clock(), datetime.now(UTC))
        self.tick()  # an RMC+GGA pair is complete at once: no need to wait for the next tick

    def tick(self) -> None:
        now = self._clock()
        if self._last_emit is not None and now - self._last_emit < self.interval_s:
            return
        fix = self.collector.take(now)
        if fix is None:
            return
        message = position_message(fix, self._buffer.next_msg_id(self.device_id))
        self._buffer.append("position", message)
        self._last_emit = now
        self.positions += 1
        log.debug("position %s at %s", message["msg_id"], message["ts"])
        self._on_appended()
