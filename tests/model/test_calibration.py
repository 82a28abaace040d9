"""Probabilities: valid, calibrated on held-out products, and the fusion that calibrates them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.fusion import LogLinearFusion, fit_temperature, log_softmax, softmax
from rakuten_mlops.models.pipeline import ProductClassifier


def expected_calibration_error(probs: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    confidence = probs.max(axis=1)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        rows = bins == b
        if rows.any():
            error += rows.mean() * abs(confidence[rows].mean() - correct[rows].mean())
    return error


def test_probabilities_are_valid(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    test = tiny_products[2]
    probs = tiny_classifier.predict_proba(test)
    assert probs.shape == (len(test), len(tiny_classifier.classes_))
    assert np.isfinite(probs).all()
    assert (probs >= 0).all() and (probs <= 1).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    result = tiny_classifier.predict(test)
    np.testing.assert_allclose(result["confidence"], probs.max(axis=1))
    assert result["confidence"].between(0, 1).all()


def test_held_out_calibration_is_reasonable(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    test = tiny_products[2]
    probs = tiny_classifier.predict_proba(test)
    correct = tiny_classifier.classes_[probs.argmax(axis=1)] == test["prdtypecode"].to_numpy()
    # 5% of the generated labels are random: a perfect score is impossible, and a model
    # that claimed certainty everywhere would be off by about that much.
    assert 0.8 < correct.mean() < 1.0
    assert expected_calibration_error(probs, correct) < 0.1
    # Confidence tracks correctness: wrong answers are less confident on average.
    assert probs.max(axis=1)[~correct].mean() < probs.max(axis=1)[correct].mean()


def test_fit_temperature_recovers_the_scale_of_overconfident_scores() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 2.0
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits)])
    # Scores 4x too sharp: the fitted temperature must bring them back (~0.25).
    assert fit_temperature(4.0 * logits, labels) == pytest.approx(0.25, rel=0.1)


def test_fusion_weights_the_informative_branch_and_ignores_noise() -> None:
    rng = np.random.default_rng(1)
    n, k = 3000, 4
    logits = rng.normal(size=(n, k)) * 2.0
    labels = np.array([rng.choice(k, p=p) for p in softmax(logits)])
    noise = rng.normal(size=(n, k))
    fusion = LogLinearFusion(["good", "noise"], bias_l2=0.01).fit(
        {"good": log_softmax(logits), "noise": noise}, labels
    )
    assert fusion.weights[0] == pytest.approx(1.0, abs=0.15)
    assert abs(fusion.weights[1]) < 0.1


def test_fusion_ignores_unavailable_rows_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    n, k = 2000, 3
    logits = rng.normal(size=(n, k)) * 2.0
    labels = np.array([rng.choice(k, p=p) for p in softmax(logits)])
    image = log_softmax(logits + rng.normal(size=(n, k)))
    available = rng.random(n) < 0.3
    image[~available] = np.nan  # what the image branch gives for products without image
    scores = {"text": log_softmax(logits), "image": image}
    fusion = LogLinearFusion(["text", "image"]).fit(scores, labels, {"image": available})
    fused = fusion.predict_log_proba(scores, {"image": available})
    assert np.isfinite(fused).all()
    np.testing.assert_allclose(np.exp(fused).sum(axis=1), 1.0)
    # Rows without image depend on the text only.
    text_only = fusion.predict_log_proba(scores, {"image": np.zeros(n, dtype=bool)})
    np.testing.assert_allclose(fused[~available], text_only[~available])
    restored = LogLinearFusion.from_state(fusion.state())
    np.testing.assert_array_equal(restored.predict_log_proba(scores, {"image": available}), fused)


def test_fusion_errors() -> None:
    with pytest.raises(ModelError, match="at least one branch"):
        LogLinearFusion([])
    fusion = LogLinearFusion(["a", "b"])
    with pytest.raises(ModelError, match="not fitted"):
        fusion.predict_log_proba({"a": np.zeros((1, 2)), "b": np.zeros((1, 2))})
    with pytest.raises(ModelError, match="missing for branch"):
        fusion.fit({"a": np.zeros((2, 2))}, np.array([0, 1]))
