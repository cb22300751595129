"""The audit log of API writes: who, when, what, and the resource before and after.

An ASGI middleware around the routes: for every authenticated POST/PUT/PATCH/DELETE it records the
principal (set on the request by ``api.auth.require``), method, path, status and request body, and,
where the API has a GET on the same path (sites, items, shipments, tickets ...), that resource's
representation before and after the write. The row is written after the response is complete, on
a pooled connection; a failure to write it is logged, not shown to the client (the write itself
has committed).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from anyio import to_thread
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("cargotrace.api.audit")

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bodies kept per audit row; a larger one is recorded as {"truncated": bytes}.
MAX_KEPT = 16 * 1024
# Paths with their own audit meaning or none: the stream ticket is a read in disguise.
_NOT_AUDITED = ("/api/v1/stream-tickets",)


class AuditLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES or scope["path"] in _NOT_AUDITED:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        before = await self._current(scope)
        body = bytearray()
        status = 0

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= MAX_KEPT:
                body.extend(message.get("body", b"")[: MAX_KEPT + 1 - len(body)])
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, recording_receive, recording_send)
        principal = state.get("principal")
        if principal is None:
            return  # refused before authentication: nothing was written, nobody to name
        after = await self._current(scope) if status < 400 else None
        row = (principal.token_id, principal.name, principal.role, scope["method"], scope["path"], status,
               _json(bytes(body)), before, after)
        pool: ConnectionPool = scope["app"].state.pool
        try:
            await to_thread.run_sync(_insert, pool, row)
        except Exception:  # the write is done; losing its audit row must not turn it into a 500
            log.exception("could not write the audit row for %s %s", scope["method"], scope["path"])

    async def _current(self, scope: Scope) -> Any:
        """The JSON a GET on the same path answers with the same credentials; None if none."""
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"content-type")]
        inner = {**scope, "method": "GET", "headers": headers, "query_string": b"", "state": {}}
        status = 0
        chunks: list[bytes] = []

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def collect(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(inner, no_body, collect)
        return _json(b"".join(chunks)) if status == 200 else None


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    if len(raw) > MAX_KEPT:
        return {"truncated": len(raw)}
    try:
        # jsonb cannot hold U+0000 (a refused request may carry one): keep the rest of the body.
        return json.loads(raw.replace(b"\\u0000", b"\\ufffd"))
    except ValueError:
        return {"unparsed": raw.decode("utf-8", "replace")}


def _insert(pool: ConnectionPool, row: tuple[Any, ...]) -> None:
    values = (*row[:6], *(None if v is None else Jsonb(v) for v in row[6:]))
    with pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO audit_log (token_id, actor, role, method, path, status, request, before, after) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", values)
