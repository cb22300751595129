"""The device protocol (CONTRACT section 1) as pure validation.

Input is what the adapter already parsed from the wire (the topic string and the JSON value);
output is typed records for what is acceptable and a ``Rejection`` with a machine-readable
reason for each thing that is not. Nothing here raises on bad device input: bad input is data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from core.nmea import NmeaError, parse_fix

KINDS: Final = ("scan", "rfid", "position", "env", "status")
SCAN_MODES: Final = ("receive", "putaway", "pick", "ship", "deliver", "count", "return", "move")
DEVICE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX_RE: Final = re.compile(r"^[0-9A-Fa-f]+$")
_EPOCH_MS_MIN: Final = 946_684_800_000  # 2000-01-01: anything earlier is a device clock not set.
_MAX_READS: Final = 10_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Kind = Literal["scan", "rfid", "position", "env", "status"]
TsSource = Literal["device", "server"]


class Reason:
    """Dead-letter reason codes; stable strings that operators filter on."""

    PAYLOAD_TOO_LARGE: Final = "payload_too_large"
    INVALID_JSON: Final = "invalid_json"
    INVALID_TOPIC: Final = "invalid_topic"
    UNKNOWN_DEVICE: Final = "unknown_device"
    NOT_AN_OBJECT: Final = "not_an_object"
    EMPTY_ARRAY: Final = "empty_array"
    MISSING_FIELD: Final = "missing_field"
    INVALID_FIELD: Final = "invalid_field"
    TS_IN_FUTURE: Final = "ts_in_future"
    DUPLICATE_IN_PAYLOAD: Final = "duplicate_in_payload"


@dataclass(frozen=True, slots=True)
class Limits:
    max_future_skew: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    index: int | None = None  # position in an array payload; None for the whole payload
    obj: Any = None  # the offending element, for array payloads


@dataclass(frozen=True, slots=True)
class Scan:
    device_id: str
    msg_id: str
    ts: datetime
    ts_source: TsSource
    received_at: datetime
    code: str
    mode: str | None
    qty: float | None
    location: str | None
    to_location: str | None
    ref: str | None
    task_id: str | None = None   # CONTRACT 3.1: the task this scan works
    short: bool = False          # a short pick: the bin holds no more than ``qty``


@dataclass(frozen=True, slots=True)
class RfidRead:
    epc: str  # upper-case hex
    antenna: int
    rssi: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class Rfid:
    device_id: str
    msg_id: str
    ts: datetime
    ts_source: TsSource
    received_at: datetime
    reads: tuple[RfidRead, ...]


@dataclass(frozen=True, slots=True)
class Position:
    device_id: str
    msg_id: str
    ts: datetime
    ts_source: TsSource
    received_at: datetime
    lat: float | None
    lon: float | None
    speed_kmh: float | None
    heading_deg: float | None
    alt_m: float | None
    accuracy_m: float | None
    source: Literal["json", "nmea"]
    fix_valid: bool


@dataclass(frozen=True, slots=True)
class EnvReading:
    device_id: str
    msg_id: str
    ts: datetime
    ts_source: TsSource
    received_at: datetime
    temp_c: float | None
    rh_pct: float | None
    probe: str | None


@dataclass(frozen=True, slots=True)
class Status:
    device_id: str
    msg_id: str
    ts: datetime
    ts_source: TsSource
    received_at: datetime
    battery_pct: float | None
    rssi_dbm: float | None
    fw: str | None
    uptime_s: int | None


Record = Scan | Rfid | Position | EnvReading | Status


@dataclass(frozen=True, slots=True)
class Decoded:
    records: tuple[Record, ...]
    rejections: tuple[Rejection, ...]


class _InvalidError(Exception):
    """Internal: one object failed validation. Never escapes this module."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- topics --------------------------------------------------------------------------------------


def parse_topic(topic: str, prefix: str) -> tuple[str, Kind] | Rejection:
    """``{prefix}/dev/{device_id}/{kind}`` to ``(device_id, kind)``."""
    head = f"{prefix}/dev/"
    if not topic.startswith(head):
        return Rejection(Reason.INVALID_TOPIC, f"topic {topic!r} is not under {head!r}")
    parts = topic[len(head):].split("/")
    if len(parts) != 2:
        return Rejection(Reason.INVALID_TOPIC, f"topic {topic!r} is not {head}<device_id>/<kind>")
    device_id, kind = parts
    if not DEVICE_ID_RE.match(device_id):
        return Rejection(Reason.INVALID_TOPIC, f"device id {device_id!r} is not a valid device id")
    if kind not in KINDS:
        return Rejection(Reason.INVALID_TOPIC, f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return device_id, kind  # type: ignore[return-value]


def device_topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/dev/{device_id}/{kind}"


# --- field helpers -------------------------------------------------------------------------------


def _missing(name: str) -> _InvalidError:
    return _InvalidError(Reason.MISSING_FIELD, f"'{name}' is required")


def _number(obj: Mapping[str, Any], name: str, lo: float, hi: float, *, required: bool = False) -> float | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' = {value} is outside [{lo}, {hi}]")
    return float(value)


def _text(obj: Mapping[str, Any], name: str, max_len: int, *, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' must be a string of 1 to {max_len} characters")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; no device has a reason to send one
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' contains a NUL character")
    return value


def _integer(obj: Mapping[str, Any], name: str, lo: int, hi: int, *, required: bool = False) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def parse_ts(value: Any, now: datetime, limits: Limits, name: str = "ts") -> datetime:
    """RFC 3339 with an offset, or integer epoch milliseconds; never more than the skew ahead."""
    if isinstance(value, bool):
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' must be RFC 3339 or epoch milliseconds")
    if isinstance(value, int):
        if value < _EPOCH_MS_MIN or value > 9_999_999_999_999:
            raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' = {value} is not plausible epoch milliseconds")
        ts = _EPOCH + timedelta(milliseconds=value)  # exact; value / 1000 as a float is not
    elif isinstance(value, str):
        try:
            # RFC 3339 s.5.6 allows lower-case "t" and "z"; fromisoformat takes only upper case.
            ts = datetime.fromisoformat(value.replace("t", "T").replace("z", "Z"))
        except ValueError:
            raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' = {value!r} is not RFC 3339") from None
        if ts.tzinfo is None:
            raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' = {value!r} needs a date, a time and an offset")
        if ts.year < 2000:
            raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' = {value!r} is before 2000: device clock not set")
    else:
        raise _InvalidError(Reason.INVALID_FIELD, f"'{name}' must be RFC 3339 or epoch milliseconds")
    if ts - now > limits.max_future_skew:
        raise _InvalidError(Reason.TS_IN_FUTURE, f"'{name}' {ts.isoformat()} is ahead of the server clock "
                                            f"by more than {limits.max_future_skew}")
    return ts


# --- kinds ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Head:
    device_id: str
    msg_id: str
    ts: datetime
    ts_source: TsSource
    received_at: datetime


def _scan(obj: Mapping[str, Any], h: _Head) -> Scan:
    code = _text(obj, "code", 4096, required=True)
    mode = _text(obj, "mode", 16)
    if mode is not None and mode not in SCAN_MODES:
        raise _InvalidError(Reason.INVALID_FIELD, f"'mode' {mode!r} is not one of {', '.join(SCAN_MODES)}")
    qty = _number(obj, "qty", 0, 1e9)
    if qty is not None and qty == 0 and mode != "count":
        raise _InvalidError(Reason.INVALID_FIELD, "'qty' must be positive (0 is only meaningful for a count)")
    short = obj.get("short", False)
    if not isinstance(short, bool):
        raise _InvalidError(Reason.INVALID_FIELD, "'short' must be true or false")
    return Scan(h.device_id, h.msg_id, h.ts, h.ts_source, h.received_at, code, mode, qty,  # type: ignore[arg-type]
                _text(obj, "location", 64), _text(obj, "to_location", 64), _text(obj, "ref", 128),
                _text(obj, "task_id", 64), short)


def _rfid(obj: Mapping[str, Any], h: _Head, now: datetime, limits: Limits) -> Rfid:
    reads = obj.get("reads")
    if reads is None:
        raise _missing("reads")
    if not isinstance(reads, list) or not reads or len(reads) > _MAX_READS:
        raise _InvalidError(Reason.INVALID_FIELD, f"'reads' must be a non-empty array of at most {_MAX_READS}")
    out = []
    for i, read in enumerate(reads):
        if not isinstance(read, dict):
            raise _InvalidError(Reason.INVALID_FIELD, f"reads[{i}] must be an object")
        try:
            epc = _text(read, "epc", 128, required=True)
            if not _HEX_RE.match(epc) or len(epc) < 24:  # type: ignore[arg-type]
                raise _InvalidError(Reason.INVALID_FIELD, f"'epc' {epc!r} must be at least 24 hex digits")
            antenna = _integer(read, "antenna", 0, 255, required=True)
            rssi = _number(read, "rssi", -150, 50, required=True)
            ts = h.ts if read.get("ts") is None else parse_ts(read["ts"], now, limits)
        except _InvalidError as exc:
            raise _InvalidError(exc.reason, f"reads[{i}]: {exc.detail}") from None
        out.append(RfidRead(epc.upper(), antenna, rssi, ts))  # type: ignore[arg-type, union-attr]
    return Rfid(h.device_id, h.msg_id, h.ts, h.ts_source, h.received_at, tuple(out))


def _position(obj: Mapping[str, Any], h: _Head) -> Position:
    speed = _number(obj, "speed_kmh", 0, 2000)
    heading = _number(obj, "heading_deg", 0, 360)
    alt = _number(obj, "alt_m", -1000, 100_000)
    accuracy = _number(obj, "accuracy_m", 0, 1e6)
    if obj.get("lat") is not None or obj.get("lon") is not None:
        lat = _number(obj, "lat", -90, 90, required=True)
        lon = _number(obj, "lon", -180, 180, required=True)
        return Position(h.device_id, h.msg_id, h.ts, h.ts_source, h.received_at, lat, lon,
                        speed, heading, alt, accuracy, "json", True)
    nmea = obj.get("nmea")
    if nmea is None:
        raise _InvalidError(Reason.MISSING_FIELD, "'lat' and 'lon' (or 'nmea') are required")
    sentences = [nmea] if isinstance(nmea, str) else nmea
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise _InvalidError(Reason.INVALID_FIELD, "'nmea' must be a sentence or an array of sentences")
    try:
        fix = parse_fix(sentences)
    except NmeaError as exc:
        raise _InvalidError(Reason.INVALID_FIELD, f"'nmea': {exc}") from None
    return Position(h.device_id, h.msg_id, h.ts, h.ts_source, h.received_at, fix.lat, fix.lon,
                    speed if speed is not None else fix.speed_kmh,
                    heading if heading is not None else fix.heading_deg,
                    alt if alt is not None else fix.alt_m, accuracy, "nmea", fix.valid)


def _env(obj: Mapping[str, Any], h: _Head) -> EnvReading:
    temp = _number(obj, "temp_c", -273.15, 1000)
    rh = _number(obj, "rh_pct", 0, 100)
    if temp is None and rh is None:
        raise _InvalidError(Reason.MISSING_FIELD, "'temp_c' and/or 'rh_pct' is required")
    return EnvReading(h.device_id, h.msg_id, h.ts, h.ts_source, h.received_at, temp, rh,
                      _text(obj, "probe", 64))


def _status(obj: Mapping[str, Any], h: _Head) -> Status:
    return Status(h.device_id, h.msg_id, h.ts, h.ts_source, h.received_at,
                  _number(obj, "battery_pct", 0, 100), _number(obj, "rssi_dbm", -200, 50),
                  _text(obj, "fw", 64), _integer(obj, "uptime_s", 0, 2**62))


_TS_REQUIRED: Final = frozenset({"rfid", "position", "env"})


def decode_object(obj: Any, device_id: str, kind: Kind, received_at: datetime, limits: Limits) -> Record:
    """One JSON object of the given kind, or ``_InvalidError``."""
    if not isinstance(obj, dict):
        raise _InvalidError(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    msg_id = _text(obj, "msg_id", 64, required=True)
    raw_ts = obj.get("ts")
    if raw_ts is None:
        if kind in _TS_REQUIRED:
            raise _missing("ts")
        head = _Head(device_id, msg_id, received_at, "server", received_at)  # type: ignore[arg-type]
    else:
        head = _Head(device_id, msg_id, parse_ts(raw_ts, received_at, limits), "device",  # type: ignore[arg-type]
                     received_at)
    if kind == "env":
        return _env(obj, head)
    if kind == "position":
        return _position(obj, head)
    if kind == "scan":
        return _scan(obj, head)
    if kind == "rfid":
        return _rfid(obj, head, received_at, limits)
    return _status(obj, head)


def decode_payload(value: Any, device_id: str, kind: Kind, received_at: datetime,
                   limits: Limits = Limits()) -> Decoded:
    """A parsed payload (one object or an array of them) to records and rejections.

    Valid objects of an array are accepted even when others in it are not. An object repeating
    a ``msg_id`` already seen earlier in the same array is rejected as a duplicate only if its
    content differs (an identical repeat is the same message and is simply applied once).
    """
    if isinstance(value, list):
        if not value:
            return Decoded((), (Rejection(Reason.EMPTY_ARRAY, "the payload is an empty array"),))
        items: list[tuple[int | None, Any]] = list(enumerate(value))
    else:
        items = [(None, value)]
    records: list[Record] = []
    rejections: list[Rejection] = []
    seen: dict[str, Any] = {}
    for index, obj in items:
        try:
            record = decode_object(obj, device_id, kind, received_at, limits)
        except _InvalidError as exc:
            rejections.append(Rejection(exc.reason, exc.detail, index, obj if index is not None else None))
            continue
        previous = seen.get(record.msg_id)
        if previous is not None:
            if previous != obj:
                rejections.append(Rejection(Reason.DUPLICATE_IN_PAYLOAD,
                                            f"msg_id {record.msg_id!r} repeats with other content", index, obj))
            continue
        seen[record.msg_id] = obj
        records.append(record)
    return Decoded(tuple(records), tuple(rejections))
