"""Performance without labels (`monitor estimate`), checked against labels drawn for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.errors import DataError
from rakuten_mlops.monitoring.estimate import (
    estimate_performance,
    probability_matrix,
    read_prediction_file,
)
from rakuten_mlops.schema import PRODUCT_CODES

CLASSES = np.asarray(PRODUCT_CODES, dtype=np.int64)


def calibrated_products(n: int, seed: int, sharpness: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of `n` products and true labels drawn from them (calibrated by design)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(len(CLASSES), sharpness), size=n)
    labels = np.array([rng.choice(len(CLASSES), p=row) for row in probs])
    return probs, CLASSES[labels]


def test_the_estimate_matches_labels_when_the_probabilities_are_calibrated() -> None:
    probs, truth = calibrated_products(3000, seed=1)
    predicted = CLASSES[probs.argmax(axis=1)]
    measured = f1_score(truth, predicted, average="weighted")
    estimate = estimate_performance(predicted, probs, draws=300, seed=2)
    assert abs(estimate.estimated_weighted_f1 - measured) < 0.02
    assert estimate.ci_low <= measured <= estimate.ci_high
    assert estimate.ci_high - estimate.ci_low < 0.05
    assert estimate.estimated_accuracy == pytest.approx(probs.max(axis=1).mean())
    code = int(predicted[0])
    assert 0.0 <= estimate.per_class[code]["precision"] <= 1.0
    assert estimate.per_class[code]["predicted"] == int((predicted == code).sum())


def test_overconfident_probabilities_are_caught_by_the_interval() -> None:
    probs, truth = calibrated_products(3000, seed=3)
    predicted = CLASSES[probs.argmax(axis=1)]
    measured = f1_score(truth, predicted, average="weighted")
    # The model claims 1.5x its real confidence on its top class: the estimate overshoots.
    boosted = probs.copy()
    rows = np.arange(len(probs))
    boosted[rows, probs.argmax(axis=1)] *= 1.5
    boosted /= boosted.sum(axis=1, keepdims=True)
    estimate = estimate_performance(predicted, boosted, draws=300, seed=4)
    assert estimate.ci_low > measured


def test_top3_probabilities_become_a_full_distribution() -> None:
    codes = np.array([[50, 10, 2583], [40, -1, -1]])
    probs = np.array([[0.7, 0.2, 0.05], [0.9, 0.0, 0.0]])
    matrix = probability_matrix(codes, probs)
    assert matrix.shape == (2, len(CLASSES))
    assert np.allclose(matrix.sum(axis=1), 1.0)
    column = {int(c): j for j, c in enumerate(CLASSES)}
    assert matrix[0, column[50]] == pytest.approx(0.7)
    assert matrix[0, column[60]] == pytest.approx(0.05 / (len(CLASSES) - 3))
    assert matrix[1, column[40]] == pytest.approx(0.9)


def test_no_prediction_is_an_error() -> None:
    with pytest.raises(DataError, match="no prediction"):
        estimate_performance(np.array([], dtype=np.int64), np.zeros((0, len(CLASSES))))


def write_predictions(path: Path, n: int, seed: int) -> Path:
    probs, _ = calibrated_products(n, seed)
    order = np.argsort(-probs, axis=1)[:, :3]
    rows = np.arange(n)[:, None]
    frame = pd.DataFrame({"prdtypecode": CLASSES[order[:, 0]]})
    for k in range(3):
        frame[f"top_{k + 1}_code"] = CLASSES[order[:, k]]
        frame[f"top_{k + 1}_proba"] = probs[rows[:, 0], order[:, k]]
    frame.to_csv(path, index=False)
    return path


def test_monitor_estimate_reads_a_predict_output(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "preds.csv", 400, seed=5)
    predicted, matrix = read_prediction_file(path)
    assert len(predicted) == 400 and matrix.shape == (400, len(CLASSES))

    result = CliRunner().invoke(
        app, ["monitor", "estimate", "--predictions", str(path), "--json", "--draws", "50"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert {"estimated_weighted_f1", "ci_low", "ci_high", "per_class"} <= set(payload)
    assert payload["ci_low"] <= payload["estimated_weighted_f1"] <= payload["ci_high"]
    assert payload["products"] == 400

    text = CliRunner().invoke(app, ["monitor", "estimate", "--predictions", str(path)])
    assert text.exit_code == 0 and "estimated weighted F1" in text.output


def test_monitor_estimate_names_what_is_wrong(tmp_path: Path) -> None:
    missing = CliRunner().invoke(
        app, ["monitor", "estimate", "--predictions", str(tmp_path / "none.csv")]
    )
    assert missing.exit_code == 1 and "predictions file not found" in missing.output
    partial = tmp_path / "partial.csv"
    pd.DataFrame({"prdtypecode": [10], "top_1_code": [10], "top_1_proba": [0.9]}).to_csv(
        partial, index=False
    )
    result = CliRunner().invoke(app, ["monitor", "estimate", "--predictions", str(partial)])
    assert result.exit_code == 1
    assert "missing column(s) top_2_code" in result.output
    assert "Traceback" not in result.output
