"""Keyset pagination: ``{"items": [...], "next": cursor-or-null}``.

A cursor is the URL-safe base64 of ``[list name, last key...]``: opaque to clients, stable under
inserts (no offsets), and refused (400 ``bad_cursor``) when tampered with or taken from another list.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from api.errors import BadCursorError

DEFAULT_LIMIT = 100
# Real cursors are a list name and a few keys (well under 200 characters); anything far longer is
# forged, and a deeply nested one would otherwise reach the JSON parser's recursion limit.
MAX_CURSOR_CHARS = 1024
MAX_LIMIT = 1000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, 1-{MAX_LIMIT}")]
Cursor = Annotated[str | None, Query(description="the `next` value of the previous page")]

KeyPart = str | int | datetime
Key = tuple[KeyPart, ...]
T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None


def encode_cursor(kind: str, key: Sequence[KeyPart]) -> str:
    parts: list[Any] = [kind, *(k.isoformat() if isinstance(k, datetime) else k for k in key)]
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None, types: Sequence[type]) -> Key | None:
    """The key a cursor carries, each part converted to ``types``; None for the first page."""
    if cursor is None:
        return None
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadCursorError("malformed cursor; pass back the `next` value of a previous page unchanged")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise BadCursorError("malformed cursor; pass back the `next` value of a previous page unchanged") from None
    if not isinstance(parts, list) or len(parts) != len(types) + 1 or parts[0] != kind:
        raise BadCursorError(f"this cursor does not belong to the {kind} list")
    return tuple(_convert(value, typ) for value, typ in zip(parts[1:], types, strict=True))


def _convert(value: object, typ: type) -> KeyPart:
    plain_int = isinstance(value, int) and not isinstance(value, bool)
    if typ is datetime and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadCursorError("malformed cursor time") from None
        if parsed.tzinfo is not None:
            return parsed
    elif (typ is int and plain_int) or (typ is str and isinstance(value, str)):
        return value  # type: ignore[return-value]
    raise BadCursorError("malformed cursor key")


def page(kind: str, rows: Sequence[R], limit: int, key: Callable[[R], Key],
         shape: Callable[[R], T]) -> Page[T]:
    """``rows`` were fetched with ``limit + 1``: the extra row only says whether a next page exists."""
    shown = rows[:limit]
    more = len(rows) > limit and shown
    return Page[T](items=[shape(r) for r in shown], next=encode_cursor(kind, key(shown[-1])) if more else None)
