"""Cross-fitted fusion: out-of-fold scores fit the fusion, the text branches are refit on all."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.models.pipeline import ProductClassifier

# Every test here trains (or reuses) a 3-fold cross-fitted model: ~10-20 s each on 2 cores.
pytestmark = pytest.mark.slow

FOLDS = 3


def cross_fit_params(tiny_params: dict[str, Any], folds: int = FOLDS) -> dict[str, Any]:
    return {**tiny_params, "fusion": {"cross_fit_folds": folds}}


@pytest.fixture(scope="module")
def val_with_a_new_word(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> pd.DataFrame:
    """The val split, one title carrying a word no training product has."""
    val = tiny_products[1].copy()
    val.loc[val.index[0], "designation"] = "Zorglub " + str(val.loc[val.index[0], "designation"])
    return val


@pytest.fixture(scope="module")
def cross_fitted(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tiny_params: dict[str, Any],
    val_with_a_new_word: pd.DataFrame,
) -> ProductClassifier:
    train = tiny_products[0]
    return ProductClassifier(cross_fit_params(tiny_params), seed=42).fit(
        train, val_with_a_new_word, progress=False
    )


def test_text_branches_are_refit_on_train_and_val(cross_fitted: ProductClassifier) -> None:
    assert cross_fitted.sparse is not None and cross_fitted.text_nn is not None
    # "zorglub" is only in val: the refit branches must know it, the holdout ones cannot.
    assert "zorglub" in cross_fitted.sparse.vectorizers["title_words"].vocabulary_
    assert cross_fitted.text_nn.tokenizer is not None
    assert "t:zorglub" in cross_fitted.text_nn.tokenizer.ids


def test_fold_curves_are_kept_and_the_refit_uses_the_folds_epochs(
    cross_fitted: ProductClassifier, tiny_params: dict[str, Any]
) -> None:
    epochs = tiny_params["text_nn"]["epochs"]
    history = cross_fitted.history
    for curve in ("train_loss", "val_loss", "val_accuracy", "refit_train_loss"):
        assert len(history[f"text_nn/{curve}"]) == epochs, curve
    # Mean over the folds of held-out losses: finite, and learning happened.
    assert history["text_nn/val_loss"][-1] < history["text_nn/val_loss"][0]
    # The refit sees more rows than a fold, so its first-epoch loss differs from theirs.
    assert history["text_nn/refit_train_loss"] != history["text_nn/train_loss"]
    assert cross_fitted.text_nn_epochs == epochs
    # The image branch keeps its own holdout curves.
    assert len(history["image/val_loss"]) == tiny_params["image"]["epochs"]


def test_cross_fitted_model_is_accurate_calibrated_and_deterministic(
    cross_fitted: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tiny_params: dict[str, Any],
    val_with_a_new_word: pd.DataFrame,
) -> None:
    train, _, test = tiny_products
    probs = cross_fitted.predict_proba(test)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    predicted = cross_fitted.classes_[probs.argmax(axis=1)]
    correct = predicted == test["prdtypecode"].to_numpy()
    # 5% of the generated labels are random: the ceiling is about 0.96.
    assert 0.8 < correct.mean() < 1.0
    confidence = probs.max(axis=1)
    assert abs(confidence.mean() - correct.mean()) < 0.1
    again = ProductClassifier(cross_fit_params(tiny_params), seed=42).fit(
        train, val_with_a_new_word, progress=False
    )
    np.testing.assert_array_equal(again.predict_proba(test), probs)
    assert again.history == cross_fitted.history


def test_cross_fitted_model_round_trips(
    cross_fitted: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
) -> None:
    test = tiny_products[2]
    cross_fitted.save(tmp_path / "model")
    restored = ProductClassifier.load(tmp_path / "model")
    assert restored.text_nn_epochs == cross_fitted.text_nn_epochs
    np.testing.assert_array_equal(restored.predict_proba(test), cross_fitted.predict_proba(test))


def test_too_few_products_per_class_falls_back_to_holdout(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tiny_params: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    train, val, test = tiny_products
    text_only = {**tiny_params, "image": {"enabled": False}}
    # 90 products per class in train + val: 200 folds cannot all hold each class.
    with caplog.at_level(logging.WARNING):
        model = ProductClassifier(cross_fit_params(text_only, 200), seed=42).fit(
            train, val, progress=False
        )
    assert "cross_fit_folds" in caplog.text
    assert model.text_nn_epochs is None
    holdout = ProductClassifier(text_only, seed=42).fit(train, val, progress=False)
    np.testing.assert_array_equal(model.predict_proba(test), holdout.predict_proba(test))
