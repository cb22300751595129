"""An API client per role against the test database and broker (real services, never mocks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from runtime.settings import Settings
from tests.integration.stack_helpers import stack_settings

ClientFor = Callable[..., TestClient]


@pytest.fixture
def api_settings(db: psycopg.Connection, broker_settings: Settings, database_url: str) -> Settings:
    return stack_settings(broker_settings, database_url)


@pytest.fixture
def client_for(api_settings: Settings, db: psycopg.Connection) -> Iterator[ClientFor]:
    """``client_for("viewer")``: a TestClient carrying a fresh token of that role (and label)."""
    with ExitStack() as stack:
        def make(role: str, label: str | None = None) -> TestClient:
            token = create_token(db, role, label or f"test-{role}")
            client = TestClient(create_app(api_settings), headers={"Authorization": f"Bearer {token}"})
            return stack.enter_context(client)
        yield make
