"""Metric functions on hand-made arrays whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.evaluation.evaluate import evaluate_predictions
from rakuten_mlops.evaluation.metrics import (
    compute_calibration,
    compute_classification_metrics,
    compute_coverage_curve,
    compute_per_class_metrics,
    compute_slice_metrics,
    define_slices,
    find_coverage_at_accuracy,
    summarize_latencies,
)
from rakuten_mlops.params import EvaluationSettings


def test_classification_metrics_by_hand() -> None:
    # Class 10: 2 true, both predicted right, plus one false positive -> P=2/3, R=1, F1=0.8.
    # Class 40: 2 true, one predicted right -> P=1, R=0.5, F1=2/3.
    y_true = [10, 10, 40, 40]
    y_pred = [10, 10, 40, 10]
    metrics = compute_classification_metrics(y_true, y_pred)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["weighted_f1"] == pytest.approx((0.8 * 2 + 2 / 3 * 2) / 4)
    assert metrics["n"] == 4


def test_weighted_f1_follows_support_while_macro_does_not() -> None:
    # A large class predicted perfectly, a small one always wrong.
    y_true = np.array([1] * 9 + [2])
    y_pred = np.array([1] * 10)
    metrics = compute_classification_metrics(y_true, y_pred)
    f1_large = 2 * 0.9 * 1.0 / 1.9
    assert metrics["weighted_f1"] == pytest.approx(0.9 * f1_large)
    assert metrics["macro_f1"] == pytest.approx(f1_large / 2)


def test_empty_input_gives_nan_not_error() -> None:
    metrics = compute_classification_metrics([], [])
    assert metrics["n"] == 0
    assert math.isnan(metrics["weighted_f1"])


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        compute_classification_metrics([1, 2], [1])


def test_per_class_reports_requested_codes_with_names_and_zero_support() -> None:
    table = compute_per_class_metrics([10, 10, 40], [10, 40, 40], labels=[10, 40, 2583])
    assert table["prdtypecode"].tolist() == [10, 40, 2583]
    assert table["category"].tolist() == [
        "Livre occasion",
        "Jeu vidéo, accessoire tech.",
        "Piscine",
    ]
    row_10 = table.set_index("prdtypecode").loc[10]
    assert row_10["precision"] == pytest.approx(1.0)
    assert row_10["recall"] == pytest.approx(0.5)
    assert row_10["support"] == 2
    assert table.set_index("prdtypecode").loc[2583, "support"] == 0


def test_calibration_perfect_and_overconfident() -> None:
    # 10 rows at confidence 0.8 with 8 right: perfectly calibrated.
    perfect = compute_calibration([0.8] * 10, [True] * 8 + [False] * 2, n_bins=10)
    assert perfect.ece == pytest.approx(0.0)
    assert perfect.counts.sum() == 10
    # Confidence 0.9 but only half right: ECE = |0.5 - 0.9| = 0.4.
    over = compute_calibration([0.9] * 4, [True, False, True, False], n_bins=10)
    assert over.ece == pytest.approx(0.4)


def test_calibration_weights_bins_by_count_and_keeps_confidence_one() -> None:
    # Bin (0.2, 0.3]: 1 row at 0.25, wrong (gap 0.25); bin (0.9, 1.0]: 3 rows at 1.0, right.
    curve = compute_calibration([0.25, 1.0, 1.0, 1.0], [False, True, True, True], n_bins=10)
    assert curve.counts[2] == 1
    assert curve.counts[9] == 3
    assert curve.ece == pytest.approx(0.25 / 4)
    assert np.isnan(curve.accuracy[0])


def test_calibration_refuses_out_of_range_confidence() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_calibration([1.5], [True])


def test_coverage_curve_trades_coverage_for_accuracy() -> None:
    confidence = np.array([0.95, 0.9, 0.6, 0.4])
    correct = np.array([True, True, False, True])
    curve = compute_coverage_curve(confidence, correct, thresholds=[0.0, 0.5, 0.9, 0.99])
    assert curve["coverage"].tolist() == [1.0, 0.75, 0.5, 0.0]
    assert curve["accuracy"].iloc[0] == pytest.approx(0.75)
    assert curve["accuracy"].iloc[1] == pytest.approx(2 / 3)
    assert curve["accuracy"].iloc[2] == pytest.approx(1.0)
    assert math.isnan(curve["accuracy"].iloc[3])
    assert find_coverage_at_accuracy(curve, 0.95) == pytest.approx(0.5)
    assert find_coverage_at_accuracy(curve, 0.7) == pytest.approx(1.0)


def test_slices_from_a_processed_frame() -> None:
    frame = pd.DataFrame(
        {
            "designation": ["un deux trois", "a b c d e f g", "", "titre court"],
            "description": ["texte", "", None, "  "],
            "has_image": [True, False, False, True],
            "text_origin": ["full", "prefix_100", "full", "prefix_200"],
        }
    )
    slices = define_slices(frame, short_title_words=5)
    assert slices["with_image"].tolist() == [True, False, False, True]
    assert slices["without_image"].tolist() == [False, True, True, False]
    assert slices["with_description"].tolist() == [True, False, False, False]
    assert slices["short_title"].tolist() == [True, False, True, True]
    assert slices["text_origin_full"].tolist() == [True, False, True, False]
    metrics = compute_slice_metrics([1, 2, 1, 2], [1, 1, 1, 2], slices)
    assert metrics["with_image"]["accuracy"] == pytest.approx(1.0)
    assert metrics["without_image"]["accuracy"] == pytest.approx(0.5)
    assert metrics["with_description"]["n"] == 1


def test_slices_skip_absent_columns() -> None:
    slices = define_slices(pd.DataFrame({"designation": ["x"]}))
    assert set(slices) == {"short_title"}


def test_latency_percentiles_in_milliseconds() -> None:
    summary = summarize_latencies([0.001] * 99 + [0.101])
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["p99_ms"] > 1.0
    assert summary["mean_ms"] == pytest.approx(2.0)


def test_evaluate_predictions_joins_labels_slices_and_calibration() -> None:
    frame = pd.DataFrame(
        {
            "designation": ["a", "b c", "d", "e"],
            "description": ["", "x", "", "y"],
            "has_image": [False, True, False, True],
            "prdtypecode": [10, 40, 10, 40],
        }
    )
    predictions = pd.DataFrame(
        {"prdtypecode": [10, 40, 40, 40], "confidence": [0.9, 0.8, 0.6, 1.0]}
    )
    result = evaluate_predictions(
        frame, predictions, settings=EvaluationSettings(calibration_bins=10)
    )
    assert result.metrics["accuracy"] == pytest.approx(0.75)
    assert result.slices["with_image"]["accuracy"] == pytest.approx(1.0)
    assert result.slices["without_image"]["accuracy"] == pytest.approx(0.5)
    assert 0.0 < result.metrics["ece"] < 1.0
    flat = result.flat_metrics()
    assert flat["test_accuracy"] == pytest.approx(0.75)
    assert "test_slice_with_image_weighted_f1" in flat
    assert all(not math.isnan(v) for v in flat.values())
    assert result.to_dict()["split"] == "test"
