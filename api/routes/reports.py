"""Service statistics (CONTRACT §4 ``GET /reports/service``), as JSON or CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from api.auth import Viewer
from api.db import Conn
from api.errors import InvalidInputError
from api.store import reports as store
from core.service_stats import ServiceStats, service_stats

router = APIRouter(tags=["after-sales"])


def _stats(conn: Conn, since: datetime | None, until: datetime | None, site: str | None) -> ServiceStats:
    # A time without an offset is read as UTC (comparing it with an aware one would be an error).
    since, until = (None if t is None else t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    if since is not None and until is not None and until <= since:
        raise InvalidInputError("to must be after from")
    now = datetime.now(UTC)
    return service_stats(store.ticket_facts(conn, since, until, site), store.return_facts(conn, since, until, site),
                         now)


def _json(stats: ServiceStats) -> dict[str, Any]:
    out = asdict(stats)
    out["returns"] = [{"sku": s, "reason": r, "qty": q} for s, r, q in stats.returns]
    return out


def _csv(stats: ServiceStats) -> str:
    """One ``section,key,value`` row per figure: a spreadsheet pivots it; the sections are the
    JSON's keys."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "key", "value"])
    for section in ("opened_by_type", "resolved_by_type", "by_status"):
        for k, v in getattr(stats, section).items():
            w.writerow([section, k, v])
    for name in ("median_first_response_s", "median_resolution_s", "sla_met_pct", "backlog", "backlog_mean_age_s",
                 "backlog_oldest_age_s", "mean_feedback", "feedback_count"):
        value = getattr(stats, name)
        w.writerow(["summary", name, "" if value is None else value])
    for sku, reason, qty in stats.returns:
        w.writerow(["returns", f"{sku}/{reason}", qty])
    return buf.getvalue()


@router.get("/reports/service", response_model=None)
def service_report(conn: Conn, _: Viewer,
                   since: Annotated[datetime | None, Query(alias="from")] = None,
                   until: Annotated[datetime | None, Query(alias="to")] = None,
                   site: str | None = None,
                   format: Annotated[Literal["json", "csv"], Query(description="extension: csv export")] = "json",
                   ) -> dict[str, Any] | Response:
    """Tickets opened in [from, to) (at ``site``): by type and status, median first response and
    resolution (seconds), SLA met %, backlog and its age, mean feedback, returns by sku and reason."""
    stats = _stats(conn, since, until, site)
    if format == "csv":
        return Response(_csv(stats), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="service-report.csv"'})
    return _json(stats)
