"""Refit on train + val (`model.fusion.refit`, the default): the model learns from val too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.params import ParamsError

Splits = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


@pytest.fixture(scope="module")
def val_with_a_new_word(tiny_products: Splits) -> pd.DataFrame:
    """The val split, one title carrying a word no training product has."""
    val = tiny_products[1].copy()
    val.loc[val.index[0], "designation"] = "Zorglub " + str(val.loc[val.index[0], "designation"])
    return val


def fit(params: dict[str, Any], train: pd.DataFrame, val: pd.DataFrame) -> ProductClassifier:
    return ProductClassifier(params, seed=42).fit(train, val, progress=False)


@pytest.fixture(scope="module")
def refit(
    tiny_products: Splits, tiny_params: dict[str, Any], val_with_a_new_word: pd.DataFrame
) -> ProductClassifier:
    return fit(tiny_params, tiny_products[0], val_with_a_new_word)


@pytest.fixture(scope="module")
def holdout(
    tiny_products: Splits, tiny_params: dict[str, Any], val_with_a_new_word: pd.DataFrame
) -> ProductClassifier:
    params = {**tiny_params, "fusion": {"refit": False}}
    return fit(params, tiny_products[0], val_with_a_new_word)


def test_refit_is_the_default_and_every_branch_learns_the_val_products(
    refit: ProductClassifier, holdout: ProductClassifier
) -> None:
    assert refit.params["fusion"]["refit"] is True
    assert refit.refit_branches == ["sparse", "text_nn", "image"]
    assert refit.sparse is not None and refit.text_nn is not None
    assert refit.text_nn.tokenizer is not None
    # "zorglub" is only in val: the refit branches know it, the holdout ones cannot.
    assert "zorglub" in refit.sparse.vectorizers["title_words"].vocabulary_
    assert "t:zorglub" in refit.text_nn.tokenizer.ids
    assert holdout.sparse is not None and holdout.text_nn is not None
    assert holdout.text_nn.tokenizer is not None
    assert "zorglub" not in holdout.sparse.vectorizers["title_words"].vocabulary_
    assert "t:zorglub" not in holdout.text_nn.tokenizer.ids
    assert holdout.refit_branches == []


def test_fusion_and_temperatures_come_from_the_held_out_scores(
    refit: ProductClassifier, holdout: ProductClassifier
) -> None:
    # Both fit the fusion on the same holdout val scores; only the branches are retrained.
    assert refit.temperatures == holdout.temperatures
    assert refit.fusion is not None and holdout.fusion is not None
    np.testing.assert_array_equal(refit.fusion.weights, holdout.fusion.weights)
    assert set(refit.timings) >= {"refit/sparse", "refit/text_nn", "refit/image"}
    assert not any(key.startswith("refit/") for key in holdout.timings)


def test_holdout_curves_are_kept_and_each_refit_adds_its_training_loss(
    refit: ProductClassifier, holdout: ProductClassifier, tiny_params: dict[str, Any]
) -> None:
    for key, values in holdout.history.items():
        assert refit.history[key] == values, key
    epochs = tiny_params["text_nn"]["epochs"]
    assert len(refit.history["text_nn/refit_train_loss"]) == epochs
    assert len(refit.history["image/refit_train_loss"]) == tiny_params["image"]["epochs"]
    # More rows than the holdout fit: another loss curve.
    assert refit.history["text_nn/refit_train_loss"] != refit.history["text_nn/train_loss"]


def test_refit_model_is_accurate_and_round_trips(
    refit: ProductClassifier, tiny_products: Splits, tmp_path: Path
) -> None:
    test = tiny_products[2]
    probs = refit.predict_proba(test)
    correct = refit.classes_[probs.argmax(axis=1)] == test["prdtypecode"].to_numpy()
    # 5% of the generated labels are random: the ceiling is about 0.96.
    assert 0.8 < correct.mean() <= 1.0
    assert abs(probs.max(axis=1).mean() - correct.mean()) < 0.15
    refit.save(tmp_path / "model")
    restored = ProductClassifier.load(tmp_path / "model")
    assert restored.refit_branches == refit.refit_branches
    np.testing.assert_array_equal(restored.predict_proba(test), probs)


@pytest.mark.slow
def test_cross_fitted_text_branches_are_not_refit_twice(
    tiny_products: Splits, tiny_params: dict[str, Any]
) -> None:
    train, val, _ = tiny_products
    model = fit({**tiny_params, "fusion": {"cross_fit_folds": 3}}, train, val)
    assert model.refit_branches == ["sparse", "text_nn", "image"]
    assert "refit/image" in model.timings
    assert "refit/sparse" not in model.timings and "refit/text_nn" not in model.timings


def test_refit_needs_a_fitted_model_and_a_boolean(tiny_products: Splits) -> None:
    train, val, _ = tiny_products
    with pytest.raises(ModelError, match="not fitted"):
        ProductClassifier().refit(train, val)
    with pytest.raises(ParamsError, match=r"`model\.fusion\.refit` must be true or false"):
        ProductClassifier({"fusion": {"refit": "yes"}})
