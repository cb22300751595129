"""Notification rules: which subscription hears of which event, how it is signed, and when a
failed delivery is tried again (exponential backoff, for at least a day)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

EVENT_KINDS: Final = ("movement", "shipment", "shipment_event", "alarm", "device", "ticket", "order", "rma")
# What a ticket event tells a receiver: a customer or an agent may be the receiver, so the notes,
# timeline and contact stay inside.
TICKET_FIELDS: Final = ("id", "type", "status", "priority", "shipment", "customer", "assignee", "escalated_to",
                        "sla_breached", "summary", "opened_at", "first_response_due", "resolution_due", "rma")


def matches(events: Sequence[str], filter_: Mapping[str, Any] | None, kind: str, payload: Mapping[str, Any]) -> bool:
    """A subscription hears an event of a kind it names whose payload has every ``filter`` value
    (``{"customer": "CUST-1"}``: that customer's tickets; ``{"assignee": "ann"}``: ann's)."""
    if kind not in events and not (kind == "shipment_event" and "shipment" in events):
        return False
    return all(payload.get(k) == v for k, v in (filter_ or {}).items())


def shape(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "ticket":
        return {k: payload.get(k) for k in TICKET_FIELDS}
    return dict(payload)


def signature(secret: str, body: bytes) -> str:
    """``X-Cargotrace-Signature``: HMAC-SHA256 of the raw body with the subscription's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def next_attempt(attempts: int, now: datetime, base_s: float, max_s: float) -> datetime:
    """After the ``attempts``-th failure: base, 2 * base, 4 * base ... capped at ``max_s``."""
    return now + timedelta(seconds=min(max_s, base_s * 2 ** max(0, attempts - 1)))


def gives_up(created_at: datetime, now: datetime, retry_for: timedelta) -> bool:
    """A delivery is abandoned (marked failed, still visible) only after ``retry_for`` of trying."""
    return now - created_at >= retry_for
