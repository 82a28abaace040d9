"""Online quality: how well the model in service does on the products reviewers corrected.

Pure functions over a frame of prediction records joined to their latest feedback
(`labelled_predictions`): per model version and variant, accuracy with a Wilson interval,
weighted F1 with a bootstrap interval, the number of labels behind them, and the expected
accuracy from the calibrated confidences (mean top-1 probability) beside the measured one.

The expected accuracy is given twice: over every prediction of the window (what the model
believes about all its traffic, labels or not) and over the labelled ones only (the fair
comparison with the measured accuracy: reviewers mostly correct low-confidence predictions,
so labelled products are harder than average and both numbers are lower there).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.evaluation.intervals import wilson_interval


@dataclass(frozen=True)
class QualityRow:
    """Online quality of one (model version, variant) over a window."""

    model_version: str
    variant: str
    predictions: int
    labels: int
    accuracy: float | None
    accuracy_low: float | None
    accuracy_high: float | None
    weighted_f1: float | None
    weighted_f1_low: float | None
    weighted_f1_high: float | None
    expected_accuracy: float | None
    expected_accuracy_labelled: float | None
    label_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return asdict(self)


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Weighted F1 of integer codes, as scikit-learn's `f1_score(average="weighted",
    zero_division=0)`: each true class's F1 weighted by its support (the service computes
    it for its gauges without loading scikit-learn)."""
    if len(y_true) == 0:
        return 0.0
    classes, true_idx = np.unique(y_true, return_inverse=True)
    support = np.bincount(true_idx, minlength=len(classes))
    hit = y_true == y_pred
    tp = np.bincount(true_idx[hit], minlength=len(classes))
    # Predictions of each true class's code, whatever the truth (tp + fp).
    predicted = np.array([(y_pred == c).sum() for c in classes])
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(classes)), where=denominator > 0)
    return float((f1 * support).sum() / support.sum())


def bootstrap_weighted_f1(
    y_true: np.ndarray, y_pred: np.ndarray, *, n_boot: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the weighted F1 (resampling the labelled rows)."""
    n = len(y_true)
    if n == 0 or n_boot <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    scores = np.empty(n_boot)
    for i in range(n_boot):
        picks = rng.integers(0, n, size=n)
        scores[i] = weighted_f1(y_true[picks], y_pred[picks])
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def propagate_labels_to_shadow(records: pd.DataFrame) -> pd.DataFrame:
    """Give silent challenger predictions the label of the answered prediction.

    Feedback names the prediction the client received; the shadow prediction made for the
    same product in the same request (same `request_id`, `productid` and `designation`, the
    pairing of `abtest report`) gets its label.
    """
    records = records.copy()
    shadow = records["shadow"].fillna(False).astype(bool)
    if not shadow.any():
        return records
    answered = records.loc[~shadow & records["true_code"].notna()]
    labels = {_pair_key(row): row["true_code"] for row in answered.to_dict("records")}
    keys = [_pair_key(row) for row in records.loc[shadow].to_dict("records")]
    found = [labels.get(key) for key in keys]
    current = records.loc[shadow, "true_code"].tolist()
    records.loc[shadow, "true_code"] = [
        c if c is not None and not _is_nan(c) else f for c, f in zip(current, found, strict=True)
    ]
    return records


def online_quality(records: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> list[QualityRow]:
    """Quality per (model version, variant), most predictions first.

    Args:
        records: one row per prediction of the window (`schema.RECORD_COLUMNS`), `true_code` the
            reviewers' latest code (NaN when none). Shadow predictions get the label of the
            answered one (`propagate_labels_to_shadow`) and are reported as variant
            "<variant> (shadow)".
        n_boot: bootstrap resamples for the F1 interval (0: no interval, faster).
        seed: bootstrap seed.
    """
    if records.empty:
        return []
    records = propagate_labels_to_shadow(records)
    shadow = records["shadow"].fillna(False).astype(bool)
    variant = records["variant"].fillna("champion").astype(str)
    records = records.assign(
        _variant=np.where(shadow, variant + " (shadow)", variant),
        _version=records["model_version"].fillna("unknown").astype(str),
    )
    rows = []
    for (version, group_variant), group in records.groupby(["_version", "_variant"], sort=False):
        rows.append(_quality_of_group(str(version), str(group_variant), group, n_boot, seed))
    return sorted(rows, key=lambda row: (-row.predictions, row.model_version, row.variant))


def _quality_of_group(
    version: str, variant: str, group: pd.DataFrame, n_boot: int, seed: int
) -> QualityRow:
    confidence = pd.to_numeric(group["confidence"], errors="coerce")
    labelled = group[group["true_code"].notna()]
    n = len(labelled)
    expected = _mean_or_none(confidence)
    expected_labelled = _mean_or_none(confidence[group["true_code"].notna()])
    if n == 0:
        return QualityRow(
            version, variant, len(group), 0, None, None, None, None, None, None, expected, None
        )
    y_true = labelled["true_code"].astype("int64").to_numpy()
    y_pred = labelled["prdtypecode"].astype("int64").to_numpy()
    correct = int((y_true == y_pred).sum())
    low, high = wilson_interval(correct, n)
    f1 = weighted_f1(y_true, y_pred)
    f1_low, f1_high = bootstrap_weighted_f1(y_true, y_pred, n_boot=n_boot, seed=seed)
    counts = pd.Series(y_true).value_counts().sort_index()
    return QualityRow(
        model_version=version,
        variant=variant,
        predictions=len(group),
        labels=n,
        accuracy=correct / n,
        accuracy_low=low,
        accuracy_high=high,
        weighted_f1=f1,
        weighted_f1_low=None if math.isnan(f1_low) else f1_low,
        weighted_f1_high=None if math.isnan(f1_high) else f1_high,
        expected_accuracy=expected,
        expected_accuracy_labelled=expected_labelled,
        label_counts={str(code): int(count) for code, count in counts.items()},
    )


def with_window_totals(rows: list[QualityRow], aggregates: pd.DataFrame) -> list[QualityRow]:
    """Quality rows whose prediction counts and expected accuracy cover the whole window.

    `rows` come from `online_quality` on the labelled predictions only (cheap); `aggregates`
    has, per `model_version`, `variant`, `shadow`: `predictions` and `mean_confidence` over
    every prediction of the window. Groups without any label get a row too.
    """
    by_key = {(row.model_version, row.variant): row for row in rows}
    out: list[QualityRow] = []
    for record in aggregates.to_dict("records"):
        variant = str(record["variant"] or "champion")
        if bool(record["shadow"]):
            variant += " (shadow)"
        key = (str(record["model_version"] or "unknown"), variant)
        mean = record["mean_confidence"]
        expected = None if mean is None or _is_nan(mean) else float(mean)
        base = by_key.pop(key, None)
        if base is None:
            base = QualityRow(key[0], key[1], 0, 0, None, None, None, None, None, None, None, None)
        out.append(
            QualityRow(
                **{
                    **asdict(base),
                    "predictions": int(record["predictions"]),
                    "expected_accuracy": expected,
                }
            )
        )
    out.extend(by_key.values())
    return sorted(out, key=lambda row: (-row.predictions, row.model_version, row.variant))


def format_quality(rows: list[QualityRow]) -> str:
    """A text table of `online_quality` rows (for the CLI)."""
    if not rows:
        return "no prediction in the window"
    header = (
        f"{'version':<10} {'variant':<22} {'preds':>7} {'labels':>7} {'accuracy (95% CI)':>22} "
        f"{'weighted F1 (95% CI)':>22} {'expected':>9} {'exp. on labelled':>17}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.model_version:<10} {row.variant:<22} {row.predictions:>7,} {row.labels:>7,} "
            f"{_with_interval(row.accuracy, row.accuracy_low, row.accuracy_high):>22} "
            f"{_with_interval(row.weighted_f1, row.weighted_f1_low, row.weighted_f1_high):>22} "
            f"{_fmt(row.expected_accuracy):>9} {_fmt(row.expected_accuracy_labelled):>17}"
        )
    return "\n".join(lines)


def _with_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mean_or_none(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def _pair_key(row: Mapping[Hashable, Any]) -> tuple[str, str, str]:
    return (str(row.get("request_id")), str(row.get("productid")), str(row.get("designation")))


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
