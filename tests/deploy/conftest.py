"""Fixtures of the deployment tests: a small model trained on the real sample, a Docker engine."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from docker_testing import REPO, run
from sample_model import train_sample_model


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine: the one running, or one started here and stopped by PID after."""
    started = run("bash", str(REPO / "scripts/start-dockerd.sh"), timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = started.stdout.split("PID ")[-1].rstrip(")\n") if "PID" in started.stdout else None
    yield
    if pid:
        os.kill(int(pid), signal.SIGTERM)


@pytest.fixture(scope="session")
def sample_model_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyfunc model directory trained once per session on 2,000 sample rows (~15 s)."""
    return train_sample_model(sample_dir, tmp_path_factory.mktemp("sample-model") / "model")
