"""NMEA 0183 position sentences (RMC and GGA of any satellite-system talker) to a position fix.

pynmea2 does the parsing and the checksum; this module only decides what a set of sentences
means as one fix. A sentence without a checksum is refused: the contract says it is verified.

Multi-GNSS receivers send RMC/GGA under the talker of the system(s) used: GP (GPS), GL (GLONASS),
GA (Galileo), GB or BD (BeiDou), GQ (QZSS), GI (NavIC), GN (combined), and IN for an integrated
instrument relaying its receiver; all are the same sentences.

A fix is valid only when every sentence of it says so (as gpsd decides): an RMC with status
``V`` or NMEA 2.3 mode indicator ``N``, or a GGA with quality 0, makes the whole fix invalid,
whatever the other sentence says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pynmea2

KNOTS_TO_KMH = 1.852
POSITION_TALKERS: Final = frozenset({"GP", "GL", "GA", "GB", "BD", "GQ", "GI", "GN", "IN"})
POSITION_TYPES: Final = frozenset({"RMC", "GGA"})


def is_position_sentence(sentence: str) -> bool:
    """True for "$ttRMC"/"$ttGGA" of a supported talker (cheap: the bridge filters with it)."""
    return sentence.startswith("$") and sentence[1:3] in POSITION_TALKERS and sentence[3:6] in POSITION_TYPES


class NmeaError(ValueError):
    """A sentence that cannot be used: bad checksum, unsupported type, malformed fields."""


@dataclass(frozen=True, slots=True)
class NmeaFix:
    lat: float | None
    lon: float | None
    speed_kmh: float | None
    heading_deg: float | None
    alt_m: float | None
    valid: bool


def _parse_one(sentence: str) -> pynmea2.NMEASentence:
    try:
        msg = pynmea2.parse(sentence.strip(), check=True)
    except pynmea2.ChecksumError as exc:
        raise NmeaError(f"NMEA checksum: {exc.args[0]}") from None
    except (pynmea2.ParseError, ValueError, AttributeError) as exc:
        raise NmeaError(f"unparseable NMEA sentence: {exc}") from None
    talker, kind = getattr(msg, "talker", ""), getattr(msg, "sentence_type", "")
    if talker not in POSITION_TALKERS or kind not in POSITION_TYPES:
        raise NmeaError(f"unsupported NMEA sentence type {talker}{kind!r} (use RMC or GGA)")
    return msg


def _coordinates(msg: pynmea2.NMEASentence) -> tuple[float | None, float | None]:
    if not getattr(msg, "lat", "") or not getattr(msg, "lon", ""):
        return None, None
    try:
        return float(msg.latitude), float(msg.longitude)
    except (ValueError, TypeError):
        raise NmeaError("NMEA coordinates are malformed") from None


def _optional_float(value: object) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NmeaError(f"NMEA field {value!r} is not a number") from None


def parse_fix(sentences: list[str]) -> NmeaFix:
    """Merge RMC (position, speed, course, validity) and GGA (position, altitude, quality)."""
    if not sentences:
        raise NmeaError("no NMEA sentence given")
    lat = lon = speed = heading = alt = None
    valid = True
    for msg in (_parse_one(s) for s in sentences):
        m_lat, m_lon = _coordinates(msg)
        if msg.sentence_type == "RMC":
            mode = getattr(msg, "mode_indicator", None) if len(msg.data) > 11 else None
            valid = valid and msg.status == "A" and mode != "N"
            knots = _optional_float(msg.spd_over_grnd)
            speed = None if knots is None else knots * KNOTS_TO_KMH
            heading = _optional_float(msg.true_course)
            # RMC is the reference position when both are given.
            if m_lat is not None:
                lat, lon = m_lat, m_lon
        else:
            try:
                quality = int(msg.gps_qual or 0)
            except ValueError:
                raise NmeaError(f"GGA fix quality {msg.gps_qual!r} is not a number") from None
            valid = valid and quality > 0
            alt = _optional_float(msg.altitude)
            if lat is None and m_lat is not None:
                lat, lon = m_lat, m_lon
    return NmeaFix(lat=lat, lon=lon, speed_kmh=speed, heading_deg=heading, alt_m=alt,
                   valid=valid and lat is not None)
