"""Devices (CONTRACT 2.2): registry, broker credentials, liveness."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.auth import Admin, Viewer
from api.db import AppSettings, Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import PUT_RESPONSES, found, set_put_status
from api.schemas.common import DeviceIdPath
from api.schemas.devices import CredentialsOut, DeviceCreatedOut, DeviceIn, DeviceOut
from api.store import devices as store
from devices.provisioning import Credentials

router = APIRouter(tags=["devices"])


def _credentials(creds: Credentials) -> dict[str, object]:
    return {"mqtt_username": creds.username, "mqtt_password": creds.password, "mqtt_host": creds.host,
            "mqtt_port": creds.port, "topic_prefix": creds.topic_prefix}


@router.put("/devices/{device_id}", responses=PUT_RESPONSES)
def put_device(device_id: DeviceIdPath, body: DeviceIn, conn: Conn, settings: AppSettings, _: Admin,
               response: Response) -> DeviceCreatedOut | DeviceOut:
    """Create a device (the response carries its MQTT password, once) or replace its attributes."""
    row, creds = store.put_device(settings, conn, device_id, body)
    set_put_status(response, creds is not None)
    if creds is None:
        return DeviceOut.model_validate(row)
    return DeviceCreatedOut.model_validate({**row, **_credentials(creds)})


@router.get("/devices/{device_id}")
def get_device(device_id: str, conn: Conn, settings: AppSettings, _: Viewer) -> DeviceOut:
    row = store.get_device(conn, device_id, settings.device_offline_after_s, settings.device_offline_multiple)
    return DeviceOut.model_validate(found(row, "device", device_id))


@router.get("/devices")
def list_devices(conn: Conn, settings: AppSettings, _: Viewer, limit: Limit = DEFAULT_LIMIT,
                 cursor: Cursor = None) -> Page[DeviceOut]:
    after = decode_cursor("devices", cursor, (str,))
    rows = store.list_devices(conn, None if after is None else str(after[0]), limit + 1,
                              settings.device_offline_after_s,
                              settings.device_offline_multiple)
    return page("devices", rows, limit, lambda r: (r["device_id"],), DeviceOut.model_validate)


@router.post("/devices/{device_id}/rotate-secret")
def rotate_secret(device_id: str, conn: Conn, settings: AppSettings, _: Admin) -> CredentialsOut:
    """A new MQTT password; the old one is refused from now on."""
    creds = store.rotate_secret(settings, conn, device_id)
    return CredentialsOut.model_validate({"device_id": device_id, **_credentials(creds)})


@router.delete("/devices/{device_id}", status_code=204)
def delete_device(device_id: str, conn: Conn, settings: AppSettings, _: Admin) -> Response:
    """Extension: revoke the device's broker access and remove it from the registry."""
    store.delete_device(settings, conn, device_id)
    return Response(status_code=204)
