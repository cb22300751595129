from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.coldchain import Excursion, Profile, Reading, TemperatureSummary, excursions, mkt_c, summary

T0 = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)
CHILLED = Profile(2.0, 8.0)  # delay 300 s, hysteresis 0.5


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def temps(values: list[float], every_s: float = 60.0, start_s: float = 0.0) -> list[Reading]:
    return [Reading(t(start_s + i * every_s), v, None) for i, v in enumerate(values)]


# --- consecutive trigger -------------------------------------------------------------------------


def test_exactly_at_the_limit_is_in_range() -> None:
    assert excursions(temps([8.0] * 30), CHILLED) == []
    assert excursions(temps([2.0] * 30), CHILLED) == []


def test_just_over_for_less_than_delay_gives_no_alarm() -> None:
    # Out at 60..240 s; back at 300 s: out for 240 s < 300 s.
    assert excursions(temps([5.0, 8.1, 8.3, 8.2, 8.1, 7.0, 5.0]), CHILLED) == []


def test_over_for_delay_gives_one_alarm() -> None:
    # Out at 60..300 s, back in at 360 s: out for 300 s, the alarm triggers at 60 + 300.
    readings = temps([5.0, 8.1, 8.6, 9.4, 8.2, 8.1, 7.0, 5.0])
    assert excursions(readings, CHILLED) == [
        Excursion("temperature_high", t(60), t(360), t(360), 9.4, 300.0)]


def test_alarm_stays_active_at_the_end_of_the_data() -> None:
    readings = temps([5.0] + [9.0] * 10)
    (alarm,) = excursions(readings, CHILLED)
    assert (alarm.started_at, alarm.triggered_at, alarm.cleared_at) == (t(60), t(360), None)
    assert alarm.seconds_out == 540.0  # the last reading counts no time: nothing is known after it


def test_no_alarm_ahead_of_the_data() -> None:
    # Out for 240 s observed so far: the alarm waits for the next reading.
    assert excursions(temps([5.0, 9.0, 9.0, 9.0, 9.0, 9.0]), CHILLED) == []
    assert len(excursions(temps([5.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0]), CHILLED)) == 1


def test_low_alarm_and_peak_is_the_minimum() -> None:
    readings = temps([5.0, 1.5, 0.4, 1.0, 1.9, 1.2, 1.8, 3.0])
    assert excursions(readings, CHILLED) == [Excursion("temperature_low", t(60), t(360), t(420), 0.4, 360.0)]


def test_clearing_needs_the_hysteresis() -> None:
    # After triggering, readings back in range but above 7.5 keep the alarm; 7.5 clears it.
    readings = temps([9.0] * 6 + [7.9, 7.6, 8.4, 7.8, 7.5, 7.0])
    (alarm,) = excursions(readings, CHILLED)
    assert alarm.cleared_at == t(600)
    assert alarm.seconds_out == 360.0 + 60.0  # the 8.4 reading counts, the in-range ones do not
    no_hysteresis = excursions(readings, Profile(2.0, 8.0, hysteresis_c=0.0))
    assert [a.cleared_at for a in no_hysteresis] == [t(360)]


def test_flapping_signal_gives_one_alarm() -> None:
    rng = random.Random(4)
    # Twenty minutes at 8.0 +- 0.4 around the limit, then a clear drop: one alarm, one clear.
    noisy = [8.0 + rng.uniform(-0.4, 0.4) for _ in range(20)]
    readings = temps([9.0] * 6 + noisy + [6.0, 6.0])
    alarms = excursions(readings, CHILLED)
    assert len(alarms) == 1
    assert alarms[0].cleared_at == t(26 * 60)
    # The same noise before any alarm never stays out for 5 minutes in a row: no alarm at all.
    flapping = temps([8.2 if i % 4 else 7.9 for i in range(60)])
    assert excursions(flapping, CHILLED) == []


def test_after_clearing_a_new_alarm_needs_the_delay_again() -> None:
    readings = temps([9.0] * 7 + [6.0] + [9.0] * 4 + [6.0] + [9.0] * 7 + [6.0])
    alarms = excursions(readings, CHILLED)
    assert [(a.started_at, a.cleared_at) for a in alarms] == [(t(0), t(420)), (t(780), t(1200))]


def test_a_silent_sensor_is_not_out_of_range_forever() -> None:
    # One reading at 9 °C, then nothing for two hours: it counts max_gap_s (900 s) and triggers,
    # but the time out of range is capped.
    readings = [Reading(t(0), 9.0, None), Reading(t(7200), 5.0, None)]
    (alarm,) = excursions(readings, CHILLED)
    assert alarm.seconds_out == 900.0
    assert alarm.cleared_at == t(7200)
    # With a delay longer than the gap cap, two out readings two hours apart are not continuous.
    slow = Profile(2.0, 8.0, delay_s=1800)
    assert excursions([Reading(t(0), 9.0, None), Reading(t(7200), 9.0, None), Reading(t(7260), 5.0, None)],
                      slow) == []


def test_humidity_alarms_with_their_own_hysteresis() -> None:
    profile = Profile(2.0, 8.0, rh_min_pct=30.0, rh_max_pct=80.0, rh_hysteresis_pct=5.0)
    rh = [50.0, 85.0, 86.0, 90.0, 84.0, 82.0, 79.0, 76.0, 74.0, 50.0, 20.0]
    readings = [Reading(t(60 * i), None if i % 3 == 0 else 5.0, v) for i, v in enumerate(rh)]
    alarms = excursions(readings, profile)
    assert [(a.type, a.started_at, a.cleared_at, a.peak_value) for a in alarms] == [
        ("humidity_high", t(60), t(480), 90.0)]  # 79 and 76 are within 5 points of 80
    # Without rh_hysteresis_pct, hysteresis_c is used as percentage points: 79 clears.
    default = excursions(readings, Profile(2.0, 8.0, rh_max_pct=80.0))
    assert [a.cleared_at for a in default] == [t(360)]


def test_types_are_independent() -> None:
    readings = [Reading(t(60 * i), 9.0 if i < 10 else 5.0, 90.0 if 3 <= i < 12 else 50.0) for i in range(15)]
    alarms = excursions(readings, Profile(2.0, 8.0, rh_max_pct=80.0))
    assert [(a.type, a.started_at) for a in alarms] == [("temperature_high", t(0)), ("humidity_high", t(180))]


def test_one_sided_profile() -> None:
    frozen = Profile(None, -18.0)
    assert excursions(temps([-25.0] * 20), frozen) == []
    assert [a.type for a in excursions(temps([-10.0] * 20), frozen)] == ["temperature_high"]


def test_profile_validation() -> None:
    with pytest.raises(ValueError):
        Profile(8.0, 2.0)
    with pytest.raises(ValueError):
        Profile(2.0, 8.0, delay_s=-1)


# --- cumulative ----------------------------------------------------------------------------------


def test_short_spikes_add_up_to_a_cumulative_alarm_but_no_consecutive_one() -> None:
    profile = Profile(2.0, 8.0, cumulative_s=600)
    # Two-minute spikes (high and low alike) every ten minutes: never 5 min in a row.
    values = []
    for k in range(8):
        values += [5.0] * 8 + ([9.0, 9.5] if k % 2 == 0 else [1.0, 1.5])
    values.append(5.0)
    alarms = excursions(temps(values), profile)
    assert [a.type for a in alarms] == ["temperature_cumulative"]
    (cum,) = alarms
    assert cum.started_at == t(8 * 60)  # the first out-of-range reading
    # 120 s per spike: the 5th spike (k=4, at 48 min) brings the total to 600 s at 48 + 2 min.
    assert cum.triggered_at == t(50 * 60)
    assert cum.cleared_at is None
    assert cum.peak_value == 9.5  # 1.5 K over the maximum is further out than 1 K under the minimum
    assert cum.seconds_out == 8 * 120


def test_cumulative_peak_is_the_value_furthest_outside() -> None:
    profile = Profile(2.0, 8.0, cumulative_s=60)
    readings = temps([5.0, 9.9, 5.0, 1.0, 5.0, 9.0, 5.0])
    (cum,) = excursions(readings, profile)
    assert cum.peak_value == 9.9  # 1.9 K over beats 1.0 K under
    assert cum.triggered_at == t(120)
    assert excursions(temps([5.0] * 10), profile) == []
    assert excursions(temps([5.0, 9.0, 5.0]), Profile(2.0, 8.0, cumulative_s=61)) == []


# --- order independence --------------------------------------------------------------------------

_profile = Profile(2.0, 8.0, rh_min_pct=30, rh_max_pct=80, delay_s=180, cumulative_s=400)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.tuples(st.integers(0, 200), st.floats(0, 11), st.one_of(st.none(), st.floats(20, 95))),
                       min_size=1, max_size=60),
       data=st.data())
def test_shuffled_and_repeated_readings_give_identical_excursions(
        values: list[tuple[int, float, float | None]], data: st.DataObject) -> None:
    readings = [Reading(t(20 * i), temp, rh) for i, temp, rh in values]
    expected = excursions(readings, _profile)
    shuffled = data.draw(st.permutations(readings)) + data.draw(st.lists(st.sampled_from(readings), max_size=10))
    assert excursions(shuffled, _profile) == expected
    assert summary(shuffled, _profile) == summary(readings, _profile)
    # At most one active (uncleared) alarm per type.
    active = [e.type for e in expected if e.cleared_at is None]
    assert len(active) == len(set(active))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), cut=st.integers(1, 119))
def test_late_readings_inside_an_evaluated_window(seed: int, cut: int) -> None:
    """Readings held back by a gateway arrive after later ones were evaluated: evaluating the
    full history again gives what in-order evaluation gives."""
    rng = random.Random(seed)
    readings = temps([6.0 + 3 * math.sin(i / 7) + rng.gauss(0, 0.5) for i in range(120)])
    in_order = excursions(readings, CHILLED)
    held_back = readings[cut - 1::5]
    first_pass = [r for r in readings if r not in held_back]
    excursions(first_pass, CHILLED)  # evaluated once without them
    assert excursions(first_pass + held_back, CHILLED) == in_order


# --- MKT and summary -----------------------------------------------------------------------------


def _known() -> list[Reading]:
    # 18 h at 5 °C then 6 h at 14 °C, hourly samples: the last (14 °C) weighs the median interval.
    return [Reading(T0 + timedelta(hours=h), 5.0 if h < 18 else 14.0, None) for h in range(24)]


def test_mkt_known_value() -> None:
    assert mkt_c(_known(), max_gap_s=3600) == pytest.approx(8.29, abs=0.01)
    # The gap cap (900 s) shrinks every hourly weight alike, so MKT does not change.
    assert mkt_c(_known()) == pytest.approx(mkt_c(_known(), max_gap_s=3600))


def test_summary_known_value() -> None:
    s = summary(_known(), Profile(2.0, 8.0), max_gap_s=3600)
    assert isinstance(s, TemperatureSummary)
    assert (s.min_c, s.max_c) == (5.0, 14.0)
    assert s.mean_c == pytest.approx(7.25)
    assert s.mkt_c == pytest.approx(8.29, abs=0.01)
    assert s.minutes_out_of_range == pytest.approx(360.0)


def test_mkt_edge_cases() -> None:
    assert mkt_c([]) is None
    assert mkt_c([Reading(T0, None, 50.0)]) is None
    assert mkt_c([Reading(T0, 4.0, None)]) == pytest.approx(4.0)
    assert mkt_c(temps([5.0] * 10)) == pytest.approx(5.0)
    # MKT is never below the arithmetic mean and weighs hot periods more.
    alternating = mkt_c(temps([0.0, 20.0] * 10))
    assert alternating is not None and alternating > 10.0
    assert summary([], CHILLED) is None


def test_mkt_is_time_weighted() -> None:
    # Hourly samples in the cold period, every 10 min in the warm one: 36 warm samples must not
    # outweigh 18 cold ones, it is still 18 h against 6 h.
    sparse_cold = [Reading(T0 + timedelta(hours=h), 5.0, None) for h in range(18)]
    dense_warm = [Reading(T0 + timedelta(hours=18, minutes=10 * i), 14.0, None) for i in range(36)]
    assert mkt_c(sparse_cold + dense_warm, max_gap_s=3600) == pytest.approx(8.29, abs=0.01)
    unweighted = mkt_c(sparse_cold + dense_warm, max_gap_s=1)  # every sample weighs the same
    assert unweighted is not None and unweighted > 10.0
