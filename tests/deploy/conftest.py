"""Fixtures of the deployment tests: a small model trained on the real sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from sample_model import train_sample_model


@pytest.fixture(scope="session")
def sample_model_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyfunc model directory trained once per session on 2,000 sample rows (~15 s)."""
    return train_sample_model(sample_dir, tmp_path_factory.mktemp("sample-model") / "model")
