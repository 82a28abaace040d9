"""The review rule a model learns from held-out products and carries (models/review.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.models.classifier import Classifier
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.review import NEVER, ReviewRule, fit_review_rule


def calibrated(n: int, seed: int, codes: tuple[int, ...] = (10, 40)) -> tuple[np.ndarray, ...]:
    """Confidences, predicted codes and whether each was right (right with its confidence)."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, size=n)
    predicted = rng.choice(np.array(codes), size=n)
    correct = rng.random(n) < confidence
    return confidence, predicted, correct


def precision_coverage(rule: ReviewRule, confidence, predicted, correct) -> tuple[float, float]:
    keep = ~rule.needs_review(predicted, confidence)
    return float(correct[keep].mean()), float(keep.mean())


def test_the_global_rule_reaches_the_target_on_fresh_products() -> None:
    rule = fit_review_rule(*calibrated(4000, seed=1), target_precision=0.9, seed=0)
    assert rule.kind == "global"  # one calibration for all: nothing to gain per class
    precision, coverage = precision_coverage(rule, *calibrated(20000, seed=2))
    assert precision >= 0.88
    # Calibrated: accepting confidence >= t gives precision ~ (1 + t) / 2, so t ~ 0.8.
    assert 0.65 <= rule.threshold <= 0.9
    assert coverage == pytest.approx((1.0 - rule.threshold) / 0.7, abs=0.05)
    assert rule.heldout_products == 4000
    assert rule.heldout_precision is not None and rule.heldout_precision >= 0.9


def miscalibrated(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Class 10 is right less often than it says, class 40 more often."""
    confidence, predicted, _ = calibrated(n, seed)
    rng = np.random.default_rng(seed + 100)
    truth = np.where(predicted == 10, confidence**3, np.sqrt(confidence))
    return confidence, predicted, rng.random(n) < truth


def test_the_per_class_rule_wins_when_classes_are_calibrated_differently() -> None:
    rule = fit_review_rule(*miscalibrated(6000, seed=3), target_precision=0.9, seed=0)
    assert rule.kind == "per_class"
    assert rule.class_thresholds[10] > rule.class_thresholds[40]
    fresh = miscalibrated(30000, seed=4)
    precision, coverage = precision_coverage(rule, *fresh)
    one_threshold = ReviewRule(0.9, "global", _best_global(*fresh, 0.9))
    global_precision, global_coverage = precision_coverage(one_threshold, *fresh)
    assert precision >= 0.88
    # More products kept than the best single threshold chosen with hindsight.
    assert global_precision >= 0.9
    assert coverage > global_coverage


def _best_global(confidence, predicted, correct, target) -> float:
    order = np.argsort(-confidence)
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    return float(confidence[order][np.flatnonzero(precision >= target)[-1]])


def test_an_unreachable_target_sends_everything_to_review() -> None:
    confidence, predicted, _ = calibrated(500, seed=5)
    rule = fit_review_rule(confidence, predicted, np.zeros(500, dtype=bool), 0.95)
    assert rule.threshold == NEVER
    assert rule.needs_review(predicted, confidence).all()
    assert rule.heldout_precision is None and rule.heldout_coverage == 0.0


def test_the_rule_round_trips_through_json() -> None:
    rule = fit_review_rule(*miscalibrated(3000, seed=6), target_precision=0.9)
    again = ReviewRule.from_dict(rule.to_dict())
    assert again == rule
    codes = np.array([10, 40, 2583])  # 2583: no held-out product, the default threshold
    assert again.thresholds_for(codes)[2] == rule.threshold


def test_a_fitted_model_carries_its_rule_into_predict(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tiny_params: dict[str, object],
    tmp_path,
) -> None:
    train, val, test = tiny_products
    model = ProductClassifier(tiny_params, seed=0, target_precision=0.8).fit(
        train, val, progress=False
    )
    rule = model.review_rule
    assert rule is not None and rule.target_precision == 0.8
    output = model.predict(test)
    expected = rule.needs_review(output["prdtypecode"].to_numpy(), output["confidence"].to_numpy())
    assert output["needs_review"].tolist() == expected.tolist()

    model.save(tmp_path / "m")
    loaded = Classifier.load(tmp_path / "m")
    assert loaded.review_rule == rule
    assert loaded.predict(test)["needs_review"].tolist() == expected.tolist()
