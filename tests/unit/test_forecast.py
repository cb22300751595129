from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from core.forecast import backtest, daily_series, days_of_cover, fit, stockout_expected_at
from core.replenishment import LotOnHand, Policy, diff_warnings, expiring_lots, stock_warnings, suggest

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def demand_with_step(seed: int, before: float = 10.0, after: float = 20.0, days_before: int = 60,
                     days_after: int = 30) -> list[float]:
    """Daily demand: Poisson around ``before``, then a step to ``after`` (a new customer)."""
    rng = random.Random(seed)

    def poisson(lam: float) -> float:  # Knuth: exact and dependency-free for small rates
        limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return float(k)
            k += 1
    return [poisson(before) for _ in range(days_before)] + [poisson(after) for _ in range(days_after)]


def test_daily_series_zero_fills() -> None:
    start = date(2026, 1, 1)
    got = daily_series([(date(2026, 1, 1), 3), (date(2026, 1, 3), 2), (date(2026, 1, 3), 1),
                        (date(2025, 12, 31), 99)], start, date(2026, 1, 4))
    assert got == [3.0, 0.0, 3.0, 0.0]


def test_constant_demand_forecasts_the_constant() -> None:
    f = fit([7.0] * 30)
    assert f.daily_rate == pytest.approx(7.0)


def test_forecast_adapts_to_a_demand_step_within_two_weeks() -> None:
    series = demand_with_step(1, days_after=14)
    f = fit(series)
    assert 16.0 <= f.daily_rate <= 24.0, f
    mean = sum(series) / len(series)
    assert abs(f.daily_rate - 20.0) < abs(mean - 20.0)


def test_backtest_on_a_known_demand_change_beats_the_long_run_mean() -> None:
    """The figures the README reports: SES error across a step from 10 to 20 units/day."""
    results = [backtest(demand_with_step(seed), warmup=14) for seed in range(5)]
    for res in results:
        assert res.days == 90 - 14
        assert res.wape < res.baseline_wape
        assert res.wape < 0.35
        assert abs(res.bias) < 2.0


def test_backtest_needs_history() -> None:
    with pytest.raises(ValueError, match="more than 14"):
        backtest([1.0] * 10)


def test_cover_and_stockout() -> None:
    assert days_of_cover(50, 10) == 5
    assert days_of_cover(50, 0) is None
    assert stockout_expected_at(NOW, 50, 10) == NOW + timedelta(days=5)
    assert stockout_expected_at(NOW, 50, 1e-300) is None  # a vanishing rate: no date, no overflow


def test_suggestion_and_warnings() -> None:
    policy = Policy(reorder_point=40, reorder_qty=25, lead_time_days=7)
    s = suggest("A", "S1", available=30, on_order=0, policy=policy, daily_rate=5, now=NOW)
    # target 40 + 5*7 = 75, gap 45 -> two lots of 25
    assert s.suggested_qty == 50
    assert s.days_of_cover == 6
    types = sorted(w.type for w in stock_warnings(s, policy))
    assert types == ["stock_low", "stock_out_risk"]
    calm = suggest("A", "S1", available=100, on_order=0, policy=policy, daily_rate=5, now=NOW)
    assert calm.suggested_qty == 0 and stock_warnings(calm, policy) == []
    covered = suggest("A", "S1", available=30, on_order=50, policy=policy, daily_rate=5, now=NOW)
    assert covered.suggested_qty == 0


def test_expiring_lots_and_alarm_diff() -> None:
    today = date(2026, 3, 2)
    lots = [LotOnHand("A", "S1", "B1", "L1", date(2026, 3, 20), 5), LotOnHand("A", "S1", "B1", "L2",
                                                                               date(2026, 9, 1), 5),
            LotOnHand("A", "S1", "B1", "L0", date(2026, 3, 1), 1), LotOnHand("A", "S1", "B2", "L3",
                                                                            date(2026, 3, 3), 0)]
    warned = expiring_lots(lots, today, 30)
    assert sorted((w.lot, w.severity) for w in warned) == [("L0", "critical"), ("L1", "warning")]
    to_open, to_clear = diff_warnings([warned[0].key, ("stock_low", "X", "S1", "", "")], warned)
    assert [w.key for w in to_open] == [warned[1].key]
    assert to_clear == [("stock_low", "X", "S1", "", "")]
