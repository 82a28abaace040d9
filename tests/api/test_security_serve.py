"""`rakuten-mlops serve` and its secrets: refused outside dev, generated (and the first
admin's one-time password printed, not logged) in dev, one secret for every worker."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rakuten_mlops.cli import app as cli_app
from rakuten_mlops.config import get_settings
from security_testing import login
from service_testing import CLI, TinyModel, free_port


def _base_env(tmp_path: Path, model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAKUTEN_")}
    env.update(
        {
            "RAKUTEN_DATABASE_URL": f"sqlite:///{tmp_path}/service.db",
            "RAKUTEN_SERVE_MODEL": str(model),
            "RAKUTEN_LOG_FILE": str(tmp_path / "service.log"),
            "RAKUTEN_NUM_THREADS": "1",
        }
    )
    return env


def test_serve_refuses_placeholder_secrets_outside_dev(
    tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _base_env(tmp_path, tiny_model.path).items():
        if key.startswith("RAKUTEN_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAKUTEN_ENV", "prod")
    secret = "Zq3-" + "k9Vw2pLx7" * 5
    for extra, message in (
        ({}, "RAKUTEN_JWT_SECRET is not set"),
        ({"RAKUTEN_JWT_SECRET": "changethis"}, "RAKUTEN_JWT_SECRET is a placeholder"),
        ({"RAKUTEN_JWT_SECRET": "x" * 40}, "RAKUTEN_JWT_SECRET is a placeholder"),
        ({"RAKUTEN_JWT_SECRET": secret}, "RAKUTEN_ADMIN_PASSWORD is not set"),
        (
            {"RAKUTEN_JWT_SECRET": secret, "RAKUTEN_ADMIN_PASSWORD": "CHANGE_ME"},
            "RAKUTEN_ADMIN_PASSWORD is a placeholder",
        ),
        (
            {"RAKUTEN_JWT_SECRET": secret, "RAKUTEN_ADMIN_PASSWORD": "Wq8-mnb4"},
            "RAKUTEN_ADMIN_PASSWORD must have at least 12 characters",
        ),
    ):
        for key in ("RAKUTEN_JWT_SECRET", "RAKUTEN_ADMIN_PASSWORD"):
            monkeypatch.delenv(key, raising=False)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        result = CliRunner().invoke(cli_app, ["serve", "--port", str(free_port())])
        assert result.exit_code != 0
        assert message in " ".join(result.output.split()), result.output


@pytest.mark.slow
def test_dev_serve_with_two_workers_prints_a_one_time_password(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    port = free_port()
    env = {**_base_env(tmp_path, tiny_model.path), "RAKUTEN_ENV": "dev"}
    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        text = out.read_text()
        assert "RAKUTEN_JWT_SECRET not set, a random one was generated" in text
        lines = [line for line in text.splitlines() if "one-time password" in line]
        assert len(lines) == 1, text[-3000:]  # once, not once per worker
        password = lines[0].split("one-time password ")[1].split(" ")[0]
        with httpx.Client(base_url=url, timeout=10) as http:
            headers = login(http, "admin", password)
            # Tokens of one worker are valid on the other: the secret is shared.
            statuses = {http.get("/v1/admin/users", headers=headers).status_code for _ in range(20)}
            assert statuses == {200}
    finally:
        process.terminate()
        process.wait(60)
    log = (tmp_path / "service.log").read_text()
    assert '"route": "/token"' in log and password not in log
