"""Notification subscriptions (CONTRACT §4, admin) and their delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import Admin
from api.db import Conn
from api.routes.common import PUT_RESPONSES, found, set_put_status
from api.schemas.common import CodePath
from api.schemas.service import DeliveryOut, SubscriptionIn, SubscriptionOut
from api.store import subscriptions as store

router = APIRouter(tags=["notifications"])


@router.put("/subscriptions/{sub_id}", responses=PUT_RESPONSES)
def put_subscription(sub_id: CodePath, body: SubscriptionIn, conn: Conn, _: Admin, response: Response
                     ) -> SubscriptionOut:
    """Create or replace; the response carries the ``secret`` (generated when not given, kept on a
    replace without one). Hears events committed from now on."""
    row, created = store.put_subscription(conn, sub_id, body.channel, body.target, list(body.events),
                                          body.filter, body.secret)
    set_put_status(response, created)
    return SubscriptionOut.model_validate(row)


@router.get("/subscriptions")
def list_subscriptions(conn: Conn, _: Admin) -> dict[str, list[SubscriptionOut] | None]:
    return {"items": [SubscriptionOut.model_validate(r) for r in store.list_subscriptions(conn)], "next": None}


@router.get("/subscriptions/{sub_id}")
def get_subscription(sub_id: CodePath, conn: Conn, _: Admin) -> SubscriptionOut:
    return SubscriptionOut.model_validate(found(store.get_subscription(conn, sub_id), "subscription", sub_id))


@router.delete("/subscriptions/{sub_id}", status_code=204)
def delete_subscription(sub_id: CodePath, conn: Conn, _: Admin) -> Response:
    if not store.delete_subscription(conn, sub_id):
        found(None, "subscription", sub_id)
    return Response(status_code=204)


@router.get("/subscriptions/{sub_id}/deliveries")
def list_deliveries(sub_id: CodePath, conn: Conn, _: Admin,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, list[DeliveryOut] | None]:
    """Newest first: each delivery with its attempts, last HTTP status or error, and next try."""
    found(store.get_subscription(conn, sub_id), "subscription", sub_id)
    return {"items": [DeliveryOut.model_validate(r) for r in store.deliveries(conn, sub_id, limit)], "next": None}
