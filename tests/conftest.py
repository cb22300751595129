from __future__ import annotations

pytest_plugins = [
    "tests.integration.db_fixtures",
    "tests.integration.broker_fixtures",
    "tests.integration.api_fixtures",
]
