"""Cold-chain excursions, mean kinetic temperature and the temperature summary of a shipment.

Pure functions of the whole reading history: readings are de-duplicated and sorted by event
time inside (equal times by value), so late, repeated or shuffled readings give exactly the same
excursions as in-order ones.

Time weighting is sample-and-hold: a reading stands for the time until the next one, capped at
``max_gap_s`` so that a sensor that went silent does not count as out of range (or as any
temperature) for the whole silence. The *last* reading is where the two uses differ:

* alarms (``excursions``) give it no time: an alarm is only raised on time that has been
  observed, so it never fires ahead of the data, and the next reading fills that time in;
* the summary and MKT (``summary``, ``mkt_c``) describe a record the way a logger report does:
  every sample stands for one sample interval, so the last one weighs the median interval of
  the series (capped at ``max_gap_s``). That makes "18 hourly samples at 5 °C then 6 at 14 °C"
  exactly 18 h and 6 h.

Alarm rules (DOMAIN "Cold chain", CONTRACT 2.4):

* A value equal to a limit is in range; a missing limit (None) is never crossed.
* Consecutive trigger per type (``temperature_high``/``_low``, ``humidity_high``/``_low``): an
  alarm triggers once the value has been out of range continuously for ``delay_s`` of event
  time. ``started_at`` is the first out-of-range reading of the run and ``triggered_at`` is
  ``started_at + delay_s``. A reading back in range before that resets the run, and so does a
  gap longer than ``max_gap_s`` (continuity is unknown across it).
* Once active, an alarm clears only at the first reading back inside by the hysteresis
  (high: value <= max - hysteresis; low: value >= min + hysteresis). Values back in range but
  within the hysteresis band keep it active, so noise at the limit cannot flap it; a gap keeps
  it active too (nothing says it cleared). After clearing, a new alarm needs ``delay_s`` again.
  So there is at most one active alarm per type.
* ``peak_value`` is the most extreme value from start to clear; ``seconds_out`` the time out of
  range (not counting the hysteresis band) from start to clear.
* Cumulative (``temperature_cumulative``, when ``Profile.cumulative_s`` is set): once the total
  time out of range, either side, reaches ``cumulative_s``. It never clears (the goods have had
  their exposure); ``started_at`` is the first out-of-range reading, ``triggered_at`` the moment
  the total reached the limit, ``peak_value`` the value furthest outside its limit and
  ``seconds_out`` the total over the whole history.

NaN values are treated as missing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Final, Literal

import numpy as np

AlarmType = Literal["temperature_high", "temperature_low", "humidity_high", "humidity_low",
                    "temperature_cumulative", "battery_low"]
KELVIN: Final = 273.15


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC) if ts.tzinfo is not None else ts


@dataclass(frozen=True, slots=True)
class Profile:
    temp_min_c: float | None  # None: no lower limit (e.g. frozen goods, <= -18 °C)
    temp_max_c: float | None
    rh_min_pct: float | None = None
    rh_max_pct: float | None = None
    delay_s: float = 300
    hysteresis_c: float = 0.5
    cumulative_s: float | None = None
    rh_hysteresis_pct: float | None = None  # None: the same number as hysteresis_c, in percentage points

    def __post_init__(self) -> None:
        for lo, hi, what in ((self.temp_min_c, self.temp_max_c, "temperature"),
                             (self.rh_min_pct, self.rh_max_pct, "humidity")):
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{what} minimum {lo} is above the maximum {hi}")
        if not self.delay_s >= 0 or not self.hysteresis_c >= 0:
            raise ValueError("delay_s and hysteresis_c must be >= 0")
        if self.cumulative_s is not None and not self.cumulative_s >= 0:
            raise ValueError("cumulative_s must be >= 0")
        if self.rh_hysteresis_pct is not None and not self.rh_hysteresis_pct >= 0:
            raise ValueError("rh_hysteresis_pct must be >= 0")

    def temp_out(self, value: float) -> bool:
        return ((self.temp_max_c is not None and value > self.temp_max_c)
                or (self.temp_min_c is not None and value < self.temp_min_c))


@dataclass(frozen=True, slots=True)
class Reading:
    ts: datetime
    temp_c: float | None
    rh_pct: float | None


@dataclass(frozen=True, slots=True)
class Excursion:
    type: AlarmType
    started_at: datetime
    triggered_at: datetime
    cleared_at: datetime | None  # None: still active
    peak_value: float
    seconds_out: float


@dataclass(frozen=True, slots=True)
class TemperatureSummary:
    min_c: float
    max_c: float
    mkt_c: float
    minutes_out_of_range: float
    mean_c: float  # time-weighted, same weights as MKT


# --- series and weights --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Series:
    ts: list[datetime]
    values: list[float]


def _series(readings: Iterable[Reading], channel: Literal["temp", "rh"]) -> _Series:
    points: set[tuple[datetime, float]] = set()
    for r in readings:
        value = r.temp_c if channel == "temp" else r.rh_pct
        if value is not None and math.isfinite(value):
            points.add((_utc(r.ts), float(value)))
    ordered = sorted(points)
    return _Series([p[0] for p in ordered], [p[1] for p in ordered])


def _holds(ts: Sequence[datetime], max_gap_s: float, *, last: Literal["zero", "median"]) -> list[float]:
    """Seconds each reading stands for: until the next one, capped at ``max_gap_s``; the last one
    gets 0 or the median positive interval (also capped)."""
    gaps = [(b - a).total_seconds() for a, b in pairwise(ts)]
    holds = [min(g, max_gap_s) for g in gaps]
    if ts:
        positive = [h for h in holds if h > 0]
        holds.append(statistics.median(positive) if last == "median" and positive else 0.0)
    return holds


# --- alarms --------------------------------------------------------------------------------------


def _consecutive(kind: AlarmType, s: _Series, holds: Sequence[float], max_gap_s: float, delay_s: float,
                 out: Callable[[float], bool], cleared: Callable[[float], bool],
                 worse: Callable[[float, float], float]) -> list[Excursion]:
    result: list[Excursion] = []
    start: int | None = None  # first reading of the current run (pending or active)
    active = False
    peak = seconds = 0.0
    for i, (ts, value) in enumerate(zip(s.ts, s.values, strict=True)):
        if not active and start is not None and (ts - s.ts[i - 1]).total_seconds() > max_gap_s:
            start = None  # a silence breaks "continuously"
        if active:
            assert start is not None
            if cleared(value):
                result.append(Excursion(kind, s.ts[start], s.ts[start] + timedelta(seconds=delay_s), ts, peak,
                                        seconds))
                active, start = False, None
                continue
            peak = worse(peak, value)
            if out(value):
                seconds += holds[i]
            continue
        if not out(value):
            start = None
            continue
        if start is None:
            start, peak, seconds = i, value, 0.0
        peak = worse(peak, value)
        seconds += holds[i]
        # Within a run every reading is out and there is no long gap, so the time out equals the
        # time since the run started and the trigger moment is exactly start + delay_s.
        if seconds >= delay_s:
            active = True
    if active:
        assert start is not None
        result.append(Excursion(kind, s.ts[start], s.ts[start] + timedelta(seconds=delay_s), None, peak, seconds))
    return result


def _cumulative(s: _Series, holds: Sequence[float], profile: Profile, limit_s: float) -> Excursion | None:
    def beyond(v: float) -> float:
        if profile.temp_max_c is not None and v > profile.temp_max_c:
            return v - profile.temp_max_c
        if profile.temp_min_c is not None and v < profile.temp_min_c:
            return profile.temp_min_c - v
        return 0.0

    total = 0.0
    first: datetime | None = None
    triggered: datetime | None = None
    peak, peak_beyond = 0.0, -1.0
    for ts, value, hold in zip(s.ts, s.values, holds, strict=True):
        if not profile.temp_out(value):
            continue
        if first is None:
            first = ts
        if beyond(value) > peak_beyond:
            peak, peak_beyond = value, beyond(value)
        if triggered is None and total + hold >= limit_s:
            triggered = ts + timedelta(seconds=max(0.0, limit_s - total))
        total += hold
    if first is None or triggered is None:
        return None
    return Excursion("temperature_cumulative", first, triggered, None, peak, total)


def excursions(readings: Iterable[Reading], profile: Profile, *, max_gap_s: float = 900) -> list[Excursion]:
    """Every alarm episode in the readings, sorted by (started_at, type); see the module docstring."""
    materialised = list(readings)
    temp, rh = _series(materialised, "temp"), _series(materialised, "rh")
    temp_holds = _holds(temp.ts, max_gap_s, last="zero")
    rh_holds = _holds(rh.ts, max_gap_s, last="zero")
    rh_hyst = profile.hysteresis_c if profile.rh_hysteresis_pct is None else profile.rh_hysteresis_pct
    result: list[Excursion] = []

    def high(kind: AlarmType, s: _Series, holds: list[float], limit: float | None, hyst: float) -> None:
        if limit is not None:
            result.extend(_consecutive(kind, s, holds, max_gap_s, profile.delay_s, lambda v: v > limit,
                                       lambda v: v <= limit - hyst, max))

    def low(kind: AlarmType, s: _Series, holds: list[float], limit: float | None, hyst: float) -> None:
        if limit is not None:
            result.extend(_consecutive(kind, s, holds, max_gap_s, profile.delay_s, lambda v: v < limit,
                                       lambda v: v >= limit + hyst, min))

    high("temperature_high", temp, temp_holds, profile.temp_max_c, profile.hysteresis_c)
    low("temperature_low", temp, temp_holds, profile.temp_min_c, profile.hysteresis_c)
    high("humidity_high", rh, rh_holds, profile.rh_max_pct, rh_hyst)
    low("humidity_low", rh, rh_holds, profile.rh_min_pct, rh_hyst)
    if profile.cumulative_s is not None:
        cumulative = _cumulative(temp, temp_holds, profile, profile.cumulative_s)
        if cumulative is not None:
            result.append(cumulative)
    result.sort(key=lambda e: (e.started_at, e.type))
    return result


# --- MKT and summary -----------------------------------------------------------------------------


def _mkt(values: Sequence[float], weights: Sequence[float], delta_h_over_r: float) -> float:
    t_k = np.asarray(values, dtype=np.float64) + KELVIN
    w = np.asarray(weights, dtype=np.float64)
    if not w.sum() > 0:
        w = np.ones_like(t_k)  # one instant only: every reading counts the same
    # log-sum-exp: e^(-ΔH/RT) is around 1e-16 at fridge temperatures; shifting by the largest
    # exponent keeps the sum well inside float range for any ΔH/R.
    x = -delta_h_over_r / t_k
    m = float(x.max())
    log_mean = m + math.log(float((w * np.exp(x - m)).sum()) / float(w.sum()))
    return delta_h_over_r / -log_mean - KELVIN


def mkt_c(readings: Iterable[Reading], *, delta_h_over_r: float = 10000.0, max_gap_s: float = 900) -> float | None:
    """Time-weighted mean kinetic temperature in °C, None without temperature readings.

    T = (ΔH/R) / -ln(Σ wᵢ·e^(-ΔH/(R·Tᵢ)) / Σ wᵢ) in kelvin; wᵢ is sample-and-hold time, the last
    reading weighing the median interval (see the module docstring).
    """
    temp = _series(readings, "temp")
    if not temp.values:
        return None
    return _mkt(temp.values, _holds(temp.ts, max_gap_s, last="median"), delta_h_over_r)


def summary(readings: Iterable[Reading], profile: Profile, *, max_gap_s: float = 900,
            delta_h_over_r: float = 10000.0) -> TemperatureSummary | None:
    """Min, max, MKT, time-weighted mean and minutes out of range (either side) of the
    temperatures; None without temperature readings."""
    temp = _series(readings, "temp")
    if not temp.values:
        return None
    holds = _holds(temp.ts, max_gap_s, last="median")
    total = sum(holds)
    mean = (sum(v * h for v, h in zip(temp.values, holds, strict=True)) / total if total > 0
            else statistics.fmean(temp.values))
    out_s = sum(h for v, h in zip(temp.values, holds, strict=True) if profile.temp_out(v))
    return TemperatureSummary(min(temp.values), max(temp.values), _mkt(temp.values, holds, delta_h_over_r),
                              out_s / 60.0, mean)
