"""Fixtures of the review console tests: a tiny model, users of each role, signed-in clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console_testing import JWT_SECRET, PASSWORDS, ROLES
from rakuten_mlops.config import Settings
from rakuten_mlops.serving.app import create_app
from rakuten_mlops.serving.auth import users
from service_testing import TinyModel, app_of, train_tiny_model, wait_ready


@pytest.fixture(scope="session")
def console_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A pyfunc model of all branches, trained in seconds on generated products."""
    return train_tiny_model(
        tmp_path_factory.mktemp("console-model"), seeds=(21, 22, 23), model_seed=5, n_test=12
    )


@pytest.fixture(scope="session")
def product_jpeg(console_model: TinyModel) -> Path:
    """A real JPEG of a test product."""
    return Path(next(p for p in console_model.test["image_path"] if p))


@pytest.fixture
def console_settings(tmp_path: Path, console_model: TinyModel) -> Callable[..., Settings]:
    """Settings on a fresh SQLite file: tiny model, known secrets, everything reviewed."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path}/service.db",
            "serve_model": str(console_model.path),
            "log_file": tmp_path / "logs" / "service.log",
            "record_flush_ms": 50.0,
            "env": "test",
            "jwt_secret": JWT_SECRET,
            "admin_username": "admin",
            "admin_password": PASSWORDS["admin"],
            "rate_limit_predict": "off",
            "rate_limit_token": "off",
            "rate_limit_api": "off",
            # The tiny model is never sure: every prediction goes to the review queue.
            "review_threshold": 1.0,
        }
        values.update(overrides)
        return Settings(**values)

    return build


def add_users(client: TestClient) -> None:
    """Create the reviewer and client users (the admin exists from start-up)."""
    with app_of(client).state.session_factory() as session:
        for name, role in ROLES.items():
            if users.get_user(session, name) is None:
                users.create_user(session, name, PASSWORDS[name], role)
        session.commit()


@pytest.fixture
def start_console() -> Iterator[Callable[..., TestClient]]:
    """Start apps with their lifespan and users (`start_console(settings)`); closed after."""
    clients: list[TestClient] = []

    def start(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings), follow_redirects=False)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        add_users(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def console(
    start_console: Callable[..., TestClient], console_settings: Callable[..., Settings]
) -> TestClient:
    """A ready app (not signed in) with users admin, rita, remi (reviewers) and carl (client)."""
    return start_console(console_settings())


@pytest.fixture
def classify() -> Callable[..., dict[str, Any]]:
    """Classify products through the API as the admin (`classify(client, title)`)."""
    tokens: dict[int, str] = {}

    def run(client: TestClient, designation: str, **fields: Any) -> dict[str, Any]:
        if id(client) not in tokens:
            tokens[id(client)] = client.post(
                "/token", data={"username": "admin", "password": PASSWORDS["admin"]}
            ).json()["access_token"]
        response = client.post(
            "/v1/predict",
            data={"designation": designation, **fields},
            headers={"Authorization": f"Bearer {tokens[id(client)]}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return run
