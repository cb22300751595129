"""Service statistics (CONTRACT §4 ``GET /reports/service``) from plain ticket and return facts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median


@dataclass(frozen=True, slots=True)
class TicketFacts:
    type: str
    status: str
    opened_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    sla_breached: bool
    feedback_score: int | None


@dataclass(frozen=True, slots=True)
class ReturnFacts:
    sku: str
    reason: str
    qty: float


@dataclass(frozen=True, slots=True)
class ServiceStats:
    opened_by_type: dict[str, int]
    resolved_by_type: dict[str, int]
    by_status: dict[str, int]
    median_first_response_s: float | None
    median_resolution_s: float | None
    sla_met_pct: float | None
    backlog: int
    backlog_mean_age_s: float | None
    backlog_oldest_age_s: float | None
    mean_feedback: float | None
    feedback_count: int
    returns: list[tuple[str, str, float]]  # (sku, reason, qty), largest first


def _median(values: list[float]) -> float | None:
    return float(median(values)) if values else None


def service_stats(tickets: Sequence[TicketFacts], returns: Sequence[ReturnFacts], now: datetime) -> ServiceStats:
    """``tickets`` are those opened in the period; SLA met % counts a ticket once it is decided
    (breached, or resolved in time), so a young open ticket neither helps nor hurts."""
    responses = [(t.first_response_at - t.opened_at).total_seconds() for t in tickets if t.first_response_at]
    resolutions = [(t.resolved_at - t.opened_at).total_seconds() for t in tickets if t.resolved_at]
    decided = [t for t in tickets if t.sla_breached or t.resolved_at is not None]
    met = [t for t in decided if not t.sla_breached]
    backlog = [(now - t.opened_at).total_seconds() for t in tickets if t.resolved_at is None
               and t.status not in ("resolved", "closed")]
    scores = [t.feedback_score for t in tickets if t.feedback_score is not None]
    per_return: dict[tuple[str, str], float] = {}
    for r in returns:
        per_return[(r.sku, r.reason)] = per_return.get((r.sku, r.reason), 0.0) + r.qty
    return ServiceStats(
        opened_by_type=dict(sorted(Counter(t.type for t in tickets).items())),
        resolved_by_type=dict(sorted(Counter(t.type for t in tickets if t.resolved_at).items())),
        by_status=dict(sorted(Counter(t.status for t in tickets).items())),
        median_first_response_s=_median(responses),
        median_resolution_s=_median(resolutions),
        sla_met_pct=round(100.0 * len(met) / len(decided), 1) if decided else None,
        backlog=len(backlog),
        backlog_mean_age_s=sum(backlog) / len(backlog) if backlog else None,
        backlog_oldest_age_s=max(backlog, default=None),
        mean_feedback=round(sum(scores) / len(scores), 2) if scores else None,
        feedback_count=len(scores),
        returns=sorted(((s, r, q) for (s, r), q in per_return.items()), key=lambda x: (-x[2], x[0], x[1])),
    )
