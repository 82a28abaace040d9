"""Evaluation report files: confusion matrix, calibration and coverage plots, model card.

Plotting uses matplotlib's Agg backend through an explicit `Figure` (no pyplot global
state), so reports can be drawn in threads and on machines without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from rakuten_mlops.evaluation.metrics import CalibrationCurve


def plot_confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, labels: Sequence[int], path: Path
) -> Path:
    """Write a row-normalised confusion matrix (recall on the diagonal) as a PNG."""
    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(labels))
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = max(6.0, 0.38 * len(labels) + 2.5)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, [str(c) for c in labels], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [str(c) for c in labels], fontsize=7)
    ax.set_xlabel("predicted prdtypecode")
    ax.set_ylabel("true prdtypecode")
    ax.set_title("Confusion matrix (row-normalised)")
    for i, j in zip(*np.nonzero(matrix), strict=True):
        ax.text(
            j,
            i,
            str(matrix[i, j]),
            ha="center",
            va="center",
            fontsize=5,
            color="white" if normalised[i, j] > 0.5 else "black",
        )
    return _save(fig, path)


def plot_calibration_curve(curve: CalibrationCurve, path: Path) -> Path:
    """Write the reliability diagram of the top-1 confidence (with its ECE) as a PNG."""
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    centers = (curve.bin_edges[:-1] + curve.bin_edges[1:]) / 2
    filled = curve.counts > 0
    width = float(curve.bin_edges[1] - curve.bin_edges[0])
    ax.bar(
        centers[filled],
        curve.accuracy[filled],
        width=width * 0.9,
        alpha=0.6,
        edgecolor="black",
        label="accuracy in bin",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(
        curve.mean_confidence[filled],
        curve.accuracy[filled],
        marker="o",
        color="tab:red",
        label="mean confidence vs accuracy",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Calibration (ECE = {curve.ece:.4f})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_coverage_curve(
    curve: pd.DataFrame, path: Path, rule: tuple[float, float] | None = None
) -> Path:
    """Write precision of the auto-accepted items vs the share auto-accepted as a PNG.

    Args:
        curve: one row per confidence threshold (`compute_coverage_curve`).
        rule: (coverage, precision) of the model's own review rule on the same products,
            drawn as a star: where the model stands on the curve.
    """
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    ordered = curve.sort_values("coverage")
    ax.plot(ordered["coverage"], ordered["accuracy"], marker=".", color="tab:blue")
    for threshold in (0.5, 0.7, 0.9):
        row = curve.iloc[(curve["threshold"] - threshold).abs().argsort()[:1]]
        if len(row) and not np.isnan(row["accuracy"].iloc[0]):
            x, y = float(row["coverage"].iloc[0]), float(row["accuracy"].iloc[0])
            ax.scatter([x], [y], color="tab:red", zorder=3)
            ax.annotate(
                f"p >= {threshold:.1f}", (x, y), textcoords="offset points", xytext=(5, -12)
            )
    if rule is not None and not any(np.isnan(v) for v in rule):
        ax.scatter([rule[0]], [rule[1]], marker="*", s=220, color="tab:orange", zorder=4)
        ax.annotate(
            f"review rule: {rule[1]:.1%} at {rule[0]:.0%} coverage",
            rule,
            textcoords="offset points",
            xytext=(-150, 12),
        )
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share auto-accepted)")
    ax.set_ylabel("precision of the auto-accepted items")
    ax.set_title("Precision vs coverage by confidence threshold")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_training_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path | None:
    """Write the per-epoch curves of the classifier (one panel per branch); None if empty."""
    series = {k: list(v) for k, v in history.items() if len(v)}
    if not series:
        return None
    branches = sorted({key.split("/", 1)[0] for key in series})
    fig = Figure(figsize=(5.5 * len(branches), 4))
    for i, branch in enumerate(branches, start=1):
        ax = fig.add_subplot(1, len(branches), i)
        for key, values in sorted(series.items()):
            if key.split("/", 1)[0] == branch:
                ax.plot(range(1, len(values) + 1), values, marker=".", label=key.split("/", 1)[-1])
        ax.set_title(branch)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def render_model_card(
    *,
    model_name: str,
    data: Mapping[str, Any],
    metrics: Mapping[str, float],
    slices: Mapping[str, Mapping[str, float]],
    branches: Mapping[str, float],
    per_class: pd.DataFrame,
    latency: Mapping[str, float],
    gate_reasons: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
) -> str:
    """The model card as markdown: data, metrics, slices, limits, intended use.

    Args:
        data: facts about the evaluation data (split name, rows, fingerprint, ...).
        metrics: headline metrics (`weighted_f1`, `macro_f1`, `accuracy`, `ece`, ...).
        slices: per-slice headline metrics.
        branches: weighted F1 of each branch of the classifier.
        per_class: the frame of `compute_per_class_metrics`.
        latency: inference latency figures.
        gate_reasons: the promotion gate's reasons, when known.
        extra: more "key: value" facts (run id, git commit, ...).
    """
    lines = [f"# Model card: {model_name}", ""]
    lines += [
        "## Intended use",
        "Assign one of the 27 Rakuten France product type codes (`prdtypecode`) to a product "
        "from its French title, optional description and optional image, to pre-fill the "
        "catalogue category. Predictions whose confidence is below the operating threshold "
        "should go to a human reviewer (see the accuracy-vs-coverage curve).",
        "",
        "## Data",
    ]
    lines += [f"- {key}: {value}" for key, value in data.items()]
    if extra:
        lines += [f"- {key}: {value}" for key, value in extra.items()]
    lines += ["", "## Metrics", "| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value, key)} |" for key, value in metrics.items()]
    if branches:
        lines += ["", "### Per branch (weighted F1)", "| branch | weighted F1 |", "| --- | --- |"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in branches.items()]
    if slices:
        lines += [
            "",
            "### Slices",
            "| slice | rows | weighted F1 | macro F1 | accuracy |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {name} | {int(m.get('n', 0))} | {_fmt(m.get('weighted_f1'))} | "
            f"{_fmt(m.get('macro_f1'))} | {_fmt(m.get('accuracy'))} |"
            for name, m in slices.items()
        ]
    if latency:
        lines += ["", "### Inference latency (CPU)"]
        lines += [f"- {key}: {_fmt(value, key)}" for key, value in latency.items()]
    if len(per_class):
        worst = per_class[per_class["support"] > 0].nsmallest(5, "f1")
        lines += ["", "### Weakest classes (F1)", "| code | category | F1 | support |"]
        lines += ["| --- | --- | --- | --- |"]
        lines += [
            f"| {code} | {category} | {f1:.4f} | {support} |"
            for code, category, f1, support in zip(
                worst["prdtypecode"], worst["category"], worst["f1"], worst["support"], strict=True
            )
        ]
    if gate_reasons:
        lines += ["", "## Promotion gate"] + [f"- {reason}" for reason in gate_reasons]
    lines += [
        "",
        "## Limits",
        "- Trained on French merchant texts of the Rakuten France catalogue; other languages "
        "or marketplaces are out of scope.",
        "- Most products of the development sample have no image; the image branch is weak "
        "and the prediction falls back to text only when the image is missing or unreadable.",
        "- Rows whose text was truncated at the source (`text_origin` other than `full`) score "
        "lower; compare with published numbers on the `text_origin_full` slice.",
        "- Category names are an unofficial community mapping of the codes.",
        "- Scores are measured on a random split of the same catalogue period; drift in the "
        "product mix or wording is not reflected.",
        "",
    ]
    return "\n".join(lines)


_COUNT_KEYS = frozenset({"n", "batch_size"})


def _fmt(value: object, key: str = "") -> str:
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "n/a"
        return str(int(value)) if key in _COUNT_KEYS else f"{float(value):.4f}"
    return "n/a" if value is None else str(value)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path
