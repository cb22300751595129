"""Replenishment suggestions and early warnings: stock_low, stock_out_risk, lot_expiring."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core.forecast import days_of_cover, stockout_expected_at


@dataclass(frozen=True, slots=True)
class Policy:
    """Reorder settings of an item, the site's override already applied by the adapter."""

    reorder_point: float | None
    reorder_qty: float | None
    lead_time_days: float | None


@dataclass(frozen=True, slots=True)
class Suggestion:
    sku: str
    site: str
    available: float
    on_order: float
    reorder_point: float | None
    suggested_qty: float
    daily_rate: float
    days_of_cover: float | None
    stockout_expected_at: datetime | None


@dataclass(frozen=True, slots=True)
class Warning:
    """An early-warning condition that holds now; the adapter diffs these against active alarms."""

    type: str                  # stock_low | stock_out_risk | lot_expiring
    sku: str
    site: str
    location: str | None
    lot: str | None
    severity: str
    value: float
    message: str

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.type, self.sku, self.site, self.location or "", self.lot or "")


def suggest(sku: str, site: str, available: float, on_order: float, policy: Policy, daily_rate: float,
            now: datetime) -> Suggestion:
    """Order when the position (available + on order) is at or below the reorder point.

    The quantity is whole reorder quantities enough to lift the position above the reorder point
    plus the demand expected over the lead time; without a reorder quantity, exactly that gap.
    """
    position = available + on_order
    suggested = 0.0
    if policy.reorder_point is not None and position <= policy.reorder_point:
        target = policy.reorder_point + daily_rate * (policy.lead_time_days or 0.0)
        gap = max(0.0, target - position) or 1.0
        if policy.reorder_qty:
            suggested = policy.reorder_qty * max(1, math.ceil(gap / policy.reorder_qty))
        else:
            suggested = math.ceil(gap)
    return Suggestion(sku, site, available, on_order, policy.reorder_point, suggested, daily_rate,
                      days_of_cover(available, daily_rate), stockout_expected_at(now, available, daily_rate))


def stock_warnings(s: Suggestion, policy: Policy) -> list[Warning]:
    out = []
    if policy.reorder_point is not None and s.available < policy.reorder_point:
        out.append(Warning("stock_low", s.sku, s.site, None, None, "warning", s.available,
                           f"{s.sku} at {s.site}: {s.available:g} available, reorder point {policy.reorder_point:g}"))
    if policy.lead_time_days is not None and s.days_of_cover is not None and s.days_of_cover < policy.lead_time_days:
        out.append(Warning("stock_out_risk", s.sku, s.site, None, None, "critical", s.days_of_cover,
                           f"{s.sku} at {s.site}: {s.days_of_cover:.1f} days of cover, lead time "
                           f"{policy.lead_time_days:g} days"))
    return out


@dataclass(frozen=True, slots=True)
class LotOnHand:
    sku: str
    site: str
    location: str
    lot: str
    expiry: date
    qty: float


def expiring_lots(lots: Iterable[LotOnHand], today: date, warning_days: int) -> list[Warning]:
    """A lot on hand that expires within ``warning_days`` (or already expired)."""
    horizon = today + timedelta(days=warning_days)
    return [Warning("lot_expiring", lot.sku, lot.site, lot.location, lot.lot,
                    "critical" if lot.expiry < today else "warning", float((lot.expiry - today).days),
                    f"lot {lot.lot} of {lot.sku} at {lot.location} ({lot.qty:g}) expires {lot.expiry.isoformat()}")
            for lot in lots if lot.qty > 0 and lot.expiry <= horizon]


def diff_warnings(active: Sequence[tuple[str, str, str, str, str]], now_holding: Sequence[Warning]) \
        -> tuple[list[Warning], list[tuple[str, str, str, str, str]]]:
    """(to open, keys to clear): one alarm per condition key, kept while the condition holds."""
    holding = {w.key: w for w in now_holding}
    active_set = set(active)
    return [w for k, w in holding.items() if k not in active_set], [k for k in active if k not in holding]
