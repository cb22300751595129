"""A GPS tracker on a truck: a drive plan becomes fixes with noise, bad fixes, JSON or NMEA.

The truck follows ``Leg``s: park (stationary, a fix every ``parked_every_s``), drive along
waypoints at a cruising speed (a fix every ``moving_every_s``, speed varying a little, slowing
into corners) and stop (traffic, a break; stationary). Real receivers add a few metres of noise
and now and then report a bad fix: an invalid one (NMEA status ``V``) or a multipath jump
kilometres away, which the platform filters as an impossible jump. Output is either the
contract's JSON fields or an NMEA ``$GPRMC`` + ``$GPGGA`` pair with checksums.

A tracker may be offline for a period: it keeps its fixes in a buffer and, when it is back,
flushes them as arrays of ``flush_chunk`` fixes, chunks in shuffled order (modems retry chunks
independently), which is the out-of-order, late data the platform must absorb.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from simulators.messages import Message, MsgIds, dumps, epoch_ms

EARTH_M_PER_DEG = 111_320.0
KNOTS_PER_KMH = 1 / 1.852


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Leg:
    kind: Literal["park", "drive", "stop"]
    seconds: float = 0.0  # park / stop
    waypoints: tuple[Point, ...] = ()  # drive: from the current position through these
    speed_kmh: float = 50.0  # drive: cruising speed


@dataclass(frozen=True, slots=True)
class TruthFix:
    ts: datetime
    lat: float
    lon: float
    speed_kmh: float
    heading_deg: float


def _metres(a: Point, b: Point) -> tuple[float, float]:
    """(east, north) metres from a to b, equirectangular: plenty for city-sized distances."""
    north = (b.lat - a.lat) * EARTH_M_PER_DEG
    east = (b.lon - a.lon) * EARTH_M_PER_DEG * math.cos(math.radians((a.lat + b.lat) / 2))
    return east, north


def _offset(p: Point, east: float, north: float) -> Point:
    return Point(p.lat + north / EARTH_M_PER_DEG,
                 p.lon + east / (EARTH_M_PER_DEG * math.cos(math.radians(p.lat))))


def _heading(east: float, north: float) -> float:
    return math.degrees(math.atan2(east, north)) % 360.0


@dataclass(frozen=True, slots=True)
class Track:
    fixes: list[TruthFix]
    leg_starts: list[datetime]  # when each leg began: scenarios schedule scans around them
    end: datetime


def plan_track(start: datetime, origin: Point, legs: Sequence[Leg], rng: random.Random, *,
               moving_every_s: float = 15.0, parked_every_s: float = 60.0) -> Track:
    """The true positions at the tracker's sampling times."""
    fixes: list[TruthFix] = []
    starts: list[datetime] = []
    t = start
    here = origin
    heading = 0.0
    for leg in legs:
        starts.append(t)
        if leg.kind in ("park", "stop"):
            every = parked_every_s if leg.kind == "park" else moving_every_s
            end = t + timedelta(seconds=leg.seconds)
            while t < end:
                fixes.append(TruthFix(t, here.lat, here.lon, 0.0, heading))
                t += timedelta(seconds=every)
            t = end
            continue
        for target in leg.waypoints:
            east, north = _metres(here, target)
            dist = math.hypot(east, north)
            if dist < 1:
                continue
            heading = _heading(east, north)
            done = 0.0
            while done < dist:
                speed = max(5.0, leg.speed_kmh * rng.uniform(0.85, 1.1))
                # slow down over the last 150 m of a segment: a corner or a junction
                if dist - done < 150:
                    speed = min(speed, 25.0)
                fixes.append(TruthFix(t, *_lat_lon(_offset(here, east * done / dist, north * done / dist)),
                                      speed_kmh=speed, heading_deg=heading))
                step = speed / 3.6 * moving_every_s
                done += step
                t += timedelta(seconds=moving_every_s)
            here = target
    fixes.append(TruthFix(t, here.lat, here.lon, 0.0, heading))
    return Track(fixes, starts, t)


def _lat_lon(p: Point) -> tuple[float, float]:
    return p.lat, p.lon


def _nmea_checksum(body: str) -> str:
    value = 0
    for ch in body:
        value ^= ord(ch)
    return f"{value:02X}"


def _nmea_coord(value: float, lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if lat else ("E" if value >= 0 else "W")
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60
    width = 2 if lat else 3
    return f"{degrees:0{width}d}{minutes:07.4f}", hemi


def nmea_sentences(ts: datetime, lat: float, lon: float, speed_kmh: float, heading: float, *,
                   valid: bool = True, alt_m: float = 2.0, sats: int = 9) -> list[str]:
    """``$GPRMC`` and ``$GPGGA`` for one fix, with checksums."""
    utc = ts.astimezone(UTC)
    hms = utc.strftime("%H%M%S") + f".{utc.microsecond // 10000:02d}"
    la, ns = _nmea_coord(lat, True)
    lo, ew = _nmea_coord(lon, False)
    rmc = (f"GPRMC,{hms},{'A' if valid else 'V'},{la},{ns},{lo},{ew},{speed_kmh * KNOTS_PER_KMH:.1f},"
           f"{heading:.1f},{utc:%d%m%y},,,{'A' if valid else 'N'}")
    gga = f"GPGGA,{hms},{la},{ns},{lo},{ew},{1 if valid else 0},{sats:02d},0.9,{alt_m:.1f},M,46.9,M,,"
    return [f"${s}*{_nmea_checksum(s)}" for s in (rmc, gga)]


@dataclass
class TrackerModel:
    device_id: str
    rng: random.Random
    tag: str
    fmt: Literal["json", "nmea"] = "json"
    noise_m: float = 4.0
    bad_fix_rate: float = 0.01
    offline: tuple[datetime, datetime] | None = None  # buffered from the first to the second
    flush_chunk: int = 10
    ids: MsgIds = field(init=False)
    bad_fixes: int = 0

    def __post_init__(self) -> None:
        self.ids = MsgIds(self.tag, "p")

    def _body(self, fix: TruthFix) -> dict[str, Any]:
        noisy = _offset(Point(fix.lat, fix.lon), self.rng.gauss(0, self.noise_m), self.rng.gauss(0, self.noise_m))
        lat, lon, valid = noisy.lat, noisy.lon, True
        roll = self.rng.random()
        if roll < self.bad_fix_rate / 2:
            valid = False  # the receiver lost its fix and says so
            self.bad_fixes += 1
        elif roll < self.bad_fix_rate:
            # multipath in a city canyon: a fix kilometres away, which no truck can reach in seconds
            jump = _offset(noisy, self.rng.choice((-1, 1)) * self.rng.uniform(3000, 8000),
                           self.rng.choice((-1, 1)) * self.rng.uniform(3000, 8000))
            lat, lon = jump.lat, jump.lon
            self.bad_fixes += 1
        speed = max(0.0, fix.speed_kmh + self.rng.gauss(0, 1.0)) if fix.speed_kmh > 0 else 0.0
        body: dict[str, Any] = {"msg_id": self.ids.next(), "ts": epoch_ms(fix.ts)}
        if self.fmt == "nmea":
            body["nmea"] = nmea_sentences(fix.ts, lat, lon, speed, fix.heading_deg, valid=valid)
        elif not valid:
            # JSON firmwares have no validity flag: an invalid fix goes out as the classic 0/0.
            body.update(lat=0.0, lon=0.0, accuracy_m=9999.0)
        else:
            body.update(lat=round(lat, 6), lon=round(lon, 6), speed_kmh=round(speed, 1),
                        heading_deg=round(fix.heading_deg, 1), accuracy_m=round(abs(self.rng.gauss(4, 1.5)) + 1, 1))
        return body

    def messages(self, track: Sequence[TruthFix]) -> list[Message]:
        out: list[Message] = []
        buffered: list[dict[str, Any]] = []
        for fix in track:
            body = self._body(fix)
            # Cellular upload: a second or two after the fix. Drawn for buffered fixes too, so a
            # tracker with and without an offline period reports exactly the same fixes.
            upload = timedelta(seconds=self.rng.uniform(0.2, 2.0))
            if self.offline is not None and self.offline[0] <= fix.ts < self.offline[1]:
                buffered.append(body)
                continue
            out.append(Message(fix.ts + upload, self.device_id, "position", dumps(body), f"position:{self.fmt}"))
        if buffered and self.offline is not None:
            chunks = [buffered[i:i + self.flush_chunk] for i in range(0, len(buffered), self.flush_chunk)]
            self.rng.shuffle(chunks)
            at = self.offline[1]
            for chunk in chunks:
                at += timedelta(seconds=self.rng.uniform(0.5, 2.0))
                out.append(Message(at, self.device_id, "position", dumps(chunk), "position:backlog"))
        return sorted(out, key=lambda m: m.at)


def route_km(origin: Point, legs: Sequence[Leg]) -> float:
    here, total = origin, 0.0
    for leg in legs:
        for p in leg.waypoints:
            east, north = _metres(here, p)
            total += math.hypot(east, north) / 1000
            here = p
    return total

