"""Helpers for tests of the prediction service (importable as `service_testing`).

Fixtures built on them live in `tests/api/conftest.py`: a tiny saved pyfunc model, settings
on a temporary database, ready TestClients, real `serve` processes, PostgreSQL databases.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from factories import make_products, tiny_model_params
from rakuten_mlops.db.models import Feedback, Prediction
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.pyfunc import save_pyfunc_model
from security_testing import SECURITY_ENV, login

CLI = Path(sys.executable).with_name("rakuten-mlops")


@dataclass(frozen=True)
class TinyModel:
    """A saved pyfunc model and the products it was trained and tested on."""

    path: Path
    classifier: ProductClassifier
    test: pd.DataFrame


def train_tiny_model(
    root: Path, *, seeds: tuple[int, int, int], model_seed: int, n_test: int = 10
) -> TinyModel:
    """A pyfunc model of all branches under `root`, trained in seconds on generated products.

    Args:
        seeds: of the train, val and test products.
        model_seed: of the classifier.
    """
    images = root / "images"
    images.mkdir()
    train = make_products(40, seed=seeds[0], image_dir=images)
    val = make_products(10, seed=seeds[1], image_dir=images)
    test = make_products(n_test, seed=seeds[2], image_dir=images)
    classifier = ProductClassifier(tiny_model_params(epochs=2), seed=model_seed).fit(
        train, val, progress=False
    )
    path = save_pyfunc_model(classifier, root / "model", val[["designation", "description"]])
    return TinyModel(path=path, classifier=classifier, test=test)


def wait_ready(client: TestClient | httpx.Client, timeout_s: float = 60.0) -> None:
    """Poll `/ready` until 200 (fails the test on timeout)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = client.get("/ready")
            if last.status_code == 200:
                return
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    pytest.fail(f"service not ready after {timeout_s}s: {getattr(last, 'text', last)}")


def app_of(client: TestClient) -> FastAPI:
    """The app behind a TestClient."""
    app = client.app
    assert isinstance(app, FastAPI)
    return app


def stored_predictions(client: TestClient) -> list[Prediction]:
    """Every prediction record of a TestClient's app, after flushing the writer."""
    app = app_of(client)
    app.state.recorder.flush()
    with app.state.session_factory() as session:
        return list(session.scalars(select(Prediction).order_by(Prediction.created_at)))


def stored_feedback(client: TestClient) -> list[Feedback]:
    """Every feedback row of a TestClient's app."""
    with app_of(client).state.session_factory() as session:
        return list(session.scalars(select(Feedback).order_by(Feedback.id)))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A real `rakuten-mlops serve` process; `headers` carry the first admin's token."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send `sig` (to this PID only) and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"server did not stop within {timeout_s}s")
            raise


def start_serve_process(env: dict[str, str], cwd: Path, *args: str) -> ServerProcess:
    """Start `rakuten-mlops serve` on a free port and wait until `/ready` answers 200."""
    port = free_port()
    log = cwd / f"server-{port}.log"
    full_env = {**os.environ, "RAKUTEN_ENV": "test", **SECURITY_ENV, **env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited early:\n{log.read_text()[-3000:]}")
            try:
                if http.get("/ready").status_code == 200:
                    server.headers = login(
                        http, full_env["RAKUTEN_ADMIN_USERNAME"], full_env["RAKUTEN_ADMIN_PASSWORD"]
                    )
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    server.stop()
    pytest.fail(f"server not ready:\n{log.read_text()[-3000:]}")
    raise AssertionError


def cli_api_key(database_url: str, cwd: Path, username: str, role: str | None = None) -> str:
    """An API key of `username` made with the project's CLI, as an operator would.

    With `role`, the user is created first (`users create --password-stdin`); without, it
    must exist (e.g. the first admin a `serve` process creates). Returns the key, which
    `users api-key create` prints alone on stdout.
    """
    env = {**os.environ, "RAKUTEN_ENV": "test", **SECURITY_ENV}
    env["RAKUTEN_DATABASE_URL"] = database_url
    if role is not None:
        created = subprocess.run(
            [str(CLI), "users", "create", username, "--role", role, "--password-stdin"],
            input=f"{username} password\n", env=env, cwd=cwd,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
    made = subprocess.run(
        [str(CLI), "users", "api-key", "create", username, "--name", "tests"],
        env=env, cwd=cwd, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    return made.stdout.strip().splitlines()[-1]


def postgres_cluster_port() -> int | None:
    """The port of the PostgreSQL 15 `main` cluster when it is online."""
    result = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["15", "main"] and "online" in line:
            return int(parts[2])
    return None


def run_as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL client command as the `postgres` OS user (from root or postgres)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)


def started_postgres_port() -> int:
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


@contextmanager
def throwaway_postgres_database(port: int, prefix: str) -> Iterator[str]:
    """A PostgreSQL database and role named `<prefix>_<random>` on the cluster at `port`:
    its SQLAlchemy URL, dropped afterwards."""
    name, password = f"{prefix}_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    created = run_as_postgres(
        "psql", "-p", str(port), "-v", "ON_ERROR_STOP=1",
        "-c", f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
        "-c", f"CREATE DATABASE {name} OWNER {name}",
    )  # fmt: skip
    if created.returncode != 0:
        pytest.fail(f"cannot create a PostgreSQL database: {created.stderr}")
    try:
        yield f"postgresql+psycopg://{name}:{password}@127.0.0.1:{port}/{name}"
    finally:
        run_as_postgres(
            "psql", "-p", str(port),
            "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            "-c", f"DROP ROLE IF EXISTS {name}",
        )  # fmt: skip
