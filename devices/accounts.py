"""The device-accounts seam: the broker that runs (``CARGOTRACE_BROKER``) decides the implementation.

Callers only use the protocol below; nothing above it knows whether Mosquitto's dynamic security
or the NATS accounts file holds the credentials.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from runtime.settings import Settings


class DeviceAccounts(Protocol):
    def __enter__(self) -> DeviceAccounts: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def ensure_service_accounts(self) -> None: ...

    def add_device(self, device_id: str) -> str: ...

    def rotate_device(self, device_id: str) -> str: ...

    def remove_device(self, device_id: str) -> None: ...

    def device_exists(self, device_id: str) -> bool: ...

    def list_devices(self) -> list[str]: ...


def device_mqtt_version(settings: Settings) -> int:
    """The MQTT protocol level devices speak: 5 to Mosquitto; NATS's listener serves 3.1.1 (level 4) only."""
    return 4 if settings.broker == "nats" else 5


def open_accounts(settings: Settings) -> DeviceAccounts:
    if settings.broker == "nats":
        from devices.nats_accounts import NatsAccounts

        return NatsAccounts(settings)
    from devices.broker_accounts import BrokerAccounts

    return BrokerAccounts(settings)
