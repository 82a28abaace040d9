"""The default branch set: sparse text + image CNN; the neural text branch is opt-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.params import ModelParams, load_params, parse_model_params

REPO_ROOT = Path(__file__).resolve().parents[2]
Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


def test_params_yaml_and_code_defaults_agree_on_the_branch_set() -> None:
    yaml_params = parse_model_params(load_params(REPO_ROOT / "params.yaml")["model"])
    for params in (yaml_params, ModelParams()):
        assert params.sparse.enabled is True
        assert params.image.enabled is True
        assert params.text_nn.enabled is False
        assert params.text_transformer.enabled is False
        assert params.word_vectors.enabled is False
        assert params.fusion.refit is True


@pytest.fixture(scope="module")
def default_branches(tiny_products: Splits, tiny_params: dict[str, Any]) -> ProductClassifier:
    """The default branch set: the tiny params without their explicit `text_nn` section."""
    params = {name: section for name, section in tiny_params.items() if name != "text_nn"}
    train, val, _ = tiny_products
    return ProductClassifier(params, seed=42).fit(train, val, progress=False)


def test_default_model_fuses_the_sparse_and_image_branches_only(
    default_branches: ProductClassifier, tiny_products: Splits
) -> None:
    assert default_branches.branches == ["sparse", "image"]
    assert default_branches.text_nn is None
    assert default_branches.refit_branches == ["sparse", "image"]
    assert not any("text_nn" in key for key in default_branches.timings)
    assert set(default_branches.temperatures) == {"sparse", "image"}
    # Not reported at all rather than a column of NaN (no meaningless coverage metric).
    branches = default_branches.predict_branches(tiny_products[2])
    assert set(branches) == {"sparse", "image", "fused"}


def test_default_model_is_accurate_and_round_trips(
    default_branches: ProductClassifier, tiny_products: Splits, tmp_path: Path
) -> None:
    test = tiny_products[2]
    probs = default_branches.predict_proba(test)
    correct = default_branches.classes_[probs.argmax(axis=1)] == test["prdtypecode"].to_numpy()
    # 5% of the generated labels are random: the ceiling is about 0.96.
    assert 0.8 < correct.mean() <= 1.0
    default_branches.save(tmp_path / "model")
    assert not (tmp_path / "model" / "text_nn.pt").exists()
    restored = ProductClassifier.load(tmp_path / "model")
    assert restored.branches == ["sparse", "image"]
    restored_probs = restored.predict_proba(test)
    np.testing.assert_array_equal(
        default_branches.classes_[restored_probs.argmax(axis=1)],
        default_branches.classes_[probs.argmax(axis=1)],
    )
    np.testing.assert_allclose(restored_probs, probs, rtol=0, atol=1e-6)
