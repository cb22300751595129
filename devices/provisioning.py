"""Registering a device: its row in the registry and its broker account, together or not at all."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from core.contract import DEVICE_ID_RE
from devices.accounts import open_accounts
from runtime.settings import Settings

DEVICE_KINDS = ("scanner", "rfid_gate", "gps_tracker", "env_sensor")


class ProvisioningError(ValueError):
    """The request cannot be carried out as asked (bad id or kind, already exists, ...)."""


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    kind: str
    site: str | None = None
    location: str | None = None
    mode: str | None = None
    vehicle: str | None = None
    profile: str | None = None
    gate: dict[str, object] | None = None


@dataclass(frozen=True)
class Credentials:
    device_id: str
    username: str
    password: str
    host: str
    port: int
    topic_prefix: str

    @property
    def publish_topic(self) -> str:
        return f"{self.topic_prefix}/dev/{self.device_id}/<kind>"


def validate(spec: DeviceSpec) -> None:
    if not DEVICE_ID_RE.match(spec.device_id):
        raise ProvisioningError(f"device id {spec.device_id!r} must match {DEVICE_ID_RE.pattern}")
    if spec.kind not in DEVICE_KINDS:
        raise ProvisioningError(f"device kind {spec.kind!r} must be one of {', '.join(DEVICE_KINDS)}")


def upsert_device(conn: psycopg.Connection, spec: DeviceSpec) -> bool:
    """Create or replace the registry row; True when it was created."""
    row = conn.execute(
        "INSERT INTO devices (device_id, kind, site, location, mode, vehicle, profile, gate) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
        "kind = excluded.kind, site = excluded.site, location = excluded.location, mode = excluded.mode, "
        "vehicle = excluded.vehicle, profile = excluded.profile, gate = excluded.gate, updated_at = now() "
        "RETURNING (xmax = 0)",
        (spec.device_id, spec.kind, spec.site, spec.location, spec.mode, spec.vehicle, spec.profile,
         Jsonb(spec.gate) if spec.gate is not None else None),
    ).fetchone()
    return bool(row and row[0])


def _credentials(settings: Settings, device_id: str, password: str) -> Credentials:
    return Credentials(device_id, device_id, password, settings.mqtt_host, settings.mqtt_port,
                       settings.topic_prefix)


def add_device(settings: Settings, conn: psycopg.Connection, spec: DeviceSpec) -> Credentials:
    """A new device: registry row and broker account in one step. Fails if it exists."""
    validate(spec)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (spec.device_id,)).fetchone():
            raise ProvisioningError(f"device {spec.device_id!r} exists; use `cargotrace device rotate` "
                                    "for new credentials")
        upsert_device(conn, spec)
        with open_accounts(settings) as accounts:
            # The broker account is made inside the open transaction: if it fails, no row is left.
            password = accounts.add_device(spec.device_id)
    return _credentials(settings, spec.device_id, password)


def rotate_device(settings: Settings, conn: psycopg.Connection, device_id: str) -> Credentials:
    if not conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (device_id,)).fetchone():
        raise ProvisioningError(f"device {device_id!r} is not registered")
    with open_accounts(settings) as accounts:
        password = (accounts.rotate_device(device_id) if accounts.device_exists(device_id)
                    else accounts.add_device(device_id))
    return _credentials(settings, device_id, password)


def remove_device(settings: Settings, conn: psycopg.Connection, device_id: str) -> bool:
    """Revoke broker access first (a removed device must not keep publishing), then the row."""
    with open_accounts(settings) as accounts:
        accounts.remove_device(device_id)
    with conn.transaction():
        cur = conn.execute("DELETE FROM devices WHERE device_id = %s", (device_id,))
        conn.execute("DELETE FROM device_state WHERE device_id = %s", (device_id,))
    return cur.rowcount > 0
