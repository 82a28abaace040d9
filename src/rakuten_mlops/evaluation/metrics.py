"""Classification metrics: pure functions on arrays, no I/O.

Everything here takes labels, predictions and probabilities as arrays and returns numbers
or small frames, so the same code scores a training run, a registered model and a batch of
reviewed predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from rakuten_mlops.schema import CATEGORY_NAMES

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Slices reported for every evaluation (names are stable: they become MLflow metric keys).
SLICE_WITH_IMAGE = "with_image"
SLICE_WITHOUT_IMAGE = "without_image"
SLICE_WITH_DESCRIPTION = "with_description"
SLICE_WITHOUT_DESCRIPTION = "without_description"
SLICE_SHORT_TITLE = "short_title"
SLICE_TEXT_FULL = "text_origin_full"


def compute_classification_metrics(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike
) -> dict[str, float]:
    """Headline metrics: weighted F1 (primary), macro F1, accuracy and the row count.

    Macro F1 is averaged over the classes present in `y_true` or `y_pred`, as scikit-learn
    does; an empty input gives NaN scores rather than an error.
    """
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    _check_same_length(true, pred)
    if true.size == 0:
        nan = float("nan")
        return {"weighted_f1": nan, "macro_f1": nan, "accuracy": nan, "n": 0.0}
    return {
        "weighted_f1": float(f1_score(true, pred, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(true, pred)),
        "n": float(true.size),
    }


def compute_per_class_metrics(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, labels: Sequence[int] | None = None
) -> pd.DataFrame:
    """Precision, recall, F1 and support per product type code.

    Args:
        labels: the codes to report, in order (default: every code seen in either array).

    Returns:
        One row per code: `prdtypecode`, `category`, `precision`, `recall`, `f1`, `support`.
    """
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    _check_same_length(true, pred)
    codes = list(labels) if labels is not None else sorted(set(true.tolist()) | set(pred.tolist()))
    if not codes:
        return pd.DataFrame(
            columns=["prdtypecode", "category", "precision", "recall", "f1", "support"]
        )
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=codes, zero_division=0
    )
    return pd.DataFrame(
        {
            "prdtypecode": np.asarray(codes, dtype=np.int64),
            "category": [CATEGORY_NAMES.get(int(c), str(c)) for c in codes],
            "precision": np.asarray(precision, dtype=np.float64),
            "recall": np.asarray(recall, dtype=np.float64),
            "f1": np.asarray(f1, dtype=np.float64),
            "support": np.asarray(support, dtype=np.int64),
        }
    )


@dataclass(frozen=True)
class CalibrationCurve:
    """Reliability diagram of the top-1 confidence, equal-width bins over [0, 1]."""

    bin_edges: FloatArray  # (n_bins + 1,)
    mean_confidence: FloatArray  # (n_bins,), NaN for empty bins
    accuracy: FloatArray  # (n_bins,), NaN for empty bins
    counts: IntArray  # (n_bins,)
    ece: float  # expected calibration error: count-weighted |accuracy - confidence|


def compute_calibration(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, n_bins: int = 15
) -> CalibrationCurve:
    """Calibration of the top-1 confidence (the "top-label" ECE).

    Args:
        confidence: probability of the predicted class, one per row.
        correct: whether the predicted class was right, one per row.
        n_bins: equal-width confidence bins; a confidence of exactly 1.0 falls in the last.

    Raises:
        ValueError: lengths differ, `n_bins` < 1, or a confidence is outside [0, 1].
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    _check_same_length(conf, hit)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if conf.size and (np.nanmin(conf) < 0.0 or np.nanmax(conf) > 1.0 + 1e-9):
        raise ValueError("confidence values must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins except the first: (0.9, 1.0] holds the fully confident rows.
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(index, weights=conf, minlength=n_bins)
    sum_hit = np.bincount(index, weights=hit.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_conf / np.maximum(counts, 1), np.nan)
        accuracy = np.where(counts > 0, sum_hit / np.maximum(counts, 1), np.nan)
    total = counts.sum()
    gaps = np.abs(np.nan_to_num(accuracy) - np.nan_to_num(mean_conf))
    ece = float((counts * gaps).sum() / total) if total else float("nan")
    return CalibrationCurve(
        bin_edges=edges, mean_confidence=mean_conf, accuracy=accuracy, counts=counts, ece=ece
    )


def compute_coverage_curve(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    thresholds: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Accuracy of the auto-accepted items versus the share auto-accepted.

    An item is auto-accepted when its top-1 confidence is >= the threshold; the rest would go
    to a human reviewer.

    Returns:
        One row per threshold: `threshold`, `coverage` (share accepted), `accuracy` (of the
        accepted items, NaN when none is accepted), `accepted` (count).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    _check_same_length(conf, hit)
    grid = np.round(np.linspace(0.0, 0.99, 100), 2) if thresholds is None else thresholds
    rows = []
    n = conf.size
    for threshold in grid:
        accepted = conf >= threshold
        count = int(accepted.sum())
        rows.append(
            {
                "threshold": float(threshold),
                "coverage": count / n if n else float("nan"),
                "accuracy": float(hit[accepted].mean()) if count else float("nan"),
                "accepted": count,
            }
        )
    return pd.DataFrame(rows, columns=["threshold", "coverage", "accuracy", "accepted"])


def find_coverage_at_accuracy(curve: pd.DataFrame, target_accuracy: float) -> float:
    """Largest coverage whose auto-accepted accuracy reaches `target_accuracy` (0 if none)."""
    reached = curve[curve["accuracy"] >= target_accuracy]
    return float(reached["coverage"].max()) if len(reached) else 0.0


def define_slices(
    frame: pd.DataFrame, short_title_words: int = 5
) -> dict[str, npt.NDArray[np.bool_]]:
    """Boolean masks of the evaluation slices of a processed split.

    Slices whose source column is absent are left out (e.g. `text_origin` for data that
    never had it).

    Args:
        frame: rows with some of `has_image`, `description`, `designation`, `text_origin`.
        short_title_words: a title with at most this many words is "short".
    """
    slices: dict[str, npt.NDArray[np.bool_]] = {}
    if "has_image" in frame:
        with_image = frame["has_image"].fillna(False).astype(bool).to_numpy()
        slices[SLICE_WITH_IMAGE] = with_image
        slices[SLICE_WITHOUT_IMAGE] = ~with_image
    if "description" in frame:
        described = frame["description"].fillna("").astype(str).str.strip().ne("").to_numpy()
        slices[SLICE_WITH_DESCRIPTION] = described
        slices[SLICE_WITHOUT_DESCRIPTION] = ~described
    if "designation" in frame:
        words = frame["designation"].fillna("").astype(str).map(lambda text: len(text.split()))
        slices[SLICE_SHORT_TITLE] = (words <= short_title_words).to_numpy(dtype=bool)
    if "text_origin" in frame:
        slices[SLICE_TEXT_FULL] = frame["text_origin"].astype(str).eq("full").to_numpy()
    return slices


def compute_slice_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    slices: Mapping[str, npt.NDArray[np.bool_]],
) -> dict[str, dict[str, float]]:
    """Headline metrics of every slice (`n` = 0 and NaN scores for an empty slice)."""
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    _check_same_length(true, pred)
    result: dict[str, dict[str, float]] = {}
    for name, mask in slices.items():
        selected = np.asarray(mask, dtype=bool)
        if selected.shape != true.shape:
            raise ValueError(f"slice {name!r} has {selected.size} rows, expected {true.size}")
        result[name] = compute_classification_metrics(true[selected], pred[selected])
    return result


def summarize_latencies(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean of single-item latencies, in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    if values.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
    }


def _check_same_length(first: np.ndarray, second: np.ndarray) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"length mismatch: {first.shape[0]} labels vs {second.shape[0]} values")
