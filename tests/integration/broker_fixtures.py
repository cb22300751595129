"""Pytest fixtures for a real project broker (Mosquitto from the project's mosquitto.conf).

Registered through ``pytest_plugins`` (or ``-p tests.integration.broker_fixtures``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local_broker import start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts, BrokerError
from runtime.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_test_settings(state_dir: Path) -> Settings:
    """Settings for a private broker: own state directory (secrets, dynsec file) and a free port."""
    return load_settings(create_secrets=True, state_dir=state_dir, mqtt_host="127.0.0.1", mqtt_port=free_port(),
                         mqtt_tls_port=free_port())


def start_test_broker(settings: Settings) -> None:
    """Start the broker with its service accounts; a missing Mosquitto fails the test run loudly."""
    try:
        start_local_broker(settings)
        with BrokerAccounts(settings) as accounts:
            accounts.ensure_service_accounts()
    except BrokerError as exc:
        stop_local_broker(settings)
        pytest.fail(f"cannot start the project broker for the tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def broker_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = broker_test_settings(tmp_path_factory.mktemp("broker-state"))
    start_test_broker(settings)
    yield settings
    stop_local_broker(settings)
