"""Fixtures of the orchestration tests (Airflow DAGs, Prefect flows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import make_products, tiny_model_params


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pyfunc model directory (what `train --model-out` writes)."""
    from rakuten_mlops.evaluation.evaluate import build_model_input
    from rakuten_mlops.models.pipeline import ProductClassifier
    from rakuten_mlops.models.pyfunc import save_pyfunc_model

    images = tmp_path_factory.mktemp("images")
    train = make_products(20, seed=1, image_dir=images)
    val = make_products(8, seed=2, image_dir=images)
    classifier = ProductClassifier(tiny_model_params(epochs=1), seed=0).fit(
        train, val, progress=False
    )
    target = tmp_path_factory.mktemp("model") / "classifier"
    return save_pyfunc_model(
        classifier, target, build_model_input(val.head(3)).assign(image_path="")
    )
