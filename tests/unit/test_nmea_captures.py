"""gpsd's regression captures from 16 real receivers, played through the GPS bridge and the
``position`` decoder, compared with the fixes gpsd itself reports (../shared/nmea-captures)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.contract import Position, decode_payload
from core.nmea import is_position_sentence, parse_fix
from devices.gps_bridge import FixCollector, position_message

CAPTURES = Path(__file__).parents[2].parent / "shared" / "nmea-captures"
LOGS = sorted(p.name for p in CAPTURES.glob("*.log"))
EARTH_M = 6_371_000.0
TOLERANCE_M = 1.0
TOLERANCE = timedelta(seconds=1)
# Deliberate differences, each asserted where it arises:
# (log, GGA time) of a GGA with quality > 0 and 0 satellites used: gpsd answers it with "no fix",
# then reports that very position as a fix once the epoch's GSA/RMC arrive; a GGA on its own is
# valid for us (the fix quality says so).
SATELLITES_00_DIFFERENCES = {("furuno_gl_ga.log", "120213.000"), ("haicom-305N.log", "095304.802")}
# (log, sentence time) of a valid RMC/GGA that gpsd read but answered with no TPV at all: the
# Humminbird sends one position sentence a second, rotating RMC/GLL/GGA, and these two end no
# reporting cycle of gpsd's during its start-up. There is no gpsd fix to compare them with (nor
# a "no fix"); we publish them, and they lie on the boat's track between gpsd's fixes.
GPSD_SILENT_FIXES = {("humminbird-M37.log", "194103"), ("humminbird-M37.log", "194104")}


@dataclass(frozen=True)
class GpsdFix:
    time: datetime | None
    lat: float
    lon: float


@dataclass(frozen=True)
class Gpsd:
    fixes: list[GpsdFix]           # TPVs with mode 2/3 and a position
    no_fix_after: set[str]         # sentences gpsd answered with a mode 1 TPV
    silent: set[str]               # sentences gpsd answered with no TPV at all (neither fix nor no-fix)


def _gpsd(log: str) -> Gpsd:
    gpsd = Gpsd([], set(), set())
    last_sentence = ""
    for line in (CAPTURES / f"{log}.chk").read_text(encoding="ascii").splitlines():
        if line.startswith("$"):
            last_sentence = line.strip()
            gpsd.silent.add(last_sentence)
            continue
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if obj.get("class") != "TPV":
            continue
        gpsd.silent.discard(last_sentence)
        if obj.get("mode", 0) >= 2 and "lat" in obj:
            time = datetime.fromisoformat(obj["time"]) if "time" in obj else None
            gpsd.fixes.append(GpsdFix(time, obj["lat"], obj["lon"]))
        elif obj.get("mode") == 1:
            gpsd.no_fix_after.add(last_sentence)
    return gpsd


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(math.sqrt(a))


def _sentences(log: str) -> list[str]:
    lines = (CAPTURES / log).read_bytes().decode("ascii").splitlines()
    return [line.strip() for line in lines if line.strip().startswith("$")]


@dataclass(frozen=True)
class Published:
    position: Position
    sentences: list[str]
    ts_from_gps: bool


def _bridge_positions(log: str) -> list[Published]:
    """Every fix the bridge would publish (interval 0), decoded as the server decodes it."""
    collector = FixCollector(settle_s=0.5)
    received = datetime.now(UTC)
    published: list[Published] = []
    mono = 0.0
    sentences = _sentences(log)
    for n in range(len(sentences) + 1):
        mono += 0.05
        if n < len(sentences):
            collector.feed(sentences[n], mono, received)
        else:
            mono += 10  # after the last line: the last group is complete once the settle time has passed
        fix = collector.take(mono)
        if fix is None:
            continue
        decoded = decode_payload(position_message(fix, f"m{n}"), "GPS-1", "position", received)
        assert not decoded.rejections, decoded.rejections
        (record,) = decoded.records
        assert isinstance(record, Position)
        published.append(Published(record, fix.sentences, fix.ts_from_gps))
    return published


def _matches(lat: float, lon: float, ts: datetime | None, gpsd: list[GpsdFix]) -> bool:
    return any(_metres(lat, lon, g.lat, g.lon) <= TOLERANCE_M
               and (ts is None or g.time is None or abs(g.time - ts) <= TOLERANCE) for g in gpsd)


def test_all_sixteen_captures_are_here() -> None:
    assert len(LOGS) == 16


@pytest.mark.parametrize("log", LOGS)
def test_every_published_fix_is_one_gpsd_reports_within_1_m_and_1_s(log: str) -> None:
    gpsd = _gpsd(log)
    published = _bridge_positions(log)
    unreported = 0
    for p in published:
        pos = p.position
        assert pos.fix_valid and pos.lat is not None and pos.lon is not None
        for no_fix in set(p.sentences) & gpsd.no_fix_after:
            assert (log, no_fix[7:17]) in SATELLITES_00_DIFFERENCES, f"{log}: published {p.sentences}, gpsd: no fix"
        if _matches(pos.lat, pos.lon, pos.ts if p.ts_from_gps else None, gpsd.fixes):
            continue
        assert set(p.sentences) <= gpsd.silent, f"{log}: published {pos.lat},{pos.lon} at {pos.ts}: gpsd has none"
        assert {(log, s[7:17].split(",")[0]) for s in p.sentences} <= GPSD_SILENT_FIXES
        unreported += 1
    assert unreported <= len({k for k in GPSD_SILENT_FIXES if k[0] == log})
    if gpsd.fixes:
        assert len(published) >= 2, f"{log}: gpsd has {len(gpsd.fixes)} fixes, the bridge published {len(published)}"
    else:
        assert published == [], f"{log}: gpsd never had a fix, the bridge published {len(published)}"


@pytest.mark.parametrize("log", LOGS)
def test_the_decoder_alone_calls_valid_only_what_gpsd_calls_a_fix(log: str) -> None:
    """Each RMC/GGA sentence on its own through the server's decoder (a device need not use our bridge)."""
    gpsd = _gpsd(log)
    checked = 0
    for sentence in _sentences(log):
        if not is_position_sentence(sentence):
            continue
        fix = parse_fix([sentence])
        if sentence in gpsd.no_fix_after and fix.valid:
            assert (log, sentence[7:17]) in SATELLITES_00_DIFFERENCES, f"{log}: gpsd reports no fix after {sentence!r}"
            assert sentence.split(",")[7] == "00"
        if fix.valid:
            assert fix.lat is not None and fix.lon is not None
            if not _matches(fix.lat, fix.lon, None, gpsd.fixes):
                assert sentence in gpsd.silent and (log, sentence[7:17].split(",")[0]) in GPSD_SILENT_FIXES, \
                    f"{log}: {sentence!r} gave a fix gpsd does not report"
        checked += 1
    assert checked > 0


def test_a_void_rmc_with_a_valid_gga_is_no_fix() -> None:
    """skytraq: RMC V with a placeholder position; the pairing with a quality-1 GGA must not make it valid."""
    rmc = "$GPRMC,071732.929,V,8960.0000,N,00000.0000,E,0.00,0.00,111111,,,N*73"
    gga = "$GPGGA,071739.000,4404.1284,N,12118.8506,W,1,4,5.20,1135.9,M,-19.6,M,,*51"  # tr737A+, quality 1
    assert not parse_fix([rmc, gga]).valid
    assert not parse_fix([gga, rmc]).valid
    assert parse_fix([gga]).valid


def test_gga_quality_0_is_no_fix_even_with_a_position() -> None:
    gga = "$GPGGA,071734.929,4404.1178,N,12118.8608,W,0,4,,1127.8,M,-19.6,M,,*49"  # tr737A+ line 12
    fix = parse_fix([gga])
    assert fix.lat is not None and not fix.valid


@pytest.mark.parametrize("talker_log", ["beidou-bd.log", "bu353-glonass.log", "ch-4711.log", "furuno_gl_ga.log",
                                        "telit-pls83-w.log", "jl-micro-jlt.log"])
def test_multi_gnss_talkers_are_accepted(talker_log: str) -> None:
    talkers = {s[1:3] for s in _sentences(talker_log) if is_position_sentence(s)}
    assert talkers - {"GP"}, talkers
    for sentence in _sentences(talker_log):
        if is_position_sentence(sentence):
            parse_fix([sentence])  # raises NmeaError for an unsupported talker


@pytest.mark.parametrize("talker", ["GL", "GA", "GB", "BD", "GN"])
def test_each_gnss_talker_of_rmc_and_gga_is_a_position(talker: str) -> None:
    def checksummed(body: str) -> str:
        checksum = 0
        for char in body:
            checksum ^= ord(char)
        return f"${body}*{checksum:02X}"

    rmc = checksummed(f"{talker}RMC,030719.000,A,3747.0873,S,17518.8938,E,0.10,0.00,311214,,,A")
    gga = checksummed(f"{talker}GGA,030719.000,3747.0873,S,17518.8938,E,1,08,1.0,40.0,M,20.0,M,,")
    fix = parse_fix([rmc, gga])
    assert fix.valid and fix.lat == pytest.approx(-37.784788333) and fix.lon == pytest.approx(175.314896667)
