"""Evaluate a model on a labelled split: metrics, slices, branches, latency, report files.

`evaluate_predictions` is pure (labels + predictions in, numbers out). The functions that
call a model (`predict_frame`, `score_branches`, `measure_latency`) and the one that writes
files (`write_evaluation_reports`) are kept apart so training, the `evaluate` command and
tests share them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from rakuten_mlops.errors import DataError, ModelError
from rakuten_mlops.evaluation.intervals import wilson_interval
from rakuten_mlops.evaluation.metrics import (
    CalibrationCurve,
    compute_calibration,
    compute_classification_metrics,
    compute_coverage_curve,
    compute_per_class_metrics,
    compute_slice_metrics,
    define_slices,
    find_coverage_at_accuracy,
    summarize_latencies,
)
from rakuten_mlops.evaluation.reports import (
    plot_calibration_curve,
    plot_confusion_matrix,
    plot_coverage_curve,
    render_model_card,
)
from rakuten_mlops.params import EvaluationSettings
from rakuten_mlops.schema import MODEL_INPUT_COLUMNS, TARGET_COL

if TYPE_CHECKING:
    from rakuten_mlops.models.pyfunc import PredictFn


# Report file names (also the MLflow artifact names).
PER_CLASS_CSV = "per_class_metrics.csv"
PER_CLASS_JSON = "per_class_metrics.json"
CONFUSION_PNG = "confusion_matrix.png"
CALIBRATION_PNG = "calibration_curve.png"
COVERAGE_PNG = "accuracy_vs_coverage.png"
COVERAGE_CSV = "accuracy_vs_coverage.csv"
MODEL_CARD_MD = "model_card.md"
EVALUATION_JSON = "evaluation.json"


class BranchScorer(Protocol):
    """What `score_branches` needs of a classifier (ProductClassifier satisfies it)."""

    classes_: np.ndarray

    def predict_branches(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-branch probabilities, NaN rows where a branch does not apply."""
        ...


@dataclass
class EvaluationResult:
    """Everything measured on one split."""

    split: str
    labels: list[int]
    y_true: np.ndarray
    y_pred: np.ndarray
    metrics: dict[str, float]  # weighted_f1, macro_f1, accuracy, n, ece, coverage_at_*
    per_class: pd.DataFrame
    slices: dict[str, dict[str, float]]
    calibration: CalibrationCurve
    coverage: pd.DataFrame
    branches: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)

    def flat_metrics(self, prefix: str | None = None) -> dict[str, float]:
        """Scalar metrics with MLflow-friendly keys, NaN left out.

        Keys: `<split>_weighted_f1`, `<split>_slice_<slice>_weighted_f1`,
        `<split>_branch_<branch>_weighted_f1`, `latency_p50_ms`, ...
        """
        prefix = self.split if prefix is None else prefix
        flat = {f"{prefix}_{k}": v for k, v in self.metrics.items()}
        for name, values in self.slices.items():
            flat.update({f"{prefix}_slice_{name}_{k}": v for k, v in values.items()})
        flat.update({f"{prefix}_branch_{k}": v for k, v in self.branches.items()})
        flat.update({f"latency_{k}": v for k, v in self.latency.items()})
        return {k: float(v) for k, v in flat.items() if not math.isnan(float(v))}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the DVC metrics file), NaN written as null."""
        return _nan_to_none(
            {
                "split": self.split,
                **self.metrics,
                "slices": self.slices,
                "branches": self.branches,
                "latency": self.latency,
            }
        )


def build_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The model input columns of a processed split (`designation`, `description`, ...).

    Raises:
        DataError: `designation` is missing.
    """
    if "designation" not in frame.columns:
        raise DataError("evaluation data has no `designation` column")
    columns = [c for c in MODEL_INPUT_COLUMNS if c in frame.columns]
    model_input = frame[columns].copy()
    for column in ("designation", "description", "image_path"):
        if column in model_input:
            model_input[column] = model_input[column].fillna("").astype(str)
    return model_input


def evaluate_predictions(
    frame: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    split: str = "test",
    settings: EvaluationSettings | None = None,
    labels: list[int] | None = None,
) -> EvaluationResult:
    """Score output-contract predictions against the labels of `frame`.

    Args:
        frame: the labelled rows (processed split: `prdtypecode` and the slice columns).
        predictions: the model's output, same row order (`prdtypecode`, `confidence`).
        labels: the codes reported per class (default: every code seen).

    Raises:
        DataError: no labels, or predictions not aligned with the rows.
    """
    settings = settings or EvaluationSettings()
    if TARGET_COL not in frame.columns:
        raise DataError(f"evaluation data has no `{TARGET_COL}` column")
    if len(predictions) != len(frame):
        raise DataError(f"{len(predictions)} predictions for {len(frame)} evaluation rows")
    y_true = frame[TARGET_COL].to_numpy(dtype=np.int64)
    y_pred = predictions["prdtypecode"].to_numpy(dtype=np.int64)
    confidence = predictions["confidence"].to_numpy(dtype=np.float64)
    correct = y_true == y_pred
    codes = labels or sorted(set(y_true.tolist()) | set(y_pred.tolist()))

    metrics = compute_classification_metrics(y_true, y_pred)
    calibration = compute_calibration(confidence, correct, settings.calibration_bins)
    coverage = compute_coverage_curve(confidence, correct)
    metrics["ece"] = calibration.ece
    for target in settings.coverage_targets:
        metrics[f"coverage_at_{round(target * 100)}"] = find_coverage_at_accuracy(coverage, target)
    if "needs_review" in predictions.columns:
        # The model's review rule: what it accepts without review, and how often it is right.
        keep = ~predictions["needs_review"].to_numpy(dtype=bool)
        accepted, hits = int(keep.sum()), int(correct[keep].sum())
        low, high = wilson_interval(hits, accepted)
        metrics["auto_accept_coverage"] = accepted / len(keep) if len(keep) else 0.0
        metrics["auto_accept_precision"] = hits / accepted if accepted else float("nan")
        metrics["auto_accept_precision_low"] = low
        metrics["auto_accept_precision_high"] = high
    slices = compute_slice_metrics(y_true, y_pred, define_slices(frame, settings.short_title_words))
    return EvaluationResult(
        split=split,
        labels=[int(c) for c in codes],
        y_true=y_true,
        y_pred=y_pred,
        metrics=metrics,
        per_class=compute_per_class_metrics(y_true, y_pred, codes),
        slices=slices,
        calibration=calibration,
        coverage=coverage,
    )


def score_branches(classifier: BranchScorer, frame: pd.DataFrame) -> dict[str, float]:
    """Weighted F1 of each branch on the rows it can score (and the share of those rows).

    Returns:
        `{"sparse_weighted_f1": ..., "image_weighted_f1": ..., "image_coverage": ...}`.
    """
    y_true = frame[TARGET_COL].to_numpy(dtype=np.int64)
    classes = np.asarray(classifier.classes_, dtype=np.int64)
    scores: dict[str, float] = {}
    for name, proba in classifier.predict_branches(build_model_input(frame)).items():
        usable = ~np.isnan(proba).any(axis=1)
        if usable.any():
            pred = classes[np.argmax(proba[usable], axis=1)]
            scores[f"{name}_weighted_f1"] = compute_classification_metrics(y_true[usable], pred)[
                "weighted_f1"
            ]
        if not usable.all():
            scores[f"{name}_coverage"] = float(usable.mean()) if len(usable) else 0.0
    return scores


def predict_frame(predict: PredictFn, frame: pd.DataFrame) -> pd.DataFrame:
    """Run a model on the input columns of a split (any error becomes ModelError)."""
    model_input = build_model_input(frame)
    try:
        predictions = predict(model_input)
    except Exception as exc:  # the model is a black box here: report, do not crash
        raise ModelError(f"the model failed to predict on the evaluation data: {exc}") from exc
    if "prdtypecode" not in predictions or "confidence" not in predictions:
        raise ModelError("the model output lacks `prdtypecode` / `confidence` columns")
    return predictions.reset_index(drop=True)


def measure_latency(
    predict: PredictFn, frame: pd.DataFrame, settings: EvaluationSettings | None = None
) -> dict[str, float]:
    """Single-item p50/p99 latency (ms) and batch throughput (items/s) on a sample."""
    settings = settings or EvaluationSettings()
    model_input = build_model_input(frame)
    if model_input.empty:
        return {}
    rng = np.random.default_rng(settings.seed)
    n_items = min(settings.latency_items, len(model_input))
    picks = rng.choice(len(model_input), size=n_items, replace=False)
    predict(model_input.iloc[[int(picks[0])]])  # warm-up: lazy init must not count
    timings: list[float] = []
    for i in picks:
        start = time.perf_counter()
        predict(model_input.iloc[[int(i)]])
        timings.append(time.perf_counter() - start)
    batch = model_input.iloc[: settings.latency_batch_size]
    start = time.perf_counter()
    predict(batch)
    elapsed = time.perf_counter() - start
    result = summarize_latencies(timings)
    result["batch_items_per_s"] = len(batch) / elapsed if elapsed > 0 else float("nan")
    result["batch_size"] = float(len(batch))
    return result


def evaluate_model(
    predict: PredictFn,
    frame: pd.DataFrame,
    settings: EvaluationSettings,
    *,
    split: str = "test",
    classifier: BranchScorer | None = None,
    labels: list[int] | None = None,
    latency: bool = True,
) -> EvaluationResult:
    """Predict `frame` and score it: metrics, slices, per-branch scores, latency.

    Args:
        predict: model input -> output-contract predictions.
        classifier: the `ProductClassifier` behind `predict`, when reachable, for the
            per-branch scores.
        latency: also time single-item and batch predictions.
    """
    predictions = predict_frame(predict, frame)
    result = evaluate_predictions(frame, predictions, split=split, settings=settings, labels=labels)
    if classifier is not None:
        result.branches = score_branches(classifier, frame)
    if latency:
        result.latency = measure_latency(predict, frame, settings)
    return result


def write_evaluation_reports(
    result: EvaluationResult,
    out_dir: Path,
    *,
    model_name: str,
    data_facts: Mapping[str, Any] | None = None,
    gate_reasons: list[str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write the report files of an evaluation into `out_dir`.

    Returns:
        The written files by artifact name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    per_class_csv = out_dir / PER_CLASS_CSV
    result.per_class.to_csv(per_class_csv, index=False)
    files[PER_CLASS_CSV] = per_class_csv
    files[PER_CLASS_JSON] = _write_json(
        out_dir / PER_CLASS_JSON, result.per_class.to_dict(orient="records")
    )
    files[CONFUSION_PNG] = plot_confusion_matrix(
        result.y_true, result.y_pred, result.labels, out_dir / CONFUSION_PNG
    )
    files[CALIBRATION_PNG] = plot_calibration_curve(result.calibration, out_dir / CALIBRATION_PNG)
    rule = (
        result.metrics.get("auto_accept_coverage", math.nan),
        result.metrics.get("auto_accept_precision", math.nan),
    )
    files[COVERAGE_PNG] = plot_coverage_curve(
        result.coverage, out_dir / COVERAGE_PNG, rule=None if math.isnan(rule[0]) else rule
    )
    coverage_csv = out_dir / COVERAGE_CSV
    result.coverage.to_csv(coverage_csv, index=False)
    files[COVERAGE_CSV] = coverage_csv
    facts = {"split": result.split, "rows": len(result.y_true), **(data_facts or {})}
    card = render_model_card(
        model_name=model_name,
        data=facts,
        metrics=result.metrics,
        slices=result.slices,
        branches=result.branches,
        per_class=result.per_class,
        latency=result.latency,
        gate_reasons=gate_reasons or [],
        extra=extra,
    )
    card_path = out_dir / MODEL_CARD_MD
    card_path.write_text(card, encoding="utf-8")
    files[MODEL_CARD_MD] = card_path
    files[EVALUATION_JSON] = _write_json(out_dir / EVALUATION_JSON, result.to_dict())
    return files


def write_metrics_file(path: Path, payload: Mapping[str, Any]) -> Path:
    """Write a DVC metrics JSON file atomically (NaN as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    _write_json(tmp, payload)
    tmp.replace(path)
    return path


def _write_json(path: Path, payload: Any) -> Path:
    path.write_text(
        json.dumps(_nan_to_none(payload), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    return value
