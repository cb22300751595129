"""Types shared by the request and response bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, PlainSerializer, StringConstraints

from core.contract import DEVICE_ID_RE

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
CODE_MAX = 64


def rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; fractions only when there are any (``2026-11-24T12:00:00Z``)."""
    utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    text = utc.replace(tzinfo=None).isoformat(timespec="microseconds" if utc.microsecond else "seconds")
    return text + "Z"


def json_number(value: Decimal) -> int | float:
    # numeric columns arrive as Decimal, which pydantic would send as a string; clients want numbers.
    return int(value) if value == value.to_integral_value() else float(value)


UtcDatetime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]
Number = Annotated[Decimal, PlainSerializer(json_number, return_type=int | float)]

# A code in a body (a reference to another object) and in a path (the object's own key).
Code = Annotated[str, StringConstraints(min_length=1, max_length=CODE_MAX, pattern=CODE_PATTERN)]
CodePath = Annotated[str, Path(min_length=1, max_length=CODE_MAX, pattern=CODE_PATTERN,
                               description="1-64 characters: letters, digits, `_ . : -`, not starting with a symbol")]
DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID_RE.pattern,
                                   description="1-64 characters: letters, digits, `_ . -`, not starting with a symbol")]


class In(BaseModel):
    """A request body: unknown fields are refused, so a misspelt optional field is not silently lost."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Out(BaseModel):
    """A response body, built from a database row (extra columns are ignored)."""

    model_config = ConfigDict(extra="ignore")
