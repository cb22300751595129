"""The API's authentication and authorisation matrix and its error envelope, against the real
database (tokens in api_tokens) and the real project broker (health)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from api.tokens import ROLES, create_token
from runtime.settings import Settings
from tests.integration.broker_fixtures import free_port
from tests.integration.stack_helpers import stack_settings

pytestmark = pytest.mark.integration

CREDENTIALS = ("none", "malformed", "bad", "revoked", "viewer", "operator", "admin")


@pytest.fixture
def settings(db: psycopg.Connection, broker_settings: Settings, database_url: str) -> Settings:
    return stack_settings(broker_settings, database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def headers(db: psycopg.Connection) -> dict[str, dict[str, str]]:
    """Authorization headers for each kind of credential of the matrix."""
    tokens = {role: create_token(db, role, f"{role}-label") for role in ROLES}
    revoked = create_token(db, "admin", "revoked-label")
    db.execute("UPDATE api_tokens SET revoked_at = now() WHERE label = 'revoked-label'")
    return {
        "none": {},
        "malformed": {"Authorization": f"Token {tokens['admin']}"},
        "bad": {"Authorization": "Bearer ct_not-a-token-anyone-was-given"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        **{role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()},
    }


def _alarm(db: psycopg.Connection) -> int:
    row = db.execute(
        "INSERT INTO alarms (type, severity, state, subject, started_at, message) "
        "VALUES ('battery_low', 'warning', 'active', 'dev-1', %s, 'battery at 8 %%') RETURNING id",
        (datetime(2026, 11, 24, 12, tzinfo=UTC),)).fetchone()
    assert row is not None
    return int(row[0])


def assert_error(response: Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    err: dict[str, str] = body["error"]
    return err


# Expected status for each credential: health is public, then viewer, operator and admin levels.
MATRIX = {
    "health": dict.fromkeys(CREDENTIALS, 200),
    "viewer_read": {"none": 401, "malformed": 401, "bad": 401, "revoked": 401,
                    "viewer": 200, "operator": 200, "admin": 200},
    "operator_ack": {"none": 401, "malformed": 401, "bad": 401, "revoked": 401,
                     "viewer": 403, "operator": 200, "admin": 200},
    "admin_put": {"none": 401, "malformed": 401, "bad": 401, "revoked": 401,
                  "viewer": 403, "operator": 403, "admin": 201},
}


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_auth_matrix(endpoint: str, credential: str, client: TestClient, db: psycopg.Connection,
                     headers: dict[str, dict[str, str]]) -> None:
    expected = MATRIX[endpoint][credential]
    h = headers[credential]
    if endpoint == "health":
        response = client.get("/api/v1/health", headers=h)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "db": True, "broker": True}
        return
    if endpoint == "viewer_read":
        db.execute("INSERT INTO sites (code, name) VALUES ('S1', 'Site one')")
        response = client.get("/api/v1/sites", headers=h)
        if expected == 200:
            assert response.status_code == 200
            assert [s["code"] for s in response.json()["items"]] == ["S1"]
            return
    elif endpoint == "operator_ack":
        alarm_id = _alarm(db)
        response = client.post(f"/api/v1/alarms/{alarm_id}/ack", headers=h, json={"note": "on it"})
        row = db.execute("SELECT acknowledged, ack_by FROM alarms WHERE id = %s", (alarm_id,)).fetchone()
        if expected == 200:
            assert response.status_code == 200
            assert response.json()["acknowledged"] is True
            assert row == (True, f"{credential}-label")
            return
        assert row == (False, None), "a refused acknowledgement must change nothing"
    else:
        response = client.put("/api/v1/sites/S9", headers=h, json={"name": "Site nine"})
        exists = db.execute("SELECT count(*) FROM sites WHERE code = 'S9'").fetchone()
        if expected == 201:
            assert response.status_code == 201
            assert response.json()["name"] == "Site nine"
            assert exists == (1,)
            return
        assert exists == (0,), "a refused PUT must change nothing"
    assert_error(response, expected, "unauthorized" if expected == 401 else "forbidden")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "Basic dXNlcjpwYXNz", "ct_abc"])
def test_malformed_authorization_headers_are_401(header: str, client: TestClient) -> None:
    err = assert_error(client.get("/api/v1/sites", headers={"Authorization": header}), 401, "unauthorized")
    assert "Bearer" in err["message"]


def test_missing_token_message_says_what_to_send(client: TestClient) -> None:
    err = assert_error(client.get("/api/v1/stock"), 401, "unauthorized")
    assert "Authorization" in err["message"]


def test_forbidden_names_the_needed_role(client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    err = assert_error(client.put("/api/v1/profiles/P", headers=headers["operator"],
                                  json={"temp_min_c": 2, "temp_max_c": 8}), 403, "forbidden")
    assert "admin" in err["message"] and "operator" in err["message"]


def test_auth_is_checked_before_the_body(client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    # A caller without the right must learn nothing about what a valid body looks like.
    assert_error(client.put("/api/v1/sites/S1", json={"bogus": 1}), 401, "unauthorized")
    assert_error(client.put("/api/v1/sites/S1", headers=headers["viewer"], json={"bogus": 1}), 403, "forbidden")


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/api/v1/health", "/api/v1/sites/{code}", "/api/v1/devices/{device_id}/rotate-secret",
                 "/api/v1/stock", "/api/v1/movements", "/api/v1/alarms/{alarm_id}/ack", "/api/v1/dead-letters"):
        assert path in paths
    assert "HTTPBearer" in spec.json()["components"]["securitySchemes"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower() and "/api/v1/openapi.json" in docs.text


def test_unknown_route_and_wrong_method_use_the_error_body(client: TestClient) -> None:
    assert_error(client.get("/api/v1/no-such-thing"), 404, "not_found")
    response = client.delete("/api/v1/health")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_validation_errors_use_the_error_body_and_name_the_field(
        client: TestClient, headers: dict[str, dict[str, str]]) -> None:
    err = assert_error(client.get("/api/v1/sites?limit=1001", headers=headers["viewer"]), 422, "validation_error")
    assert "limit" in err["message"]
    err = assert_error(client.put("/api/v1/sites/S1", headers=headers["admin"], json={"tz": "UTC"}),
                       422, "validation_error")
    assert "name" in err["message"]
    err = assert_error(client.put("/api/v1/sites/S1", headers={**headers["admin"], "Content-Type": "application/json"},
                                  content=b"{not json"), 422, "validation_error")
    assert "JSON" in err["message"]


def test_unhandled_errors_hide_internals(settings: Settings) -> None:
    app = create_app(settings)

    def boom() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/api/v1/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.get("/api/v1/boom")
    err = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert err["message"] == "internal server error"


def test_health_reports_a_missing_broker_and_database(broker_settings: Settings, database_url: str) -> None:
    down = stack_settings(broker_settings, database_url.rsplit("/", 1)[0] + "/cargotrace_no_such_db",
                          mqtt_port=free_port())
    with TestClient(create_app(down)) as c:
        response = c.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "db": False, "broker": False}
