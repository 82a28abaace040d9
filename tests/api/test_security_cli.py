"""`rakuten-mlops users ...`: users and API keys from the command line, used by the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rakuten_mlops.cli import app as cli_app
from rakuten_mlops.config import Settings, get_settings


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """Run the CLI on a fresh SQLite service database; returns the CliRunner result."""
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", f"sqlite:///{tmp_path}/service.db")
    get_settings.cache_clear()

    def run(*args: str, stdin: str | None = None) -> object:
        return CliRunner().invoke(cli_app, list(args), input=stdin)

    return run


def test_users_commands(
    cli: Callable[..., object],
    tmp_path: Path,
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
) -> None:
    password = "alice's long passphrase"
    created = cli(
        "users", "create", "alice", "--role", "reviewer", "--password-stdin", stdin=password + "\n"
    )
    assert created.exit_code == 0, created.output  # type: ignore[attr-defined]
    assert password not in created.output  # type: ignore[attr-defined]
    prompted = cli(
        "users", "create", "bob", "--role", "client", stdin="bob passphrase\nbob passphrase\n"
    )
    assert prompted.exit_code == 0, prompted.output  # type: ignore[attr-defined]
    for bad_args, stdin, message in (
        (
            ("users", "create", "carl", "--role", "root", "--password-stdin"),
            "long enough pw\n",
            "role",
        ),
        (
            ("users", "create", "carl", "--role", "client", "--password-stdin"),
            "short\n",
            "password",
        ),
        (
            ("users", "create", "alice", "--role", "client", "--password-stdin"),
            "long enough pw\n",
            "exists",
        ),
        (("users", "disable", "ghost"), None, "no user"),
    ):
        result = cli(*bad_args, stdin=stdin)
        assert result.exit_code != 0 and message in result.output, result.output  # type: ignore[attr-defined]
    listed = cli("users", "list").output  # type: ignore[attr-defined]
    assert "alice" in listed and "reviewer" in listed and "bob" in listed
    assert cli("users", "set-role", "bob", "reviewer").exit_code == 0  # type: ignore[attr-defined]
    key_result = cli("users", "api-key", "create", "alice", "--name", "sync")
    assert key_result.exit_code == 0  # type: ignore[attr-defined]
    key = key_result.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert key.startswith("rk_")
    keys = cli("users", "api-key", "list").output  # type: ignore[attr-defined]
    assert "alice" in keys and "sync" in keys and key not in keys

    # The API knows these users and keys (same database); a change made with the CLI is in
    # force once the service's cache of callers (RAKUTEN_AUTH_CACHE_S) has expired.
    cache_s = 0.3
    client = start_client(
        make_settings(database_url=f"sqlite:///{tmp_path}/service.db", auth_cache_s=cache_s),
        authenticated=False,
    )

    def status_after_cache() -> int:
        time.sleep(cache_s + 0.05)
        return client.get("/v1/predictions", headers={"X-API-Key": key}).status_code

    assert client.get("/v1/predictions", headers={"X-API-Key": key}).status_code == 200
    login = client.post("/token", data={"username": "alice", "password": password})
    assert login.status_code == 200 and login.json()["role"] == "reviewer"
    assert cli("users", "disable", "alice").exit_code == 0  # type: ignore[attr-defined]
    assert status_after_cache() == 401
    assert cli("users", "enable", "alice").exit_code == 0  # type: ignore[attr-defined]
    assert status_after_cache() == 200
    revoked = cli("users", "api-key", "revoke", "1")
    assert revoked.exit_code == 0 and "revoked" in revoked.output  # type: ignore[attr-defined]
    assert status_after_cache() == 401
