"""The operations dashboard (``/``), its static files (``/static``), the public tracking page
(``/track/{token}``), and the two small API extensions the dashboard opens with (``/me``,
``/overview``).

The pages are plain HTML, CSS and ES modules from ``api/static`` (no build step, nothing from the
internet: the map and charts are SVG drawn in the browser), so they work offline. They call the
same ``/api/v1`` endpoints as any client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, Field

from api.auth import Viewer
from api.db import AppSettings, Conn
from api.routes import events, telemetry
from api.schemas.common import Out, UtcDatetime
from api.store import events as store

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Everything from this origin: no CDN, tile server or web font can sneak in (the pages must work
# offline), and injected markup cannot run scripts.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

pages = APIRouter(include_in_schema=False)
api = APIRouter(tags=["dashboard"])


@pages.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


@pages.get("/track/{token}")
def tracking_page(token: str) -> FileResponse:
    """Public: the page reads its token from the address and calls ``GET /api/v1/track/{token}``."""
    return FileResponse(STATIC_DIR / "track.html", headers=_PAGE_HEADERS)


class MeOut(Out):
    role: str
    label: str | None


class OverviewOut(Out):
    events_head: int = Field(description="Last-Event-ID that continues the event stream right after these counts")
    alarms_active: dict[str, int] = Field(description="active alarms by severity")
    alarms_unacknowledged: int
    shipments: dict[str, int] = Field(description="shipments by status")
    devices_online: int
    devices_total: int
    movements_since: int
    since: UtcDatetime


@api.get("/me")
def me(who: Viewer) -> MeOut:
    """Extension: the role of the token (the dashboard shows the acknowledge button to operators)."""
    return MeOut(role=who.role, label=who.label)


@api.get("/overview")
def overview(conn: Conn, settings: AppSettings, _: Viewer,
             since: Annotated[AwareDatetime | None, Query(description="count movements from here; default "
                                                          "midnight UTC (the dashboard sends local midnight)")] = None,
             ) -> OverviewOut:
    """Extension: the dashboard's overview counts in one query."""
    start = since or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    row = store.overview(conn, start, settings.device_offline_after_s, settings.device_offline_multiple)
    return OverviewOut.model_validate({**row, "since": start})


def install(app: FastAPI, api_prefix: str) -> None:
    """Add the live events, telemetry, dashboard and tracking page to ``app``."""
    for router in (events.router, telemetry.router, api):
        app.include_router(router, prefix=api_prefix)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
