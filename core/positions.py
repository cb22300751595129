"""Filtering raw GPS positions before they drive any state.

Every position is kept and returned with the reason it was filtered (or None when accepted): a
filtered position is stored with its reason, never deleted, so a wrong filter can be seen and
replayed. Reasons, checked in this order, first match wins:

* ``invalid_fix``: the device said the fix is not valid, or lat/lon is missing, not finite or
  outside WGS84 ranges.
* ``null_island``: both |lat| and |lon| below 1e-6, the classic "no fix yet" report of 0/0.
* ``future``: ``ts`` later than ``max_future_s`` after the position was received (its
  ``received_at``, else ``now``). Judging against the receive time keeps the outcome stable when
  the same history is filtered again later.
* ``duplicate_time``: same ``ts`` as an earlier *accepted* position (the earlier by ``key``, the
  msg_id, wins). A tracker that repeats a time stamp repeats a fix, possibly with new noise.
* ``impossible_jump``: the speed implied by the distance and time from the last *confirmed*
  position exceeds ``max_speed_kmh``. A fix is confirmed once a later fix is consistent with it
  (reachable under the limit), so one wild fix never becomes the anchor: before the first
  confirmation the candidates wait; the first consistent pair confirms both, and the candidates
  before it that no later fix agreed with are the jumps. Candidates still unconfirmed at the end
  of the history: the oldest is accepted provisionally, the others are jumps from it. Measured against confirmed
  positions only, one wild fix does not also reject the good fixes after it, first fix or not.

Positions are processed sorted by (ts in UTC, key), so the result does not depend on arrival
order. Called per batch, the input must include the accepted positions just before the batch
(at least the last one), since the jump check looks back at them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol, TypeVar

from core.contract import Position
from core.geo import Fix, as_utc, haversine_km


class FilterReason:
    """Reason codes stored with a filtered position."""

    INVALID_FIX: Final = "invalid_fix"
    NULL_ISLAND: Final = "null_island"
    FUTURE: Final = "future"
    DUPLICATE_TIME: Final = "duplicate_time"
    IMPOSSIBLE_JUMP: Final = "impossible_jump"


_NULL_ISLAND_DEG: Final = 1e-6


@dataclass(frozen=True, slots=True)
class PositionIn:
    ts: datetime
    lat: float | None
    lon: float | None
    fix_valid: bool
    key: str  # msg_id: the deterministic tie-break between positions with the same ts
    speed_kmh: float | None = None
    received_at: datetime | None = None  # server receive time; ``future`` is judged against it


def _in_range(lat: float, lon: float) -> bool:
    return math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


class PositionLike(Protocol):
    """What the filter reads of a position: ``PositionIn``, or a store's typed row."""

    @property
    def ts(self) -> datetime: ...
    @property
    def lat(self) -> float | None: ...
    @property
    def lon(self) -> float | None: ...
    @property
    def fix_valid(self) -> bool: ...
    @property
    def key(self) -> str: ...
    @property
    def speed_kmh(self) -> float | None: ...
    @property
    def received_at(self) -> datetime | None: ...


P = TypeVar("P", bound=PositionLike)


def filter_positions(positions: Iterable[P], *, max_speed_kmh: float = 200.0, now: datetime,
                     max_future_s: float = 300, anchored: bool = False) -> list[tuple[P, str | None]]:
    """Every position, sorted by (ts, key), with its filter reason or None when accepted.

    ``anchored``: the first plausible position is already confirmed (a caller filtering a window
    seeds it with the last confirmed fix before the window)."""
    ordered = sorted(positions, key=lambda p: (as_utc(p.ts), p.key))
    future = timedelta(seconds=max_future_s)
    reasons: list[str | None] = []
    last: Fix | None = None  # last confirmed position: the anchor of the jump check
    pending: list[tuple[int, Fix]] = []  # unconfirmed candidates while there is no anchor yet
    for i, p in enumerate(ordered):
        reason: str | None = None
        lat, lon, ts = p.lat, p.lon, as_utc(p.ts)
        if not p.fix_valid or lat is None or lon is None or not _in_range(lat, lon):
            reason = FilterReason.INVALID_FIX
        elif abs(lat) < _NULL_ISLAND_DEG and abs(lon) < _NULL_ISLAND_DEG:
            reason = FilterReason.NULL_ISLAND
        elif ts > (p.received_at if p.received_at is not None else now) + future:
            reason = FilterReason.FUTURE
        else:
            fix = Fix(ts, lat, lon, p.speed_kmh)
            if last is None and anchored and not pending:
                last = fix
            elif last is not None:
                if ts == last.ts:
                    reason = FilterReason.DUPLICATE_TIME
                elif implied_speed_kmh(last, fix) > max_speed_kmh:
                    reason = FilterReason.IMPOSSIBLE_JUMP
                else:
                    last = fix
            elif pending and ts == pending[-1][1].ts:
                reason = FilterReason.DUPLICATE_TIME
            else:
                agreeing = [k for k, (_, c) in enumerate(pending) if implied_speed_kmh(c, fix) <= max_speed_kmh]
                if agreeing:
                    # The newest candidate this fix agrees with and this fix confirm each other;
                    # every other candidate was contradicted by the track that followed it.
                    keep = agreeing[-1]
                    for k, (j, _) in enumerate(pending):
                        if k != keep:
                            reasons[j] = FilterReason.IMPOSSIBLE_JUMP
                    pending, last = [], fix
                else:
                    pending.append((i, fix))
        reasons.append(reason)
    for j, _ in pending[1:]:  # unconfirmed at the end: only the oldest stands, provisionally
        reasons[j] = FilterReason.IMPOSSIBLE_JUMP
    return list(zip(ordered, reasons, strict=True))


def implied_speed_kmh(a: Fix, b: Fix) -> float:
    """Speed needed to go from ``a`` to ``b``; infinite for zero time and a real distance."""
    km = haversine_km(a.lat, a.lon, b.lat, b.lon)
    hours = abs((b.ts - a.ts).total_seconds()) / 3600.0
    if hours == 0:
        return 0.0 if km == 0 else math.inf
    return km / hours


def accepted_fixes(filtered: Iterable[tuple[PositionIn, str | None]]) -> list[Fix]:
    """The accepted positions as ``Fix`` values, ready for geofences and shipments."""
    return [Fix(as_utc(p.ts), p.lat, p.lon, p.speed_kmh)
            for p, reason in filtered if reason is None and p.lat is not None and p.lon is not None]


def from_record(position: Position) -> PositionIn:
    """A decoded position message, JSON or NMEA alike, as filter input (key = msg_id)."""
    return PositionIn(position.ts, position.lat, position.lon, position.fix_valid, position.msg_id,
                      position.speed_kmh, position.received_at)
