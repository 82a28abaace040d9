"""Champion vs challenger on the service's records: pure functions, no I/O.

Two designs, both read from the prediction records joined with feedback:

* `split`: each variant answered its own share of traffic; labelled predictions of each are
  compared unpaired (accuracy two-proportion z-test, bootstrap CI of each weighted F1 and of
  their difference).
* `shadow`: the challenger predicted the same requests silently; pairs (same request, same
  product) give the agreement rate, and the champion's feedback scores both on the same
  items (McNemar's exact test on the discordant pairs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05
VARIANTS = ("champion", "challenger")


@dataclass(frozen=True)
class VariantScores:
    """What one variant did."""

    variant: str
    predictions: int
    labelled: int
    accuracy: float | None
    weighted_f1: float | None
    weighted_f1_ci: tuple[float, float] | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    model_versions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ABTestReport:
    """The comparison and its verdict."""

    design: str  # "split", "shadow" or "none"
    champion: VariantScores
    challenger: VariantScores
    paired: int
    agreement: float | None
    accuracy_difference: float | None
    f1_difference: float | None
    f1_difference_ci: tuple[float, float] | None
    test: str | None
    p_value: float | None
    significant: bool | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    def summary(self) -> str:
        """A human-readable table and the verdict."""
        lines = [f"design: {self.design}"]
        header = f"{'':<12}{'preds':>8}{'labels':>8}{'accuracy':>10}{'wF1':>8}  {'wF1 95% CI':<17}{'p50 ms':>8}{'p95 ms':>8}"
        lines.append(header)
        for s in (self.champion, self.challenger):
            interval = (
                f"[{s.weighted_f1_ci[0]:.3f}, {s.weighted_f1_ci[1]:.3f}]"
                if s.weighted_f1_ci
                else "-"
            )
            lines.append(
                f"{s.variant:<12}{s.predictions:>8}{s.labelled:>8}{_fmt(s.accuracy):>10}"
                f"{_fmt(s.weighted_f1):>8}  {interval:<17}{_fmt(s.latency_p50_ms, 1):>8}"
                f"{_fmt(s.latency_p95_ms, 1):>8}"
            )
        if self.agreement is not None:
            lines.append(f"agreement: {self.agreement:.3f} on {self.paired} paired predictions")
        if self.f1_difference is not None:
            diff = self.f1_difference_ci
            ci_text = f" (95% CI [{diff[0]:+.3f}, {diff[1]:+.3f}])" if diff else ""
            lines.append(f"weighted F1 challenger - champion: {self.f1_difference:+.3f}{ci_text}")
        if self.p_value is not None:
            lines.append(f"{self.test}: p = {self.p_value:.4f}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def weighted_f1(y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int]) -> float:
    """Support-weighted F1 over the true labels (sklearn's `average="weighted"`,
    `zero_division=0`), fast enough for thousands of bootstrap resamples."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if len(true) == 0:
        return 0.0
    labels, true_idx = np.unique(true, return_inverse=True)
    support = np.bincount(true_idx, minlength=len(labels)).astype(float)
    pred_idx = np.searchsorted(labels, pred)
    known = (pred_idx < len(labels)) & (labels[np.minimum(pred_idx, len(labels) - 1)] == pred)
    tp = np.bincount(true_idx[true == pred], minlength=len(labels)).astype(float)
    predicted = np.bincount(pred_idx[known], minlength=len(labels)).astype(float)
    denominator = support + predicted  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float((f1 * support).sum() / support.sum())


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def bootstrap_f1_ci(
    y_true: Sequence[int], y_pred: Sequence[int], n_bootstrap: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the weighted F1 (None under 2 labels)."""
    if len(y_true) < 2:
        return None
    rng = np.random.default_rng(seed)
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    scores = [
        weighted_f1(true[idx], pred[idx])
        for idx in (rng.integers(0, len(true), len(true)) for _ in range(n_bootstrap))
    ]
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def mcnemar_exact(champion_correct: Sequence[bool], challenger_correct: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value on paired outcomes (1.0 with no discordant pair)."""
    b = sum(1 for a, c in zip(champion_correct, challenger_correct, strict=True) if a and not c)
    c = sum(1 for a, d in zip(champion_correct, challenger_correct, strict=True) if d and not a)
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)


def two_proportion_p(success_a: int, n_a: int, success_b: int, n_b: int) -> float | None:
    """Two-sided p-value of a two-proportion z-test (None when undefined)."""
    if n_a == 0 or n_b == 0:
        return None
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (success_b / n_b - success_a / n_a) / se
    return float(2 * stats.norm.sf(abs(z)))


def _scores(
    variant: str, rows: Sequence[Mapping[str, Any]], n_bootstrap: int, seed: int
) -> VariantScores:
    labelled = [r for r in rows if r.get("label") is not None]
    y_true = [int(r["label"]) for r in labelled]
    y_pred = [int(r["prdtypecode"]) for r in labelled]
    latencies = [float(r["latency_ms"]) for r in rows if r.get("latency_ms") is not None]
    return VariantScores(
        variant=variant,
        predictions=len(rows),
        labelled=len(labelled),
        accuracy=float(np.mean(np.equal(y_true, y_pred))) if labelled else None,
        weighted_f1=weighted_f1(y_true, y_pred) if labelled else None,
        weighted_f1_ci=bootstrap_f1_ci(y_true, y_pred, n_bootstrap, seed),
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else None,
        model_versions=sorted({str(r.get("model_version")) for r in rows}),
    )


def _pair_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row.get("request_id"), row.get("productid"), row.get("designation"))


def compare_variants(
    rows: Sequence[Mapping[str, Any]], n_bootstrap: int = 1000, seed: int = 0
) -> ABTestReport:
    """Compare the variants in prediction records.

    Args:
        rows: prediction records with `variant`, `shadow`, `prdtypecode`, `label` (the
            latest feedback code or None), `latency_ms`, `request_id`, `productid`,
            `designation`, `model_version` (as `crud.predictions_with_feedback` returns).
    """
    champion_rows = [r for r in rows if r["variant"] == "champion" and not r["shadow"]]
    challenger_rows = [r for r in rows if r["variant"] == "challenger"]
    shadow_rows = [r for r in challenger_rows if r["shadow"]]
    champion = _scores("champion", champion_rows, n_bootstrap, seed)
    design = "shadow" if shadow_rows else ("split" if challenger_rows else "none")

    if design == "shadow":
        by_key = {_pair_key(r): r for r in shadow_rows}
        pairs = [(r, by_key[_pair_key(r)]) for r in champion_rows if _pair_key(r) in by_key]
        # The label was given on the champion's answer: it scores both predictions.
        scored_challenger = [{**s, "label": c.get("label")} for c, s in pairs]
        challenger = _scores("challenger", scored_challenger, n_bootstrap, seed)
        challenger = VariantScores(**{**asdict(challenger), "predictions": len(shadow_rows)})
        agreement = (
            float(np.mean([c["prdtypecode"] == s["prdtypecode"] for c, s in pairs]))
            if pairs
            else None
        )
        labelled = [(c, s) for c, s in pairs if c.get("label") is not None]
        champion_paired = _scores("champion", [c for c, _ in pairs], n_bootstrap, seed)
        p_value = (
            mcnemar_exact(
                [c["prdtypecode"] == c["label"] for c, _ in labelled],
                [s["prdtypecode"] == c["label"] for c, s in labelled],
            )
            if labelled
            else None
        )
        test = "McNemar exact test (paired)"
        base_accuracy, base_f1 = champion_paired.accuracy, champion_paired.weighted_f1
        diff_ci = _paired_f1_diff_ci(labelled, n_bootstrap, seed)
        paired = len(pairs)
    else:
        challenger = _scores("challenger", challenger_rows, n_bootstrap, seed)
        agreement, paired, diff_ci = None, 0, None
        p_value = two_proportion_p(
            round((champion.accuracy or 0) * champion.labelled),
            champion.labelled,
            round((challenger.accuracy or 0) * challenger.labelled),
            challenger.labelled,
        )
        test = "two-proportion z-test on accuracy (unpaired)"
        base_accuracy, base_f1 = champion.accuracy, champion.weighted_f1
        if champion.labelled >= 2 and challenger.labelled >= 2:
            diff_ci = _unpaired_f1_diff_ci(champion_rows, challenger_rows, n_bootstrap, seed)

    accuracy_diff = (
        challenger.accuracy - base_accuracy
        if challenger.accuracy is not None and base_accuracy is not None
        else None
    )
    f1_diff = (
        challenger.weighted_f1 - base_f1
        if challenger.weighted_f1 is not None and base_f1 is not None
        else None
    )
    significant = None if p_value is None else p_value < ALPHA
    if design == "none":
        verdict = "no challenger predictions: nothing to compare"
    elif p_value is None:
        verdict = "not enough feedback on both variants to compare them"
    elif significant:
        better = "challenger" if (accuracy_diff or 0) > 0 else "champion"
        verdict = f"significant difference (p < {ALPHA}): the {better} is better"
    else:
        verdict = f"no significant difference (p >= {ALPHA}); keep collecting feedback"
    return ABTestReport(
        design=design,
        champion=champion,
        challenger=challenger,
        paired=paired,
        agreement=agreement,
        accuracy_difference=accuracy_diff,
        f1_difference=f1_diff,
        f1_difference_ci=diff_ci,
        test=test if design != "none" else None,
        p_value=p_value,
        significant=significant,
        verdict=verdict,
    )


def _paired_f1_diff_ci(
    labelled: list[tuple[Mapping[str, Any], Mapping[str, Any]]], n_bootstrap: int, seed: int
) -> tuple[float, float] | None:
    if len(labelled) < 2:
        return None
    rng = np.random.default_rng(seed)
    y = np.array([int(c["label"]) for c, _ in labelled])
    a = np.array([int(c["prdtypecode"]) for c, _ in labelled])
    b = np.array([int(s["prdtypecode"]) for _, s in labelled])
    diffs = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(weighted_f1(y[idx], b[idx]) - weighted_f1(y[idx], a[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _unpaired_f1_diff_ci(
    champion_rows: list[Mapping[str, Any]],
    challenger_rows: list[Mapping[str, Any]],
    n_bootstrap: int,
    seed: int,
) -> tuple[float, float] | None:
    rng = np.random.default_rng(seed)

    def arrays(rows: list[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        labelled = [r for r in rows if r.get("label") is not None]
        return (
            np.array([int(r["label"]) for r in labelled]),
            np.array([int(r["prdtypecode"]) for r in labelled]),
        )

    (ya, pa), (yb, pb) = arrays(champion_rows), arrays(challenger_rows)
    diffs = []
    for _ in range(n_bootstrap):
        ia, ib = rng.integers(0, len(ya), len(ya)), rng.integers(0, len(yb), len(yb))
        diffs.append(weighted_f1(yb[ib], pb[ib]) - weighted_f1(ya[ia], pa[ia]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)
