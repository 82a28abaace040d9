"""Online quality: intervals, shadow labels, per-version figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from rakuten_mlops.evaluation.intervals import wilson_interval
from rakuten_mlops.monitoring.quality import (
    QualityRow,
    bootstrap_weighted_f1,
    format_quality,
    online_quality,
    propagate_labels_to_shadow,
    weighted_f1,
    with_window_totals,
)


def _records(
    n: int,
    correct: int,
    *,
    version: str = "1",
    variant: str = "champion",
    confidence: float = 0.8,
    labelled: int | None = None,
) -> pd.DataFrame:
    labelled = n if labelled is None else labelled
    true = [10] * n
    predicted = [10] * correct + [40] * (n - correct)
    return pd.DataFrame(
        {
            "prediction_id": [f"{version}{variant}{i}" for i in range(n)],
            "request_id": [f"r{i}" for i in range(n)],
            "productid": [str(i) for i in range(n)],
            "designation": [f"t{i}" for i in range(n)],
            "variant": variant,
            "model_version": version,
            "shadow": False,
            "prdtypecode": predicted,
            "confidence": confidence,
            "true_code": [float(t) for t in true[:labelled]] + [np.nan] * (n - labelled),
        }
    )


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(80, 100)
    assert (low, high) == pytest.approx((0.7112, 0.8666), abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.69 < low < 0.73


@pytest.mark.parametrize("seed", range(5))
def test_weighted_f1_is_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = np.array([10, 40, 50, 60, 1280, 2583])
    y_true = rng.choice(codes[: 3 + seed % 3], size=40 + seed * 17)
    y_pred = np.where(rng.random(len(y_true)) < 0.6, y_true, rng.choice(codes, len(y_true)))
    expected = f1_score(y_true, y_pred, average="weighted", zero_division=0)
    assert weighted_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    assert weighted_f1(y_true, y_true) == 1.0
    assert weighted_f1(y_true, np.full(len(y_true), 9999)) == 0.0


def test_bootstrap_interval_contains_the_estimate() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 5, 300))
    low, high = bootstrap_weighted_f1(y_true, y_pred, n_boot=100)
    from sklearn.metrics import f1_score

    estimate = f1_score(y_true, y_pred, average="weighted")
    assert low < estimate < high
    assert high - low < 0.15


def test_online_quality_per_version_and_variant() -> None:
    records = pd.concat(
        [
            _records(100, 80, version="3", confidence=0.9, labelled=60),
            _records(40, 20, version="4", variant="challenger", confidence=0.6),
        ],
        ignore_index=True,
    )
    rows = online_quality(records, n_boot=50)
    assert [(r.model_version, r.variant) for r in rows] == [("3", "champion"), ("4", "challenger")]
    champion, challenger = rows
    assert champion.predictions == 100 and champion.labels == 60
    assert champion.accuracy == pytest.approx(1.0)  # the 60 labelled rows are all correct
    assert champion.expected_accuracy == pytest.approx(0.9)
    assert champion.label_counts == {"10": 60}
    assert challenger.accuracy == pytest.approx(0.5)
    assert challenger.accuracy_low < 0.5 < challenger.accuracy_high
    assert challenger.weighted_f1 is not None and challenger.weighted_f1_low is not None
    assert "challenger" in format_quality(rows)


def test_shadow_predictions_take_the_label_of_the_answered_one() -> None:
    answered = _records(3, 3)
    shadow = answered.assign(
        prediction_id=["s0", "s1", "s2"],
        variant="challenger",
        shadow=True,
        prdtypecode=[10, 40, 40],
        true_code=np.nan,
        model_version="4",
    )
    records = propagate_labels_to_shadow(pd.concat([answered, shadow], ignore_index=True))
    assert records["true_code"].tolist() == [10.0] * 6
    rows = {r.variant: r for r in online_quality(pd.concat([answered, shadow]), n_boot=0)}
    assert rows["challenger (shadow)"].labels == 3
    assert rows["challenger (shadow)"].accuracy == pytest.approx(1 / 3)


def test_window_totals_cover_unlabelled_groups() -> None:
    rows = online_quality(_records(10, 9, version="3"), n_boot=0)
    aggregates = pd.DataFrame(
        {
            "model_version": ["3", "4"],
            "variant": ["champion", "challenger"],
            "shadow": [False, False],
            "predictions": [500, 20],
            "mean_confidence": [0.81, 0.7],
        }
    )
    merged = with_window_totals(rows, aggregates)
    assert [(r.model_version, r.predictions, r.labels) for r in merged] == [
        ("3", 500, 10),
        ("4", 20, 0),
    ]
    assert merged[0].accuracy == pytest.approx(0.9)
    assert merged[0].expected_accuracy == pytest.approx(0.81)
    assert isinstance(merged[1], QualityRow) and merged[1].accuracy is None


def test_no_record_no_row() -> None:
    assert online_quality(_records(0, 0)) == []
    assert format_quality([]) == "no prediction in the window"
