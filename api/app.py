"""The HTTP API: ``create_app(settings)`` builds the FastAPI application (CONTRACT section 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.audit import AuditLog
from api.db import open_pool
from api.docs import install_docs
from api.errors import install_error_handlers
from api.hub import EventHub
from api.limits import BodyLimit
from api.notify.loop import start as start_service_loop
from api.notify.loop import stop as stop_service_loop
from api.routes import (
    alarms,
    dead_letters,
    devices,
    epcis,
    health,
    ledger,
    master_data,
    orders,
    orders_tracking,
    shipments,
    tickets,
    tracking,
)
from api.routes.audit import router as audit_router
from api.routes.dashboard import install as install_dashboard
from api.routes.service import SERVICE_ROUTERS
from api.service_config import service_settings
from runtime import metrics
from runtime.settings import Settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, service_loop: bool = False) -> FastAPI:
    """The API for ``settings`` (database, broker, offline threshold); the pool opens with the lifespan.
    ``service_loop`` also runs the after-sales service loop (SLA, notifications: api/notify/loop.py)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = open_pool(settings)
        app.state.pool = pool
        hub = EventHub(settings.api_url, per_token=settings.api_streams_per_token,
                       total=settings.api_streams_total)
        app.state.hub = hub
        hub.start()
        # One gauge per process: the last app created in it reports (one per API process in production).
        metrics.EVENT_STREAM_CLIENTS.set_function(lambda: hub.open_streams)
        # The after-sales service loop connects like the pool (the API's role when configured).
        loop = start_service_loop(settings.api_url, service_settings()) if service_loop else None
        try:
            yield
        finally:
            if loop is not None:
                await to_thread.run_sync(stop_service_loop, *loop)
            await hub.stop()
            await to_thread.run_sync(pool.close)

    app = FastAPI(
        title="cargotrace",
        version="1",
        summary="Warehouse and logistics telemetry: master data, stock ledger, shipments, alarms.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served by api/docs.py from local files
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Starlette runs the middleware added last first: the body limit, then the audit log.
    app.add_middleware(AuditLog)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    for module in (health, master_data, devices, shipments, ledger, dead_letters, alarms, epcis, tickets, tracking,
                   orders, orders_tracking):
        app.include_router(module.router, prefix=API_PREFIX)
    for router in SERVICE_ROUTERS:  # after-sales (CONTRACT §4)
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(audit_router, prefix=API_PREFIX)
    install_docs(app, f"{API_PREFIX}/openapi.json")
    app.include_router(orders_tracking.page)  # before the dashboard's /track/{token}: more specific
    install_dashboard(app, API_PREFIX)  # live events, telemetry, the dashboard and tracking pages

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus text format, unauthenticated as scrapers expect: bind the API to a private
        address or let the proxy in front refuse /metrics from outside (README, Operations)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    return app
