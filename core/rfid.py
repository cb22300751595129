"""RFID dock-gate smoothing and passage direction, pure and deterministic.

A gate has two antenna zones: *outer* (at the door) and *inner* (a few metres inside). A tag
carried through is read many times by both, with 30-40 % of reads missed, and tags at a
neighbouring door leak in as weak reads. ``passages`` turns all reads of one gate into one
``Passage`` per tag per pass, with a direction only when the evidence supports one.

Per tag, in this order:

1. Reads weaker than ``rssi_floor_dbm`` (a read exactly at the floor is kept) and reads from
   antennas of neither zone are dropped before anything else, so stray reads can neither create
   a passage nor keep one open.
2. Exact repeats (same epc, antenna, rssi, ts) are one read: at-least-once delivery and reader
   retries must not change the outcome. EPCs are compared upper-cased; aware timestamps are
   converted to UTC (output times are UTC).
3. The reads are split into passages wherever the gap between consecutive reads is
   ``absent_after_s`` or more. A gap of exactly ``absent_after_s`` splits, so that a passage
   reported final by ``closed_passages`` (whose last read is at least ``absent_after_s`` before
   now) can never be extended by a read at or after ``now``.
4. A zone counts only if it saw the tag at ``min_reads`` distinct instants within a span of at
   most ``confirm_window_s``. Distinct instants rather than reads, because two antennas of one
   zone answering at the same instant are one sighting, not two.
5. A counted zone's peak is the time of its strongest read over the whole passage (ties: the
   earliest). Both zones counted: outer peak first is ``inbound`` (outer location -> inner
   location), inner peak first is ``outbound``; peaks strictly closer than
   ``min_peak_separation_s`` give no direction (``peaks_too_close``). One zone counted:
   ``one_zone_only``; none: ``not_confirmed``. A passage without direction is still returned,
   so the observation is recorded; it moves no stock.
6. ``Passage.ts``, the event time of the movement, is the later peak; without any counted zone
   it is the last read.

Everything is computed from the set of distinct reads sorted by value, and the result is sorted
by (first_ts, epc), so neither the input order nor repeated reads change the output.

Limitation: a tag that lingers in the door and goes back out without a gap of
``absent_after_s`` is one passage, judged by where its two peaks fall.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

from core.ledger import RFID_STEP, Posting

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True, slots=True)
class GateConfig:
    outer_antennas: frozenset[int]
    inner_antennas: frozenset[int]
    outer_location: str
    inner_location: str
    rssi_floor_dbm: float = -75.0  # weaker reads are stray (neighbouring door) and ignored
    min_reads: int = 2  # distinct read instants within confirm_window_s for a zone to count
    confirm_window_s: float = 2.0
    absent_after_s: float = 6.0  # no read for this long ends a passage
    min_peak_separation_s: float = 0.2  # peaks closer than this: direction unknown

    def __post_init__(self) -> None:
        if not self.outer_antennas or not self.inner_antennas:
            raise ValueError("a gate needs at least one outer and one inner antenna")
        if self.outer_antennas & self.inner_antennas:
            raise ValueError(f"antennas {sorted(self.outer_antennas & self.inner_antennas)} are in both zones")
        if not self.outer_location or not self.inner_location or self.outer_location == self.inner_location:
            raise ValueError("outer and inner locations must be set and different")
        if self.min_reads < 1:
            raise ValueError("min_reads must be at least 1")
        if self.confirm_window_s < 0 or self.absent_after_s <= 0 or self.min_peak_separation_s < 0:
            raise ValueError("confirm_window_s and min_peak_separation_s must be >= 0, absent_after_s > 0")


@dataclass(frozen=True, slots=True)
class Read:
    epc: str
    antenna: int
    rssi: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class Passage:
    epc: str
    first_ts: datetime
    last_ts: datetime
    direction: Direction | None  # inbound = outer peak before inner peak
    from_location: str | None  # None when the direction is unknown
    to_location: str | None
    outer_peak_ts: datetime | None  # None when the outer zone did not count
    inner_peak_ts: datetime | None
    reads: int  # distinct reads kept (above the floor, on the gate's antennas)
    reason: str | None  # why there is no direction: 'one_zone_only', 'peaks_too_close', 'not_confirmed'
    ts: datetime  # event time of the movement: the later of the two peaks


class NoDirection:
    """``Passage.reason`` values."""

    ONE_ZONE_ONLY: Final = "one_zone_only"
    PEAKS_TOO_CLOSE: Final = "peaks_too_close"
    NOT_CONFIRMED: Final = "not_confirmed"


def _sort_key(read: Read) -> tuple[datetime, int, float]:
    # Equal instants in different time zones compare equal; normalising to UTC keeps which one
    # survives de-duplication (and so the output) independent of the input order.
    ts = read.ts.astimezone(UTC) if read.ts.tzinfo is not None else read.ts
    return (ts, read.antenna, read.rssi)


def passages(reads: Iterable[Read], gate: GateConfig) -> list[Passage]:
    """All passages in the reads of one gate, sorted by (first_ts, epc)."""
    zone_antennas = gate.outer_antennas | gate.inner_antennas
    by_tag: defaultdict[str, set[tuple[datetime, int, float]]] = defaultdict(set)
    for read in reads:
        # Written as "not >=" so that a NaN RSSI is dropped too rather than poisoning the sort.
        if not read.rssi >= gate.rssi_floor_dbm or read.antenna not in zone_antennas:
            continue
        by_tag[read.epc.upper()].add(_sort_key(read))

    absent = timedelta(seconds=gate.absent_after_s)
    result: list[Passage] = []
    for epc, keys in by_tag.items():
        tag_reads = [Read(epc=epc, antenna=a, rssi=r, ts=t) for t, a, r in sorted(keys)]
        start = 0
        for i in range(1, len(tag_reads) + 1):
            if i == len(tag_reads) or tag_reads[i].ts - tag_reads[i - 1].ts >= absent:
                result.append(_passage(epc, tag_reads[start:i], gate))
                start = i
    result.sort(key=lambda p: (p.first_ts, p.epc))
    return result


def closed_passages(reads: Iterable[Read], gate: GateConfig, now_event_time: datetime) -> list[Passage]:
    """The passages that are final at ``now_event_time``: last read at least ``absent_after_s`` before it.

    Final assumes every read up to ``now_event_time`` has been seen; holding back late reads
    (a watermark) is the caller's job.
    """
    cutoff = now_event_time - timedelta(seconds=gate.absent_after_s)
    return [p for p in passages(reads, gate) if p.last_ts <= cutoff]


def _confirmed(zone_reads: Sequence[Read], gate: GateConfig) -> bool:
    instants = sorted({r.ts for r in zone_reads})
    n = gate.min_reads
    window = timedelta(seconds=gate.confirm_window_s)
    return any(instants[i + n - 1] - instants[i] <= window for i in range(len(instants) - n + 1))


def _peak(zone_reads: Sequence[Read]) -> datetime:
    # zone_reads are sorted by time, and max() keeps the first of equal maxima: ties go to the earliest.
    return max(zone_reads, key=lambda r: r.rssi).ts


def _passage(epc: str, tag_reads: Sequence[Read], gate: GateConfig) -> Passage:
    outer = [r for r in tag_reads if r.antenna in gate.outer_antennas]
    inner = [r for r in tag_reads if r.antenna in gate.inner_antennas]
    outer_peak = _peak(outer) if outer and _confirmed(outer, gate) else None
    inner_peak = _peak(inner) if inner and _confirmed(inner, gate) else None

    direction: Direction | None = None
    from_location: str | None = None
    to_location: str | None = None
    reason: str | None = None
    if outer_peak is None and inner_peak is None:
        reason = NoDirection.NOT_CONFIRMED
    elif outer_peak is None or inner_peak is None:
        reason = NoDirection.ONE_ZONE_ONLY
    elif abs(inner_peak - outer_peak) < timedelta(seconds=gate.min_peak_separation_s):
        reason = NoDirection.PEAKS_TOO_CLOSE
    elif outer_peak < inner_peak:
        direction, from_location, to_location = "inbound", gate.outer_location, gate.inner_location
    else:
        direction, from_location, to_location = "outbound", gate.inner_location, gate.outer_location

    peaks = [p for p in (outer_peak, inner_peak) if p is not None]
    return Passage(
        epc=epc,
        first_ts=tag_reads[0].ts,
        last_ts=tag_reads[-1].ts,
        direction=direction,
        from_location=from_location,
        to_location=to_location,
        outer_peak_ts=outer_peak,
        inner_peak_ts=inner_peak,
        reads=len(tag_reads),
        reason=reason,
        ts=max(peaks) if peaks else tag_reads[-1].ts,
    )


# --- what a passage does to stock ------------------------------------------------------------------
# One rule for the live sweep (ingest.rfid_sweep) and the replay (core.replay).


def passage_reason(p: Passage, scheme: str | None, sku: str | None) -> str | None:
    """Why a passage moves no stock (None: it moves one unit). ``scheme`` is the decoded EPC's
    (None: undecodable), ``sku`` the item of its GTIN (None: unknown)."""
    if p.reason is not None:
        return p.reason
    if scheme != "sgtin":
        return "not_a_trade_item"  # an SSCC pallet, a location tag, garbage: an observation only
    if sku is None:
        return "unknown_gtin"
    return None


def passage_posting(p: Passage, sku: str | None, serial: str | None, reason: str | None) -> Posting | None:
    """The movement of one passage: one unit of the serial from the outer to the inner location
    (or back), at the later of the two peaks."""
    if reason is not None or p.direction is None or sku is None or p.from_location is None or p.to_location is None:
        return None
    step, disposition = RFID_STEP[p.direction]
    return Posting(sku, Decimal(1), p.from_location, p.to_location, None, serial, None, step, disposition, None, p.ts)
