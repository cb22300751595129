"""The shipment state machine in event time, ETA and the delay rule.

``derive`` is a function of the whole relevant history (scans, filtered fixes, the plan), sorted
inside, so the same inputs in any order, or with repeats, give the same status and events. A
late or out-of-order fix is simply part of the track; it can only ever make a stage happen
*earlier or at the same time*, never undo it, with one exception inherent to any dwell rule: a
late fix on the other side of a fence can split a run that had just reached its dwell. The
store should apply ``advance`` when it replaces a stored state so that even then the status
never goes backwards.

Stages, each at most once and each only after the one before it:

1. ``loading`` at the first ship scan.
2. ``departed`` (status ``in_transit``): the start of the first dwell-confirmed run of fixes
   outside the origin fence among the fixes at or after loading. When the vehicle was in the
   yard this is its exit (the crossing time is the first fix outside); when it was never seen
   inside after loading, or there is no origin fence, it is the first fix after loading once
   the dwell confirms it. Only fixes from loading on count, so a drive out of the yard before
   loading is not a departure and the rule can decide with what is known at the time.
3. ``arrived``: the start of the first dwell-confirmed run of fixes inside the destination fence
   among the fixes at or after departure (a tracker that was silent for the whole trip departs
   and arrives at its first fix at the customer).
4. ``delivered`` at the first deliver scan, whether or not an arrival was seen. Delivered is
   terminal: stages that would happen after it are not recorded.
5. ``cancelled`` at ``plan.cancelled_at``: terminal, stages after it are not recorded (stages at
   the same instant are). A cancellation after delivery is ignored; the API should refuse it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from core.geo import (
    Dwell,
    Fence,
    Fix,
    as_utc,
    confirmed_runs,
    contains,
    contains_many,
    distance_to_centre_km,
    path_km,
    sorted_fixes,
)

Status = Literal["planned", "loading", "in_transit", "arrived", "delivered", "cancelled"]
EventType = Literal["loading", "departed", "arrived", "delivered", "cancelled"]

STATUS_AFTER: Final[Mapping[EventType, Status]] = {
    "loading": "loading",
    "departed": "in_transit",
    "arrived": "arrived",
    "delivered": "delivered",
    "cancelled": "cancelled",
}
# Both terminal states share the top rank: late evidence of a delivery before the cancellation
# may turn cancelled into delivered, which is a correction, not a step back.
STATUS_RANK: Final[Mapping[str, int]] = {
    "planned": 0, "loading": 1, "in_transit": 2, "arrived": 3, "delivered": 4, "cancelled": 4,
}
_EVENT_ORDER: Final[Mapping[str, int]] = {"loading": 0, "departed": 1, "arrived": 2, "delivered": 3, "cancelled": 4}
TERMINAL: Final = frozenset({"delivered", "cancelled"})


@dataclass(frozen=True, slots=True)
class ShipmentPlan:
    ref: str
    origin_fence: Fence | None  # the origin site's yard geofence, if it has one
    destination_fence: Fence
    promised_at: datetime | None
    cancelled_at: datetime | None
    origin_code: str | None = None  # geofence codes, only for the event details
    destination_code: str | None = None


@dataclass(frozen=True, slots=True)
class ShipmentEvent:
    ts: datetime
    type: EventType
    detail: str


@dataclass(frozen=True, slots=True)
class ShipmentState:
    status: Status
    events: tuple[ShipmentEvent, ...]  # in event-time order, at most one of each type
    last_fix: Fix | None  # the newest fix by event time (not the last received)

    def at(self, type_: EventType) -> datetime | None:
        """When the event of that type happened, None when it did not."""
        return next((e.ts for e in self.events if e.type == type_), None)


def _first_run_start(track: Sequence[Fix], fence: Fence | None, want_inside: bool, dwell: Dwell) -> int | None:
    """Index in ``track`` of the first fix of the first confirmed run on the wanted side."""
    if not track:
        return None
    if fence is None:
        sides = [want_inside] * len(track)
    else:
        sides = contains_many(fence, [f.lat for f in track], [f.lon for f in track]).tolist()
    for start, _, side in confirmed_runs([f.ts for f in track], sides, dwell):
        if side == want_inside:
            return start
    return None


def _fence_name(code: str | None, what: str) -> str:
    return f"geofence {code}" if code else f"the {what} geofence"


def derive(plan: ShipmentPlan, ship_scans: Iterable[datetime], deliver_scans: Iterable[datetime],
           fixes: Iterable[Fix], dwell: Dwell) -> ShipmentState:
    """Status and events of a shipment from its whole history (see the module docstring)."""
    track = sorted_fixes(fixes)
    ships = sorted(as_utc(t) for t in ship_scans)
    delivers = sorted(as_utc(t) for t in deliver_scans)
    candidates: list[ShipmentEvent] = []

    if ships:
        loading_at = ships[0]
        candidates.append(ShipmentEvent(loading_at, "loading", "first ship scan"))
        after_loading = [f for f in track if f.ts >= loading_at]
        i = _first_run_start(after_loading, plan.origin_fence, False, dwell)
        if i is not None:
            departed = after_loading[i]
            candidates.append(ShipmentEvent(departed.ts, "departed", _departure_detail(plan, track, departed)))
            after_departure = after_loading[i:]
            j = _first_run_start(after_departure, plan.destination_fence, True, dwell)
            if j is not None:
                candidates.append(ShipmentEvent(after_departure[j].ts, "arrived",
                                                "entered " + _fence_name(plan.destination_code, "destination")))
    if delivers:
        candidates.append(ShipmentEvent(delivers[0], "delivered", "first deliver scan"))

    # Terminal events cut off whatever would come after them.
    candidates.sort(key=lambda e: (e.ts, _EVENT_ORDER[e.type]))
    events: list[ShipmentEvent] = []
    for event in candidates:
        events.append(event)
        if event.type == "delivered":
            break
    if plan.cancelled_at is not None:
        cancelled_at = as_utc(plan.cancelled_at)
        kept = [e for e in events if e.ts <= cancelled_at]
        if not any(e.type == "delivered" for e in kept):
            events = [*kept, ShipmentEvent(cancelled_at, "cancelled", "cancelled by API")]
    status: Status = STATUS_AFTER[events[-1].type] if events else "planned"
    return ShipmentState(status, tuple(events), track[-1] if track else None)


def _departure_detail(plan: ShipmentPlan, track: Sequence[Fix], departed: Fix) -> str:
    if plan.origin_fence is None:
        return "first fix after loading (no origin geofence)"
    name = _fence_name(plan.origin_code, "origin")
    before = [f for f in track if f.ts < departed.ts]
    if before and contains(plan.origin_fence, before[-1].lat, before[-1].lon):
        return "left " + name
    return f"outside {name} after loading"


def advance(previous: ShipmentState | None, derived: ShipmentState) -> ShipmentState:
    """The state to store: ``derived``, unless it would put the status behind ``previous``."""
    if previous is not None and STATUS_RANK[derived.status] < STATUS_RANK[previous.status]:
        return ShipmentState(previous.status, previous.events, derived.last_fix or previous.last_fix)
    return derived


# --- ETA and delay -------------------------------------------------------------------------------


def recent_speed_kmh(last: Fix, recent: Iterable[Fix], *, window_s: float = 1800) -> float | None:
    """Average speed over the ``window_s`` before ``last`` (inclusive), None when unknown.

    When fixes in the window report a speed (GPS Doppler, better than differencing noisy
    positions) the mean of the reported speeds; otherwise the path length over the elapsed time.
    """
    start = as_utc(last.ts) - timedelta(seconds=window_s)
    window = [f for f in sorted_fixes([*recent, last]) if start <= f.ts <= as_utc(last.ts)]
    reported = [f.speed_kmh for f in window if f.speed_kmh is not None and math.isfinite(f.speed_kmh)
                and f.speed_kmh >= 0]
    if reported:
        return statistics.fmean(reported)
    if len(window) < 2:
        return None
    hours = (window[-1].ts - window[0].ts).total_seconds() / 3600.0
    if hours <= 0:
        return None
    return path_km([f.lat for f in window], [f.lon for f in window]) / hours


def eta(last: Fix, destination: Fence, recent: Sequence[Fix], *, planned_speed_kmh: float = 60.0,
        stopped_below_kmh: float = 5.0, window_s: float = 1800) -> tuple[datetime, float]:
    """(ETA, distance remaining in km) from the last fix.

    The distance is the great circle to the destination's centre, 0 once the last fix is inside
    the destination. The speed is the recent average (``recent_speed_kmh``), or the planned speed
    when that is unknown or below ``stopped_below_kmh``: a stopped truck will drive on, and
    dividing by a speed near zero would give an ETA of next year. The ETA counts from the last
    fix's time, not from the wall clock, so it is a pure function of the data.
    """
    if not planned_speed_kmh > 0:
        raise ValueError("planned_speed_kmh must be positive")
    if contains(destination, last.lat, last.lon):
        return as_utc(last.ts), 0.0
    distance = distance_to_centre_km(destination, last.lat, last.lon)
    speed = recent_speed_kmh(last, recent, window_s=window_s)
    if speed is None or speed < stopped_below_kmh:
        speed = planned_speed_kmh
    return as_utc(last.ts) + timedelta(hours=distance / speed), distance


def is_delayed(status: str, eta: datetime | None, promised_at: datetime | None, now: datetime) -> bool:
    """An open shipment is delayed once its ETA or the wall clock is past the promise."""
    if status in TERMINAL or promised_at is None:
        return False
    return (eta is not None and eta > promised_at) or now > promised_at


def delivered_late(delivered_at: datetime | None, promised_at: datetime | None) -> bool:
    """A delivered shipment was late if it was delivered after the promise."""
    return delivered_at is not None and promised_at is not None and delivered_at > promised_at
