"""Service level targets and their breach, in event time.

A ticket has two clocks, both started at its opening: the first response and the resolution. A
breach is a due time passing without the step: decided from the step's own event time (a reply
written at 10:59 and recorded at 11:05 met an 11:00 target), and dated at the due time itself,
never at the moment a sweep noticed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from core.service import TICKET_TYPES

PRIORITIES: Final = (1, 2, 3, 4, 5)
DEFAULT_PRIORITY: Final = 3


@dataclass(frozen=True, slots=True)
class SlaTarget:
    first_response: timedelta
    resolution: timedelta


SlaTargets = Mapping[tuple[str, int], SlaTarget]

# Hours per priority (1 is the most urgent). A logistics exception is ours before the customer
# knows of it: it gets the tighter column.
_FIRST_RESPONSE_H: Final = {1: 1, 2: 2, 3: 4, 4: 8, 5: 24}
_RESOLUTION_H: Final = {1: 8, 2: 24, 3: 72, 4: 120, 5: 240}
_TIGHTER: Final = frozenset({"logistics_exception"})


def default_targets() -> dict[tuple[str, int], SlaTarget]:
    out: dict[tuple[str, int], SlaTarget] = {}
    for type_ in TICKET_TYPES:
        for p in PRIORITIES:
            q = max(1, p - 1) if type_ in _TIGHTER else p
            out[(type_, p)] = SlaTarget(timedelta(hours=_FIRST_RESPONSE_H[q]), timedelta(hours=_RESOLUTION_H[q]))
    return out


def parse_targets(config: Mapping[str, Any]) -> dict[tuple[str, int], SlaTarget]:
    """The defaults overridden by ``{type: {priority: {"first_response_h": h, "resolution_h": h}}}``
    (the shape of ``CARGOTRACE_SLA_TARGETS``). Raises ValueError naming the bad entry."""
    targets = default_targets()
    for type_, by_priority in config.items():
        if type_ not in TICKET_TYPES:
            raise ValueError(f"SLA targets: unknown ticket type {type_!r}")
        if not isinstance(by_priority, Mapping):
            raise ValueError(f"SLA targets: {type_} must map priorities to targets")
        for key, spec in by_priority.items():
            try:
                p = int(key)
            except ValueError:
                raise ValueError(f"SLA targets: {type_} priority {key!r} is not a number") from None
            if p not in PRIORITIES or not isinstance(spec, Mapping):
                raise ValueError(f"SLA targets: {type_} priority {key!r} must be 1..5 with an object")
            fr, res = spec.get("first_response_h"), spec.get("resolution_h")
            if not isinstance(fr, int | float) or not isinstance(res, int | float) or not 0 < fr <= res:
                raise ValueError(f"SLA targets: {type_}/{p} needs 0 < first_response_h <= resolution_h")
            targets[(type_, p)] = SlaTarget(timedelta(hours=fr), timedelta(hours=res))
    return targets


@dataclass(frozen=True, slots=True)
class Dues:
    first_response: datetime
    resolution: datetime


def dues(targets: SlaTargets, type_: str, priority: int, opened_at: datetime) -> Dues:
    target = targets[(type_, priority)]
    return Dues(opened_at + target.first_response, opened_at + target.resolution)


@dataclass(frozen=True, slots=True)
class TicketClock:
    """What the SLA needs of one ticket: its due times and when the steps happened (event time)."""

    dues: Dues
    first_response_at: datetime | None
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class Breach:
    kind: str  # first_response, resolution
    due: datetime  # also the breach's event time


def breaches(clock: TicketClock, now: datetime) -> list[Breach]:
    """The targets missed as of ``now`` (the latest event time known): a step done after its due
    time, or not done and the due time has passed."""
    found: list[Breach] = []
    for kind, due, done in (("first_response", clock.dues.first_response, clock.first_response_at),
                            ("resolution", clock.dues.resolution, clock.resolved_at)):
        if (done is not None and done > due) or (done is None and now >= due):
            found.append(Breach(kind, due))
    return found
