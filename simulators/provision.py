"""Master data and devices through the HTTP API, so a scenario runs on an empty system.

Every ``PUT`` is idempotent (create or replace), so running a scenario twice leaves one copy of
its world. A device's MQTT password is shown only by the call that creates it; for a device that
already exists the client asks ``POST /devices/{id}/rotate-secret`` for a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx


class ApiError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class DeviceDef:
    device_id: str
    body: Mapping[str, Any]  # the PUT /devices body: kind, site, location, vehicle, profile, gate, mode


class ApiClient:
    def __init__(self, api_url: str, admin_token: str, *, timeout: float = 30.0) -> None:
        base = api_url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        self.base = base
        self._client = httpx.Client(base_url=base, timeout=timeout,
                                    headers={"Authorization": f"Bearer {admin_token}"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                detail = response.text[:300]
            raise ApiError(f"{what}: HTTP {response.status_code}: {detail}")
        return response.json() if response.content else None

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            return self._check(self._client.put(path, json=dict(body)), f"PUT {path}")
        except httpx.HTTPError as exc:
            raise ApiError(f"PUT {self.base}{path}: {exc}") from None

    def get(self, path: str, **params: Any) -> Any:
        try:
            return self._check(self._client.get(path, params={k: v for k, v in params.items() if v is not None}),
                               f"GET {path}")
        except httpx.HTTPError as exc:
            raise ApiError(f"GET {self.base}{path}: {exc}") from None

    def items(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paginated list."""
        out: list[Any] = []
        cursor: str | None = None
        while True:
            page = self.get(path, limit=1000, cursor=cursor, **params)
            out.extend(page["items"])
            cursor = page.get("next")
            if not cursor:
                return out

    def post(self, path: str) -> Any:
        try:
            return self._check(self._client.post(path), f"POST {path}")
        except httpx.HTTPError as exc:
            raise ApiError(f"POST {self.base}{path}: {exc}") from None

    def put_all(self, puts: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        n = 0
        for path, body in puts:
            self.put(path, body)
            n += 1
        return n

    def device_password(self, device: DeviceDef) -> str:
        """Create or update the device; a new password either way (creation, else rotate-secret)."""
        created = self.put(f"/devices/{device.device_id}", device.body)
        password = created.get("mqtt_password") if isinstance(created, dict) else None
        if password:
            return str(password)
        rotated = self.post(f"/devices/{device.device_id}/rotate-secret")
        return str(rotated["mqtt_password"])

    def device_passwords(self, devices: Iterable[DeviceDef], *, parallel: int = 8) -> dict[str, str]:
        """Passwords for many devices; the API serves requests in parallel, so do they."""
        devices = list(devices)
        if len(devices) <= 2:
            return {d.device_id: self.device_password(d) for d in devices}
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            passwords = list(pool.map(self.device_password, devices))
        return {d.device_id: p for d, p in zip(devices, passwords, strict=True)}
