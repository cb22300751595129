"""The device registry seen through the API: provisioning with broker accounts, and liveness.

Registry rows and broker accounts are written by ``devices.provisioning`` (the same code the CLI
uses), so a device created here can connect at once; no broker restart is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.errors import BrokerUnavailableError, ConflictError, NotFoundError
from api.schemas.devices import DeviceIn
from api.store import references
from api.store.records import Row
from devices.broker_accounts import BrokerError
from devices.provisioning import (
    Credentials,
    DeviceSpec,
    ProvisioningError,
    add_device,
    remove_device,
    rotate_device,
    upsert_device,
)
from runtime.settings import Settings

_ATTRIBUTES = ("kind", "site", "location", "mode", "vehicle", "profile", "gate")

# Liveness comes from ingest's device_state; battery is the latest reported level by device time.
_VIEW = """
SELECT d.*, s.last_seen,
       coalesce(s.last_seen >= now() - make_interval(secs => device_silence_limit_s(
           s.expected_interval_s, %(offline_multiple)s, %(offline_after_s)s)), false) AS online,
       b.battery_pct
FROM devices d
LEFT JOIN device_state s ON s.device_id = d.device_id
LEFT JOIN LATERAL (
    SELECT st.battery_pct FROM device_status st
    WHERE st.device_id = d.device_id AND st.battery_pct IS NOT NULL
    ORDER BY st.ts DESC LIMIT 1
) b ON true
"""


@contextmanager
def _provisioning_errors_translated(device_id: str) -> Iterator[None]:
    try:
        yield
    except ProvisioningError as exc:
        # Our own checks ran first, so what is left is a concurrent create or delete.
        raise ConflictError(f"device {device_id!r}: {exc}") from None
    except BrokerError as exc:
        if "already" in str(exc):
            raise ConflictError(f"device {device_id!r}: {exc}") from None
        raise BrokerUnavailableError(f"device {device_id!r}: the broker account could not be changed: {exc}") from None


def _spec(device_id: str, body: DeviceIn) -> DeviceSpec:
    gate = body.gate.model_dump(exclude_none=True) if body.gate is not None else None
    return DeviceSpec(device_id, body.kind, body.site, body.location, body.mode, body.vehicle, body.profile, gate)


def _check_references(conn: psycopg.Connection, body: DeviceIn) -> None:
    if body.site is not None:
        references.require_site(conn, body.site)
    if body.location is not None:
        references.require_location(conn, body.location, "location", in_site=body.site)
    if body.vehicle is not None:
        references.require_location(conn, body.vehicle, "vehicle", of_type="vehicle")
    if body.profile is not None:
        references.require_profile(conn, body.profile)
    if body.gate is not None:
        references.require_location(conn, body.gate.outer.location, "gate.outer.location")
        references.require_location(conn, body.gate.inner.location, "gate.inner.location")


def _unchanged(row: dict[str, Any], spec: DeviceSpec) -> bool:
    return all(row[name] == getattr(spec, name) for name in _ATTRIBUTES)


def _exists(conn: psycopg.Connection, device_id: str) -> bool:
    return conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (device_id,)).fetchone() is not None


def put_device(settings: Settings, conn: psycopg.Connection, device_id: str,
               body: DeviceIn) -> tuple[Row, Credentials | None]:
    """Create (registry row + broker account, credentials returned) or replace the attributes."""
    spec = _spec(device_id, body)
    credentials: Credentials | None = None
    with _provisioning_errors_translated(device_id), conn.transaction():
        _check_references(conn, body)
        with conn.cursor(row_factory=dict_row) as cur:
            existing = cur.execute("SELECT * FROM devices WHERE device_id = %s FOR UPDATE", (device_id,)).fetchone()
        if existing is None:
            # The broker account is made while this transaction is open: no row without an account.
            credentials = add_device(settings, conn, spec)
        elif not _unchanged(existing, spec):
            # Writing an identical body would only move updated_at; PUT twice must give the same object.
            upsert_device(conn, spec)
    view = get_device(conn, device_id, settings.device_offline_after_s, settings.device_offline_multiple)
    if view is None:
        raise ConflictError(f"device {device_id!r} was deleted while it was being written")
    return view, credentials


def get_device(conn: psycopg.Connection, device_id: str, offline_after_s: int,
               offline_multiple: float) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_VIEW + "WHERE d.device_id = %(device_id)s",
                           {"device_id": device_id, "offline_after_s": offline_after_s,
                            "offline_multiple": offline_multiple}).fetchone()


def list_devices(conn: psycopg.Connection, after: str | None, limit: int, offline_after_s: int,
                 offline_multiple: float) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_VIEW + "WHERE %(after)s::text IS NULL OR d.device_id > %(after)s "
                           "ORDER BY d.device_id LIMIT %(limit)s",
                           {"after": after, "limit": limit, "offline_after_s": offline_after_s,
                            "offline_multiple": offline_multiple}).fetchall()


def rotate_secret(settings: Settings, conn: psycopg.Connection, device_id: str) -> Credentials:
    if not _exists(conn, device_id):
        raise NotFoundError(f"device {device_id!r} does not exist")
    with _provisioning_errors_translated(device_id):
        return rotate_device(settings, conn, device_id)


def delete_device(settings: Settings, conn: psycopg.Connection, device_id: str) -> None:
    """Revoke the broker account (connected sessions are dropped) and remove the registry row."""
    if not _exists(conn, device_id):
        raise NotFoundError(f"device {device_id!r} does not exist")
    with _provisioning_errors_translated(device_id):
        remove_device(settings, conn, device_id)
