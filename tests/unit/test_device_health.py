from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.coldchain import Excursion
from core.devices import battery_state, is_offline, latest_level, offline_since

T0 = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)


def levels(values: list[float], every_s: float = 600) -> list[tuple[datetime, float]]:
    return [(T0 + timedelta(seconds=i * every_s), v) for i, v in enumerate(values)]


def t(i: int, every_s: float = 600) -> datetime:
    return T0 + timedelta(seconds=i * every_s)


def test_battery_low_with_hysteresis() -> None:
    # Drains, hovers around 20 % (radio load sags the voltage), recovers only after a swap.
    history = levels([60, 40, 21, 19.5, 20.5, 19.8, 22, 24.9, 18, 100, 98])
    assert battery_state(history) == [Excursion("battery_low", t(3), t(3), t(9), 18.0, 6 * 600.0)]


def test_equal_to_the_limit_is_not_low() -> None:
    assert battery_state(levels([30, 20, 20, 20])) == []


def test_clear_at_exactly_clear_pct_and_a_second_episode() -> None:
    history = levels([19, 25, 22, 19, 15])
    assert battery_state(history) == [
        Excursion("battery_low", t(0), t(0), t(1), 19.0, 600.0),
        Excursion("battery_low", t(3), t(3), None, 15.0, 600.0),
    ]


def test_battery_configurable_and_validated() -> None:
    assert len(battery_state(levels([12, 9, 11, 16]), low_pct=10, clear_pct=15)) == 1
    with pytest.raises(ValueError):
        battery_state([], low_pct=30, clear_pct=20)
    assert battery_state([]) == []


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.tuples(st.integers(0, 100), st.floats(0, 100)), max_size=40), data=st.data())
def test_battery_state_is_order_independent(values: list[tuple[int, float]], data: st.DataObject) -> None:
    history = [(T0 + timedelta(minutes=m), v) for m, v in values]
    expected = battery_state(history)
    shuffled = data.draw(st.permutations(history)) + data.draw(st.lists(st.sampled_from(history), max_size=5)
                                                               if history else st.just([]))
    assert battery_state(shuffled) == expected
    assert sum(1 for e in expected if e.cleared_at is None) <= 1


def test_latest_level_is_by_event_time() -> None:
    history = levels([50, 40, 30])
    received_last = [history[2], history[0], history[1]]
    assert latest_level(received_last) == (t(2), 30.0)
    assert latest_level([]) is None


def test_offline() -> None:
    now = T0 + timedelta(minutes=10)
    assert not is_offline(T0 + timedelta(minutes=5), now, after_s=300)  # exactly at the limit: online
    assert is_offline(T0 + timedelta(minutes=4, seconds=59), now, after_s=300)
    assert is_offline(None, now, after_s=300)
    cet = timezone(timedelta(hours=1))
    assert offline_since(T0.astimezone(cet), 300) == T0 + timedelta(seconds=300)
    assert offline_since(None, 300) is None
