"""Device health: battery-low episodes from status messages, and the offline rule.

``battery_state`` is a pure function of the whole history of reported levels (de-duplicated,
sorted by event time, equal times by level), so late or repeated status messages give the same
episodes. Offline is wall-clock by nature (silence has no event time); ``is_offline`` and
``offline_since`` are the pure rule the scheduler applies with its clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from core.coldchain import Excursion


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC) if ts.tzinfo is not None else ts


BATTERY_LOW_PCT = 20.0
BATTERY_CLEAR_PCT = 25.0


def battery_state(levels: Iterable[tuple[datetime, float]], *, low_pct: float = BATTERY_LOW_PCT,
                  clear_pct: float = BATTERY_CLEAR_PCT) -> list[Excursion]:
    """``battery_low`` episodes, oldest first.

    An episode starts at the first level strictly below ``low_pct`` (a level equal to the limit
    is not low, as for temperatures) and clears at the first later level at or above
    ``clear_pct``; levels in between keep it active, so a battery hovering around the limit
    (voltage sags under radio load) raises one alarm, not one per heartbeat. There is no delay:
    a heartbeat is rare and the level moves slowly. ``peak_value`` is the lowest level,
    ``triggered_at`` equals ``started_at``, ``seconds_out`` runs from the start to the clear (or to
    the last level seen while still low). NaN levels are ignored.
    """
    if not clear_pct >= low_pct:
        raise ValueError("clear_pct must be >= low_pct")
    history = sorted({(_utc(ts), float(level)) for ts, level in levels if math.isfinite(level)})
    result: list[Excursion] = []
    started: datetime | None = None
    lowest = 0.0
    for ts, level in history:
        if started is None:
            if level < low_pct:
                started, lowest = ts, level
        elif level >= clear_pct:
            result.append(Excursion("battery_low", started, started, ts, lowest, (ts - started).total_seconds()))
            started = None
        else:
            lowest = min(lowest, level)
    if started is not None:
        result.append(Excursion("battery_low", started, started, None, lowest,
                                (history[-1][0] - started).total_seconds()))
    return result


def latest_level(levels: Iterable[tuple[datetime, float]]) -> tuple[datetime, float] | None:
    """The newest reported level by event time (not the last one received); None without any."""
    known = [(_utc(ts), float(level)) for ts, level in levels if math.isfinite(level)]
    return max(known) if known else None


SILENCE_FLOOR_S = 60.0  # a chatty device's short gap is not an outage


def silence_limit_s(expected_interval_s: float | None, multiple: float, fallback_s: float) -> float:
    """Seconds of silence after which a device is offline: ``multiple`` of its own expected
    interval (learned from its messages), ``fallback_s`` while that is unknown, never under
    ``SILENCE_FLOOR_S``. The SQL function ``device_silence_limit_s`` (API reads) is this rule."""
    limit = expected_interval_s * multiple if expected_interval_s is not None else fallback_s
    return max(SILENCE_FLOOR_S, limit)


def is_offline(last_seen: datetime | None, now: datetime, after_s: float) -> bool:
    """Offline once nothing was heard for more than ``after_s``; a device never seen is offline."""
    return last_seen is None or (now - last_seen).total_seconds() > after_s


def offline_since(last_seen: datetime | None, after_s: float) -> datetime | None:
    """When the device became offline under the same rule: the alarm's ``started_at``."""
    return None if last_seen is None else _utc(last_seen) + timedelta(seconds=after_s)
