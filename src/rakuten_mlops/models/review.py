"""When a prediction can be trusted: the review rule a model learns and carries.

A catalogue wants almost every auto-classified listing right and a bounded amount of human
review for the rest. At training time the classifier learns, from products it did not train
on (the held-out scores its fusion is fit on), which predictions reach a target precision
(`review.target_precision` in params.yaml, 0.95 by default) with the highest coverage; the
rule is saved inside the model, so the CLI, batch, Spark and the API flag the same products.

Two rules are fitted and the one that keeps more products without review at the target
precision on the half of the held-out products it was not fitted on (2-fold, both ways) is
kept, then refitted on all of them:

* `global`: one threshold on the top-1 probability;
* `per_class`: the probability of being right, per predicted class (isotonic in the top-1
  probability, shrunk towards the global curve for classes with few held-out products),
  with one threshold on it; this is one threshold on the top-1 probability per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

KINDS = ("global", "per_class")
DEFAULT_TARGET_PRECISION = 0.95
# Held-out products of a class weigh this much against the global curve (shrinkage).
SHRINK_PRODUCTS = 40
# The per-class rule is chosen when, out of sample, it keeps this much more of the products
# and is as precise as the global one (or the target) within the tolerance (about the
# sampling noise of a precision near 0.95 on half of a validation split).
MIN_COVERAGE_GAIN = 0.02
SELECTION_TOLERANCE = 0.01
# Above any probability: the rule accepts nothing at this threshold.
NEVER = 1.01


@dataclass(frozen=True)
class ReviewRule:
    """Accept a prediction without review when its top-1 probability reaches the threshold
    of its predicted class (`class_thresholds`, else `threshold`)."""

    target_precision: float
    kind: str
    threshold: float
    class_thresholds: dict[int, float] = field(default_factory=dict)
    # What the rule did on the held-out products it was fitted on.
    heldout_products: int = 0
    heldout_precision: float | None = None
    heldout_coverage: float = 0.0
    # The 2-fold estimate that chose the kind (coverage and precision per kind).
    selection: dict[str, dict[str, float]] = field(default_factory=dict)

    def thresholds_for(self, codes: np.ndarray) -> np.ndarray:
        """The threshold of each predicted code."""
        return np.array(
            [self.class_thresholds.get(int(code), self.threshold) for code in codes],
            dtype=np.float64,
        )

    def needs_review(self, codes: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """True where the prediction goes to a reviewer."""
        return np.asarray(confidence, dtype=np.float64) < self.thresholds_for(codes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (class codes as strings)."""
        return {
            "target_precision": self.target_precision,
            "kind": self.kind,
            "threshold": self.threshold,
            "class_thresholds": {str(k): v for k, v in sorted(self.class_thresholds.items())},
            "heldout_products": self.heldout_products,
            "heldout_precision": self.heldout_precision,
            "heldout_coverage": self.heldout_coverage,
            "selection": self.selection,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReviewRule:
        """Read what `to_dict` wrote."""
        return cls(
            target_precision=float(data["target_precision"]),
            kind=str(data["kind"]),
            threshold=float(data["threshold"]),
            class_thresholds={int(k): float(v) for k, v in data["class_thresholds"].items()},
            heldout_products=int(data.get("heldout_products", 0)),
            heldout_precision=data.get("heldout_precision"),
            heldout_coverage=float(data.get("heldout_coverage", 0.0)),
            selection=dict(data.get("selection", {})),
        )


def fit_review_rule(
    confidence: np.ndarray,
    predicted: np.ndarray,
    correct: np.ndarray,
    target_precision: float,
    *,
    seed: int = 0,
) -> ReviewRule:
    """The rule with the highest coverage at `target_precision` (see the module docstring).

    Args:
        confidence: top-1 probability of each held-out product.
        predicted: its predicted code.
        correct: whether the prediction was right.
        target_precision: the precision the auto-accepted products must reach.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.int64)
    correct = np.asarray(correct, dtype=bool)
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(confidence)) % 2 == 0
    selection: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        accepted = hits = 0
        for fit_on in (half, ~half):
            rule = _fit(
                kind, confidence[fit_on], predicted[fit_on], correct[fit_on], target_precision
            )
            test = ~fit_on
            keep = ~rule.needs_review(predicted[test], confidence[test])
            accepted += int(keep.sum())
            hits += int(correct[test][keep].sum())
        selection[kind] = {
            "coverage": accepted / max(len(confidence), 1),
            "precision": hits / accepted if accepted else math.nan,
        }
    # The per-class rule must keep clearly more products out of sample, about as precisely.
    best = "global"
    per_class, single = selection["per_class"], selection["global"]
    as_precise = min(target_precision, _finite(single["precision"], 1.0)) - SELECTION_TOLERANCE
    if (
        per_class["coverage"] >= single["coverage"] + MIN_COVERAGE_GAIN
        and _finite(per_class["precision"], 0.0) >= as_precise
    ):
        best = "per_class"
    rule = _fit(best, confidence, predicted, correct, target_precision)
    keep = ~rule.needs_review(predicted, confidence)
    return ReviewRule(
        target_precision=target_precision,
        kind=best,
        threshold=rule.threshold,
        class_thresholds=rule.class_thresholds,
        heldout_products=len(confidence),
        heldout_precision=float(correct[keep].mean()) if keep.any() else None,
        heldout_coverage=float(keep.mean()) if len(keep) else 0.0,
        selection={k: {m: _finite(v) for m, v in d.items()} for k, d in selection.items()},
    )


def _fit(
    kind: str,
    confidence: np.ndarray,
    predicted: np.ndarray,
    correct: np.ndarray,
    target: float,
) -> ReviewRule:
    if kind == "global":
        return ReviewRule(target, kind, lowest_threshold_reaching(confidence, correct, target))
    overall = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    overall.fit(confidence, correct.astype(np.float64))
    score = overall.predict(confidence)
    curves: dict[int, IsotonicRegression] = {}
    counts: dict[int, int] = {}
    for code in np.unique(predicted):
        members = predicted == code
        counts[int(code)] = int(members.sum())
        curve = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        curve.fit(confidence[members], correct[members].astype(np.float64))
        curves[int(code)] = curve
        weight = counts[int(code)] / (counts[int(code)] + SHRINK_PRODUCTS)
        score[members] = weight * curve.predict(confidence[members]) + (1 - weight) * score[members]
    cut = lowest_threshold_reaching(score, correct, target)
    # The same cut on the global curve, for classes without held-out products.
    grid = np.unique(np.concatenate([confidence, [1.0]]))
    default = _first_reaching(grid, overall.predict(grid), cut)
    thresholds: dict[int, float] = {}
    for code, curve in curves.items():
        weight = counts[code] / (counts[code] + SHRINK_PRODUCTS)
        blended = weight * curve.predict(grid) + (1 - weight) * overall.predict(grid)
        thresholds[code] = _first_reaching(grid, blended, cut)
    return ReviewRule(target, kind, default, thresholds)


def lowest_threshold_reaching(score: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest score whose products (score >= it) still reach `target` precision."""
    if len(score) == 0:
        return NEVER
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    hits = np.cumsum(correct[order])
    # A threshold accepts a whole group of tied scores: look at the end of each group.
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    reaching = ends[hits[ends] / (ends + 1) >= target]
    return float(ranked[reaching[-1]]) if reaching.size else NEVER


def _first_reaching(grid: np.ndarray, curve: np.ndarray, cut: float) -> float:
    """The lowest grid value where the (non-decreasing) curve reaches `cut`."""
    if cut >= NEVER:
        return NEVER
    reached = np.flatnonzero(curve >= cut)
    return float(grid[reached[0]]) if reached.size else NEVER


def _finite(value: float, default: float = -1.0) -> float:
    return value if math.isfinite(value) else default
