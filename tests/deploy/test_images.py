"""The API image built and run on a real Docker engine (`make images`).

The engine is started when none answers (`scripts/start-dockerd.sh`); the image is built by
`scripts/build-images.sh` (a local Debian base when no registry answers; layers cached
between runs, so a rebuild after a code change reinstalls the package only).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from docker_testing import DOCKER, REPO, run
from service_testing import free_port

API_IMAGE = "rakuten-mlops/api:test"
SECRET = "Zq3-" + "k9Vw2pLx7" * 5
PASSWORD = "tr0ubadour-Horse-Staple"

pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return run(*args, timeout=timeout)


@pytest.fixture(scope="module")
def api_image(docker_engine: None) -> str:
    built = subprocess.run(
        ["bash", str(REPO / "scripts/build-images.sh"), "api"],
        env={**_env(), "IMAGE_TAG": "test"},
        capture_output=True, text=True, timeout=3000, check=False, cwd=REPO,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "rakuten-mlops/api:test" in built.stdout  # the size table
    return API_IMAGE


def _env() -> dict[str, str]:
    return dict(os.environ)


def test_the_api_image_carries_no_build_tools_nor_tests(api_image: str) -> None:
    probe = _run(
        DOCKER, "run", "--rm", "--entrypoint", "sh", api_image, "-c",
        "id -u; for t in gcc cc make git; do command -v $t && echo FOUND-$t; done; "
        "ls /app; python -c 'import rakuten_mlops, torch; print(rakuten_mlops.__file__)'; "
        "python -c 'import pytest' 2>/dev/null && echo FOUND-pytest; true",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split()
    assert lines[0] == "10001"  # not root
    assert not [line for line in lines if line.startswith("FOUND-")], probe.stdout
    assert "tests" not in lines and "/opt/venv/" in probe.stdout


@pytest.fixture
def api_container(api_image: str, sample_model_dir: Path) -> Iterator[str]:
    port = free_port()
    name = f"rakuten-api-test-{uuid.uuid4().hex[:8]}"
    started = _run(
        DOCKER, "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
        "-p", f"127.0.0.1:{port}:8000",
        "-v", f"{sample_model_dir}:/model:ro",
        "-e", "RAKUTEN_SERVE_MODEL=/model",
        "-e", "RAKUTEN_DATABASE_URL=sqlite:////tmp/service.db",
        "-e", "RAKUTEN_RECORD_SPOOL_DIR=/tmp/spool",
        "-e", f"RAKUTEN_JWT_SECRET={SECRET}",
        "-e", f"RAKUTEN_ADMIN_PASSWORD={PASSWORD}",
        "-e", "RAKUTEN_RATE_LIMIT_PREDICT=off",
        api_image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = _run(DOCKER, "logs", "--tail", "50", name)
                pytest.fail(f"the container did not get ready:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        yield url
    finally:
        _run(DOCKER, "rm", "-f", name, timeout=120)


def test_the_api_container_starts_read_only_and_predicts(
    api_container: str, sample_dir: Path
) -> None:
    jpeg_bytes = next((sample_dir / "images" / "image_train").glob("*.jpg")).read_bytes()
    with httpx.Client(base_url=api_container, timeout=30) as http:
        token = http.post("/token", data={"username": "admin", "password": PASSWORD})
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        answer = http.post(
            "/v1/predict",
            data={"designation": "Piscine tubulaire ronde"},
            files={"image": ("p.jpg", jpeg_bytes, "image/jpeg")},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["has_image"] is True
        assert http.get("/docs").status_code == 404  # RAKUTEN_ENV=prod in the image
        assert http.get("/ready").json()["database"] == "up"
