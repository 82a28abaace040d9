"""Fixtures of the API tests (helpers in `tests/service_testing.py`)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.app import create_app
from rakuten_mlops.serving.auth.ratelimit import RedisLimiter
from security_testing import SECURITY_SETTINGS, bearer, token_for
from service_testing import (
    ServerProcess,
    TinyModel,
    free_port,
    start_serve_process,
    started_postgres_port,
    throwaway_postgres_database,
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
    return started_postgres_port()


@pytest.fixture
def postgres_url(postgres_port: int) -> Iterator[str]:
    """A throwaway PostgreSQL database and role for one test; dropped afterwards."""
    with throwaway_postgres_database(postgres_port, "rakuten_test") as url:
        yield url


# Security
@pytest.fixture
def service_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The service database URL: SQLite in `tmp_path`, or a throwaway PostgreSQL database
    when a test is parametrized with `security_testing.ON_BOTH_DATABASES`."""
    if getattr(request, "param", "sqlite") == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path}/service.db"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port of 127.0.0.1 (no persistence); stopped by PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/install-system-deps.sh installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    limiter = RedisLimiter(url)
    deadline = time.monotonic() + 20
    while not asyncio.run(limiter.ping()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)
