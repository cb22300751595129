"""Liveness of the API's dependencies; public, always 200 so that probes can read the body."""

from __future__ import annotations

import socket
from typing import Literal

from fastapi import APIRouter, Request
from psycopg import Error as PsycopgError
from pydantic import BaseModel

from api.db import pool_of, settings_of

router = APIRouter(tags=["health"])

DB_WAIT_S = 2.0
BROKER_CONNECT_S = 1.0


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    db: bool
    broker: bool


def _db_ok(request: Request) -> bool:
    try:
        with pool_of(request).connection(timeout=DB_WAIT_S) as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 2000")
            return conn.execute("SELECT 1").fetchone() == (1,)
    except PsycopgError:
        return False


def _broker_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=BROKER_CONNECT_S):
            return True
    except OSError:
        return False


@router.get("/health")
def health(request: Request) -> Health:
    settings = settings_of(request)
    db = _db_ok(request)
    broker = _broker_ok(settings.mqtt_host, settings.mqtt_port)
    return Health(status="ok" if db and broker else "degraded", db=db, broker=broker)
