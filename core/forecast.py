"""Consumption forecast: simple exponential smoothing of daily demand, with its smoothing constant
chosen on the item's own history, and a rolling-origin backtest that reports the error.

Why SES: daily warehouse demand per item is mostly a level with noise that shifts now and then
(a new customer, a season); SES tracks a shifted level within a few days and needs no more than
one parameter, which we fit by minimising one-step-ahead squared error over the history (Hyndman
& Athanasopoulos, FPP3 §8.1). A trend model (Holt) over-reacts to the noisy, intermittent series
typical at item level; the backtest is where a better model has to prove itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

ALPHAS: Final = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 … 0.95


@dataclass(frozen=True, slots=True)
class Forecast:
    daily_rate: float          # expected consumption per day from tomorrow on
    alpha: float
    observations: int


@dataclass(frozen=True, slots=True)
class BacktestResult:
    days: int                  # forecasts evaluated
    mae: float                 # mean absolute error, units per day
    wape: float                # sum |error| / sum actual: scale-free, robust to zero days
    bias: float                # mean (forecast - actual): > 0 over-forecasts
    baseline_wape: float       # the same for "the mean of all history so far", the naive yardstick


def daily_series(consumption: Iterable[tuple[date, float]], start: date, end: date) -> list[float]:
    """Units consumed per day from ``start`` to ``end`` inclusive; days without consumption are zero."""
    days = (end - start).days + 1
    out = [0.0] * max(0, days)
    for day, qty in consumption:
        i = (day - start).days
        if 0 <= i < days:
            out[i] += qty
    return out


def _smooth(series: Sequence[float], alpha: float) -> tuple[float, float]:
    """Final level and the one-step-ahead sum of squared errors (level starts at the first value)."""
    level = series[0]
    sse = 0.0
    for x in series[1:]:
        err = x - level
        sse += err * err
        level += alpha * err
    return level, sse


def fit(series: Sequence[float]) -> Forecast:
    """SES forecast of the next day's demand; the smoothing constant minimises one-step SSE."""
    if not series:
        return Forecast(0.0, ALPHAS[len(ALPHAS) // 2], 0)
    if len(series) < 3:
        return Forecast(sum(series) / len(series), ALPHAS[len(ALPHAS) // 2], len(series))
    best_level, best_sse, best_alpha = 0.0, math.inf, ALPHAS[0]
    for alpha in ALPHAS:
        level, sse = _smooth(series, alpha)
        if sse < best_sse - 1e-12:  # ties keep the smoother (smaller) alpha
            best_level, best_sse, best_alpha = level, sse, alpha
    return Forecast(max(0.0, best_level), best_alpha, len(series))


def days_of_cover(available: float, daily_rate: float) -> float | None:
    """How many days the available stock lasts at the forecast rate; None when nothing is consumed."""
    if daily_rate <= 0:
        return None
    return max(0.0, available) / daily_rate


# Beyond this the forecast says nothing useful (and a datetime would overflow on a near-zero rate).
MAX_COVER_DAYS = 3650.0


def stockout_expected_at(now: datetime, available: float, daily_rate: float) -> datetime | None:
    cover = days_of_cover(available, daily_rate)
    return None if cover is None or cover > MAX_COVER_DAYS else now + timedelta(days=cover)


def backtest(series: Sequence[float], warmup: int = 14) -> BacktestResult:
    """Rolling origin: for each day after ``warmup``, fit on the days before it and forecast it."""
    if len(series) <= warmup:
        raise ValueError(f"a backtest needs more than {warmup} days of history, got {len(series)}")
    abs_err = bias = base_abs = actual_sum = 0.0
    n = 0
    for t in range(warmup, len(series)):
        history = series[:t]
        predicted = fit(history).daily_rate
        baseline = sum(history) / len(history)
        actual = series[t]
        abs_err += abs(predicted - actual)
        base_abs += abs(baseline - actual)
        bias += predicted - actual
        actual_sum += actual
        n += 1
    scale = actual_sum if actual_sum > 0 else 1.0
    return BacktestResult(n, abs_err / n, abs_err / scale, bias / n, base_abs / scale)
