"""The after-sales routers, registered by the app in one place."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import public_service, repairs, reports, rmas, subscriptions

SERVICE_ROUTERS: tuple[APIRouter, ...] = (rmas.router, repairs.router, public_service.router, reports.router,
                                          subscriptions.router)
