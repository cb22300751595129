"""Fixtures for the replay oracle: the real project broker, a real migrated TimescaleDB, the API
and two ingest worker processes started as ``cargotrace run`` starts them (the supervisor)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.settings import Settings
from simulators.oracle_stack import OracleStack
from tests.integration.broker_fixtures import free_port
from tests.integration.stack_helpers import stack_settings


@pytest.fixture(scope="module")
def oracle(broker_settings: Settings, database_url: str) -> Iterator[OracleStack]:
    settings = stack_settings(broker_settings, database_url, api_port=free_port(), rfid_sweep_interval_s=0.5)
    with OracleStack(settings, workers=2) as stack:
        yield stack
