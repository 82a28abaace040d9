"""Helpers for the security tests (importable as `security_testing`): test secrets, users
of each role and their credentials, for TestClients and real server processes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth import credentials, users

TEST_JWT_SECRET = "tests-only-jwt-secret-" + "0123456789abcdef" * 4
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin password for tests"
# No limits unless a test sets them: the service tests predict many times per minute.
SECURITY_SETTINGS: dict[str, Any] = {
    "jwt_secret": TEST_JWT_SECRET,
    "admin_username": ADMIN_USERNAME,
    "admin_password": ADMIN_PASSWORD,
    "rate_limit_predict": "off",
    "rate_limit_api": "off",
    "rate_limit_token": "off",
}
# The auth and limit tests also run on PostgreSQL (fixture `service_db` in tests/api).
ON_BOTH_DATABASES = pytest.mark.parametrize("service_db", ["sqlite", "postgresql"], indirect=True)
SECURITY_ENV = {f"RAKUTEN_{key.upper()}": str(value) for key, value in SECURITY_SETTINGS.items()}


def _app(client: TestClient) -> FastAPI:
    app = client.app
    assert isinstance(app, FastAPI)
    return app


def make_user(client: TestClient, username: str, role: str, password: str | None = None) -> str:
    """Create a user in the app's database (password defaults to `<username> password`)."""
    password = password or f"{username} password"
    with _app(client).state.session_factory() as session:
        users.create_user(session, username, password, role)
        session.commit()
    return password


def token_for(client: TestClient, username: str) -> str:
    """An access token of an existing user, signed with the app's settings (no login)."""
    settings: Settings = _app(client).state.settings
    with _app(client).state.session_factory() as session:
        user = users.require_user(session, username)
        return credentials.create_access_token(settings, user)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def headers_for(client: TestClient, username: str, role: str | None = None) -> dict[str, str]:
    """Bearer headers of `username` (created with `role` first when given)."""
    if role is not None:
        make_user(client, username, role)
    return bearer(token_for(client, username))


def api_key_for(client: TestClient, username: str, name: str = "tests") -> str:
    """A new API key of an existing user."""
    with _app(client).state.session_factory() as session:
        _, key = credentials.create_api_key(session, username, name)
        session.commit()
    return key


def login(http: Any, username: str, password: str) -> dict[str, str]:
    """Bearer headers from `POST /token` (any httpx-like client)."""
    response = http.post("/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])
