"""Performance without labels: per-class precision, recall, F1 and weighted F1 estimated from
the model's calibrated probabilities (confidence-based performance estimation).

When the probabilities are calibrated, product i's true class is a draw from its predicted
distribution p_i. Then, for each class c:

* expected true positives: E[TP_c] = sum of p_i(c) over the products predicted c;
* the products predicted c are known; the expected products truly c are sum_i p_i(c);
* precision_c = E[TP_c] / predicted_c, recall_c = E[TP_c] / E[true_c], and F1_c from both;
* weighted F1 weights F1_c by the expected share of class c.

The interval is the one of the weighted F1 that labels would measure: labels are drawn from
the probabilities (`draws` times) and the weighted F1 of the predictions against each draw
is computed; the interval holds the central `level` of those values. A measured weighted F1
outside it says the probabilities are no longer calibrated on this traffic.

The prediction files and the service keep the top-3 probabilities only; the rest of each
product's probability (usually under 2 %) is spread evenly over the other classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.errors import DataError
from rakuten_mlops.models.output import TOP_K
from rakuten_mlops.schema import PRODUCT_CODES

DEFAULT_DRAWS = 200
DEFAULT_LEVEL = 0.95


@dataclass
class PerformanceEstimate:
    """Estimated performance of a set of predictions (see the module docstring)."""

    products: int
    estimated_weighted_f1: float
    ci_low: float
    ci_high: float
    estimated_accuracy: float
    level: float
    draws: int
    per_class: dict[int, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (per-class keys as strings)."""
        return {
            "products": self.products,
            "estimated_weighted_f1": self.estimated_weighted_f1,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "estimated_accuracy": self.estimated_accuracy,
            "level": self.level,
            "draws": self.draws,
            "per_class": {str(code): values for code, values in self.per_class.items()},
        }


def probability_matrix(
    top_codes: np.ndarray, top_probs: np.ndarray, classes: Sequence[int] = PRODUCT_CODES
) -> np.ndarray:
    """(n, len(classes)) probabilities from the top-k codes and probabilities of each row.

    The mass the top-k leaves (1 - their sum) is spread evenly over the other classes;
    codes outside `classes` (or -1, "no such rank") are ignored.
    """
    known_classes = np.asarray(classes, dtype=np.int64)
    n = len(top_codes)
    column = {int(code): j for j, code in enumerate(known_classes)}
    matrix = np.zeros((n, len(known_classes)), dtype=np.float64)
    rows = np.arange(n)
    for k in range(top_codes.shape[1]):
        cols = np.array([column.get(int(code), -1) for code in top_codes[:, k]], dtype=np.int64)
        known = cols >= 0
        matrix[rows[known], cols[known]] += np.clip(top_probs[known, k], 0.0, 1.0)
    rest = np.clip(1.0 - matrix.sum(axis=1), 0.0, 1.0)
    others = (matrix == 0).sum(axis=1)
    share = np.divide(rest, others, out=np.zeros(n), where=others > 0)
    matrix = np.where(matrix == 0, share[:, None], matrix)
    return matrix / matrix.sum(axis=1, keepdims=True).clip(min=1e-12)


def estimate_performance(
    predicted: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[int] = PRODUCT_CODES,
    *,
    draws: int = DEFAULT_DRAWS,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> PerformanceEstimate:
    """Estimate per-class and weighted F1 of `predicted` codes from `probabilities` (n, K).

    Raises:
        DataError: no prediction, or shapes that do not match.
    """
    codes = np.asarray(classes, dtype=np.int64)
    n = len(predicted)
    if n == 0:
        raise DataError("no prediction to estimate the performance of")
    if probabilities.shape != (n, len(codes)):
        raise DataError(
            f"probabilities of shape {probabilities.shape}, expected ({n}, {len(codes)})"
        )
    index = np.clip(np.searchsorted(codes, predicted), 0, len(codes) - 1)
    known = codes[index] == predicted
    predicted_onehot = np.zeros_like(probabilities)
    predicted_onehot[np.arange(n)[known], index[known]] = 1.0

    tp = (predicted_onehot * probabilities).sum(axis=0)
    n_pred = predicted_onehot.sum(axis=0)
    n_true = probabilities.sum(axis=0)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = np.divide(2 * tp, n_pred + n_true, out=np.zeros_like(tp), where=(n_pred + n_true) > 0)
    weights = n_true / n
    point = float((weights * f1).sum())

    realized = _realized_weighted_f1(index, known, probabilities, draws, seed)
    tail = (1.0 - level) / 2.0
    low, high = (
        (float(np.quantile(realized, tail)), float(np.quantile(realized, 1.0 - tail)))
        if len(realized)
        else (point, point)
    )
    per_class = {
        int(code): {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "predicted": int(n_pred[j]),
            "expected_support": float(n_true[j]),
        }
        for j, code in enumerate(codes.tolist())
        if n_pred[j] > 0 or n_true[j] >= 0.5
    }
    return PerformanceEstimate(
        products=n,
        estimated_weighted_f1=point,
        ci_low=min(low, point),
        ci_high=max(high, point),
        estimated_accuracy=float(tp.sum() / n),
        level=level,
        draws=draws,
        per_class=per_class,
    )


def _realized_weighted_f1(
    predicted_index: np.ndarray,
    known: np.ndarray,
    probabilities: np.ndarray,
    draws: int,
    seed: int,
) -> np.ndarray:
    """Weighted F1 of the predictions against `draws` label sets drawn from the probabilities."""
    if draws <= 0:
        return np.zeros(0)
    n, n_classes = probabilities.shape
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative[:, -1] = 1.0
    pred = np.where(known, predicted_index, -1)
    values = np.empty(draws)
    for d in range(draws):
        labels: np.ndarray = (np.asarray(rng.random(n))[:, None] > cumulative).sum(axis=1)
        hit = pred == labels
        tp = np.bincount(labels[hit], minlength=n_classes)
        true = np.bincount(labels, minlength=n_classes)
        predicted = np.bincount(pred[pred >= 0], minlength=n_classes)
        denominator = true + predicted
        f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
        values[d] = float((true / n * f1).sum())
    return values


def read_prediction_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The predicted codes and the (n, 27) probabilities of a `predict` output CSV.

    Raises:
        DataError: the file is missing or unreadable, or lacks the top-k columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV: {exc}") from exc
    columns = ["prdtypecode"] + [
        f"top_{k}_{kind}" for k in range(1, TOP_K + 1) for kind in ("code", "proba")
    ]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (a `rakuten-mlops predict` output)"
        )
    frame = frame.dropna(subset=columns)
    try:
        codes = frame[[f"top_{k}_code" for k in range(1, TOP_K + 1)]].to_numpy(dtype=np.int64)
        probs = frame[[f"top_{k}_proba" for k in range(1, TOP_K + 1)]].to_numpy(dtype=np.float64)
        predicted = frame["prdtypecode"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: the code and probability columns must be numbers: {exc}") from exc
    return predicted, probability_matrix(codes, probs)


def estimate_from_records(
    records: pd.DataFrame, *, draws: int = 100, seed: int = 0
) -> dict[tuple[str, str], PerformanceEstimate]:
    """Per (variant, model version): the estimate over stored predictions (`prdtypecode`,
    `top3` as the service records it: `[{"code", "probability", ...}]`)."""
    estimates: dict[tuple[str, str], PerformanceEstimate] = {}
    for (variant, version), group in records.groupby(["variant", "model_version"], dropna=False):
        codes = np.full((len(group), TOP_K), -1, dtype=np.int64)
        probs = np.zeros((len(group), TOP_K), dtype=np.float64)
        for i, top in enumerate(group["top3"].tolist()):
            for k, entry in enumerate((top or [])[:TOP_K]):
                if isinstance(entry, dict) and "code" in entry and "probability" in entry:
                    codes[i, k] = int(entry["code"])
                    probs[i, k] = float(entry["probability"])
        usable = codes[:, 0] >= 0
        if not usable.any():
            continue
        predicted = group["prdtypecode"].to_numpy(dtype=np.int64)[usable]
        matrix = probability_matrix(codes[usable], probs[usable])
        key = (str(variant), "" if version is None or version != version else str(version))
        estimates[key] = estimate_performance(predicted, matrix, draws=draws, seed=seed)
    return estimates


def format_estimate(estimate: PerformanceEstimate, *, worst: int = 5) -> str:
    """A few lines for a terminal: the estimate, its interval, the weakest classes."""
    lines = [
        f"{estimate.products} predictions: estimated weighted F1 "
        f"{estimate.estimated_weighted_f1:.4f} "
        f"({estimate.level:.0%} interval {estimate.ci_low:.4f} - {estimate.ci_high:.4f}), "
        f"estimated accuracy {estimate.estimated_accuracy:.4f}"
    ]
    ranked = sorted(
        (item for item in estimate.per_class.items() if item[1]["predicted"] > 0),
        key=lambda item: item[1]["f1"],
    )[:worst]
    if ranked:
        lines.append("weakest classes (estimated): code  precision  recall  F1  predicted")
        lines.extend(
            f"  {code:>5}  {v['precision']:.3f}  {v['recall']:.3f}  {v['f1']:.3f}  {v['predicted']}"
            for code, v in ranked
        )
    return "\n".join(lines)
