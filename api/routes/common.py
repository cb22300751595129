"""Small helpers the route modules share."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from api.errors import NotFoundError
from api.store.records import Row

# Documented on every PUT: 201 the first time, 200 on a replace.
PUT_RESPONSES: dict[int | str, dict[str, Any]] = {201: {"description": "created"}, 200: {"description": "replaced"}}


def set_put_status(response: Response, created: bool) -> None:
    response.status_code = 201 if created else 200


def found(row: Row | None, what: str, key: str) -> Row:
    if row is None:
        raise NotFoundError(f"{what} {key!r} does not exist")
    return row
