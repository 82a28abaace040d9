"""Fixtures of the API tests (helpers in `tests/service_testing.py`)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.app import create_app
from security_testing import SECURITY_SETTINGS, bearer, token_for
from service_testing import (
    ServerProcess,
    TinyModel,
    postgres_cluster_port,
    run_as_postgres,
    start_serve_process,
    train_tiny_model,
    wait_ready,
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A pyfunc model of all branches, trained in seconds on generated products."""
    return train_tiny_model(
        tmp_path_factory.mktemp("api-model"), seeds=(11, 12, 13), model_seed=7, n_test=10
    )


@pytest.fixture(scope="session")
def tiny_model_copy(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second directory holding the same model (a distinct challenger / reload target)."""
    path = tmp_path_factory.mktemp("api-model-copy") / "model-b"
    shutil.copytree(tiny_model.path, path)
    return path


@pytest.fixture(scope="session")
def jpeg_bytes(tiny_model: TinyModel) -> bytes:
    """A real JPEG of a test product."""
    path = next(p for p in tiny_model.test["image_path"] if p)
    return Path(path).read_bytes()


@pytest.fixture
def make_settings(tmp_path: Path, tiny_model: TinyModel) -> Callable[..., Settings]:
    """Settings on a fresh SQLite file in `tmp_path`, serving the tiny model."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path}/service.db",
            "serve_model": str(tiny_model.path),
            "log_file": tmp_path / "logs" / "service.log",
            "record_flush_ms": 50.0,
            "env": "test",
            **SECURITY_SETTINGS,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def start_client() -> Iterator[Callable[..., TestClient]]:
    """Start apps with their lifespan (`start_client(settings)`), ready; closed afterwards.

    The client sends the first admin's bearer token (`authenticated=False`: no credential).
    """
    clients: list[TestClient] = []

    def start(settings: Settings, ready: bool = True, authenticated: bool = True) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        if authenticated:
            client.headers.update(bearer(token_for(client, settings.admin_username)))
        if ready:
            wait_ready(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> TestClient:
    """A ready TestClient on the tiny model and a fresh SQLite database."""
    return start_client(make_settings())


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `rakuten-mlops serve` processes (`start_server(env, *args)`); stopped by PID."""
    servers: list[ServerProcess] = []

    def start(env: dict[str, str], *args: str) -> ServerProcess:
        server = start_serve_process(env, tmp_path, *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def postgres_port() -> int:
    """The installed PostgreSQL 15 cluster's port, started when it is not running."""
    if shutil.which("pg_ctlcluster") is None:
        pytest.fail("PostgreSQL 15 is not installed (scripts/install-system-deps.sh installs it)")
    port = postgres_cluster_port()
    if port is None:
        started = subprocess.run(
            ["pg_ctlcluster", "15", "main", "start"], capture_output=True, text=True, check=False
        )
        port = postgres_cluster_port()
        if port is None:
            pytest.fail(f"cannot start PostgreSQL 15: {started.stderr}")
    return port


@pytest.fixture
def postgres_url(postgres_port: int) -> Iterator[str]:
    """A throwaway PostgreSQL database and role for one test; dropped afterwards."""
    suffix = uuid.uuid4().hex[:12]
    name, password = f"rakuten_test_{suffix}", uuid.uuid4().hex
    port = str(postgres_port)
    created = run_as_postgres(
        "psql", "-p", port, "-v", "ON_ERROR_STOP=1",
        "-c", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
        "-c", f"CREATE DATABASE {name} OWNER {name}",
    )  # fmt: skip
    if created.returncode != 0:
        pytest.fail(f"cannot create a PostgreSQL database: {created.stderr}")
    yield f"postgresql+psycopg://{name}:{password}@127.0.0.1:{port}/{name}"
    run_as_postgres(
        "psql", "-p", port,
        "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        "-c", f"DROP ROLE IF EXISTS {name}",
    )  # fmt: skip


# Security
@pytest.fixture
def service_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The service database URL: SQLite in `tmp_path`, or a throwaway PostgreSQL database
    when a test is parametrized with `security_testing.ON_BOTH_DATABASES`."""
    if getattr(request, "param", "sqlite") == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path}/service.db"
