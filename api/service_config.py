"""After-sales and notification configuration, read once from the environment (``CARGOTRACE_``).

Kept apart from ``runtime.settings`` so the after-sales service brings its own knobs (SLA targets,
SMTP, webhook retries, the public form's rate limit) without touching the ingest settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from pydantic_settings import BaseSettings, SettingsConfigDict

from api.errors import ApiError, ConflictError, InvalidInputError
from core.service import WorkflowError
from core.sla import SlaTarget, parse_targets


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARGOTRACE_", extra="ignore", frozen=True)

    # {"complaint": {"1": {"first_response_h": 1, "resolution_h": 8}}, ...}; unnamed ones keep defaults.
    sla_targets: str = "{}"
    # Who the timeline names for what the platform itself did.
    service_author: str = "system"
    # Public "report a problem": issues per tracking token per hour.
    public_issues_per_hour: int = 3
    # Notifier: poll interval (a NOTIFY wakes it earlier), HTTP timeout, retry schedule.
    notifier_interval_s: float = 2.0
    webhook_timeout_s: float = 10.0
    retry_base_s: float = 30.0
    retry_max_s: float = 3600.0
    # Retries continue for at least 24 h (CONTRACT §4), then the delivery is marked failed.
    retry_for_h: float = 48.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "cargotrace@localhost"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False


@cache
def service_settings() -> ServiceSettings:
    return ServiceSettings()


@cache
def sla_targets() -> dict[tuple[str, int], SlaTarget]:
    return parse_targets(json.loads(service_settings().sla_targets))


class TooManyRequestsError(ApiError):
    status, code = 429, "rate_limited"


_INPUT_CODES = frozenset({"invalid_score", "invalid_quantity", "invalid_amount", "invalid_disposition",
                          "invalid_refund_status", "nothing_to_inspect", "invalid_status"})


@contextmanager
def refusals() -> Iterator[None]:
    """A workflow refusal from core becomes 409 (the object's state forbids it) or 422 (bad input)."""
    try:
        yield
    except WorkflowError as e:
        if e.code in _INPUT_CODES:
            raise InvalidInputError(e.message) from e
        raise ConflictError(f"{e.code}: {e.message}") from e
