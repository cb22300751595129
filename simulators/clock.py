"""Simulated time, placed in the past so that no timestamp is ever ahead of the wall clock.

The server refuses a ``ts`` more than 5 minutes ahead of its clock. A simulation running
``speedup`` times faster than the wall clock would overtake the wall clock if it started "now",
so the simulated window *ends* at the moment the run starts:

    sim_start = wall_start - duration_s * speedup,   sim_end = wall_start

At ``e`` wall seconds into the run the simulated time is ``sim_start + e * speedup``, which is
never later than ``wall_start`` and therefore never later than the wall clock. With speedup 60 a
5-minute run covers the 5 simulated hours before the run started.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class SimClock:
    sim_start: datetime  # aware, UTC
    speedup: float
    duration_s: float  # wall seconds the run lasts

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise ValueError("speedup must be positive")
        if not self.duration_s > 0:
            raise ValueError("duration must be positive")
        if self.sim_start.tzinfo is None:
            raise ValueError("sim_start must be timezone-aware")

    @classmethod
    def ending_now(cls, duration_s: float, speedup: float, now: datetime | None = None) -> SimClock:
        """The window of ``duration_s * speedup`` simulated seconds that ends at ``now``."""
        wall = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        return cls(wall - timedelta(seconds=duration_s * speedup), speedup, duration_s)

    @property
    def span_s(self) -> float:
        """Simulated seconds covered by the run."""
        return self.duration_s * self.speedup

    @property
    def sim_end(self) -> datetime:
        return self.sim_start + timedelta(seconds=self.span_s)

    def at(self, offset_s: float) -> datetime:
        """Simulated time ``offset_s`` simulated seconds after the start."""
        return self.sim_start + timedelta(seconds=offset_s)

    def offset(self, ts: datetime) -> float:
        return (ts - self.sim_start).total_seconds()

    def wall_offset(self, ts: datetime) -> float:
        """Wall seconds after the runner's start at which simulated time ``ts`` is due."""
        return self.offset(ts) / self.speedup
