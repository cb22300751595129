"""Bearer-token authentication and role checks, as FastAPI dependencies.

Roles are ordered viewer < operator < admin; a role can do everything a lower one can. A missing,
malformed, unknown or revoked token is 401 (with ``WWW-Authenticate: Bearer``); a valid token
whose role is too low is 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.db import Conn
from api.errors import ForbiddenError, UnauthorizedError
from api.tokens import ROLES, lookup_token

_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Only declares the scheme in OpenAPI (the "Authorize" button of /docs); the header is parsed below
# so that a missing and a malformed header get different messages.
_scheme = HTTPBearer(auto_error=False, description="an API token from `cargotrace token create --role ROLE`")
SchemeDoc = Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]


@dataclass(frozen=True)
class Principal:
    role: str
    label: str | None
    token_id: int

    @property
    def name(self) -> str:
        """Who did it, for audit fields such as ``ack_by``."""
        return self.label or self.role


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise UnauthorizedError("missing Authorization header; send `Authorization: Bearer <token>`")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise UnauthorizedError("malformed Authorization header; expected `Bearer <token>`")
    return token


def require(role: str) -> Callable[[Request, Conn, HTTPAuthorizationCredentials | None], Principal]:
    """A dependency that authenticates the request and demands at least ``role``."""
    if role not in _RANK:
        raise ValueError(f"unknown role {role!r}")

    def authorised(request: Request, conn: Conn, _doc: SchemeDoc) -> Principal:
        found = lookup_token(conn, bearer_token(request))
        if found is None:
            raise UnauthorizedError("invalid, expired or revoked token")
        principal = Principal(*found)
        # For the audit log (api/audit.py), which runs around the route and sees only the scope.
        request.state.principal = principal
        if _RANK[principal.role] < _RANK[role]:
            raise ForbiddenError(f"this needs the {role} role; the token has {principal.role}")
        return principal

    authorised.__name__ = f"require_{role}"
    return authorised


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
