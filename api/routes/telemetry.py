"""Telemetry series (CONTRACT 2.3 ``GET /telemetry/{device_id}``): readings per time bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from api.auth import Viewer
from api.db import Conn
from api.errors import InvalidInputError, NotFoundError
from api.schemas.common import Out, UtcDatetime
from api.store import telemetry as store
from api.store.records import Row

router = APIRouter(tags=["telemetry"])

# An allow-list, not a parsed interval: the value reaches SQL as a number of seconds only.
BUCKETS: dict[str, int] = {
    "10 seconds": 10, "30 seconds": 30, "1 minute": 60, "5 minutes": 300, "15 minutes": 900,
    "30 minutes": 1800, "1 hour": 3600, "6 hours": 21600, "1 day": 86400,
}
Bucket = Literal["10 seconds", "30 seconds", "1 minute", "5 minutes", "15 minutes", "30 minutes", "1 hour",
                 "6 hours", "1 day"]
DEFAULT_RANGE = timedelta(hours=24)
# The default bucket is the finest that gives at most this many points (a chart's worth).
TARGET_BUCKETS = 300
MAX_BUCKETS = 10_000


class Stat(Out):
    min: float | None
    max: float | None
    avg: float | None
    count: int


class TelemetryBucket(Out):
    bucket: UtcDatetime = Field(description="start of the bucket")
    count: int = Field(description="readings (rows) in the bucket")
    temp_c: Stat | None = None
    rh_pct: Stat | None = None
    speed_kmh: Stat | None = None


class TelemetryOut(Out):
    device_id: str
    kind: str
    from_: UtcDatetime = Field(serialization_alias="from")
    to: UtcDatetime
    bucket: str
    bucket_s: int
    items: list[TelemetryBucket]
    next: None = Field(None, description="always null: the whole range is one page")


def default_bucket(span: timedelta) -> str:
    for name, seconds in BUCKETS.items():
        if span.total_seconds() / seconds <= TARGET_BUCKETS:
            return name
    return "1 day"


def _item(row: Row, metrics: tuple[str, ...]) -> TelemetryBucket:
    stats = {m: Stat(min=row[f"{m}_min"], max=row[f"{m}_max"], avg=row[f"{m}_avg"], count=row[f"{m}_count"])
             for m in metrics}
    return TelemetryBucket.model_validate({"bucket": row["bucket"], "count": row["count"], **stats})


@router.get("/telemetry/{device_id}", response_model_by_alias=True)
def telemetry(device_id: str, conn: Conn, _: Viewer,
              from_: Annotated[AwareDatetime | None, Query(alias="from", description="inclusive, RFC 3339; "
                                                           "default `to` minus 24 hours")] = None,
              to: Annotated[AwareDatetime | None, Query(description="exclusive, RFC 3339; default now")] = None,
              bucket: Annotated[Bucket | None, Query(description="default: the finest giving at most "
                                                     f"{TARGET_BUCKETS} buckets")] = None) -> TelemetryOut:
    """Per bucket: min, max, avg and count of an env sensor's `temp_c` and `rh_pct`, a tracker's
    `speed_kmh`; scanners and gates get the count of scans / tag reads. Oldest bucket first."""
    end = to or datetime.now(UTC)
    start = from_ or end - DEFAULT_RANGE
    if start >= end:
        raise InvalidInputError("query parameter 'from' must be before 'to'")
    name = bucket or default_bucket(end - start)
    if (end - start).total_seconds() / BUCKETS[name] > MAX_BUCKETS:
        raise InvalidInputError(f"{name!r} buckets over this range would be more than {MAX_BUCKETS}; "
                                "choose a larger bucket or a shorter range")
    kind = store.device_kind(conn, device_id)
    if kind is None or kind not in store.SERIES_BY_KIND:
        raise NotFoundError(f"device {device_id!r} does not exist")
    rows = store.buckets(conn, kind, device_id, start, end, BUCKETS[name])
    metrics = store.SERIES_BY_KIND[kind].metrics
    return TelemetryOut(device_id=device_id, kind=kind, from_=start, to=end, bucket=name, bucket_s=BUCKETS[name],
                        items=[_item(r, metrics) for r in rows], next=None)
