"""The promotion gate: may a freshly trained challenger replace the champion?

A pure function of two metric dictionaries (measured on the SAME evaluation split), an
optional paired comparison on the reviewed products held out from training, and a policy
read from `params.yaml` (`gate:`). Every check adds a reason, passed or not, so the decision
can be read in the run's tags and in the training summary.

With a champion, the challenger must pass the thresholds, must not fall on the test split by
more than `max_test_regression` (the guard), and must be better on ONE of two routes:
- the test split: its primary metric beats the champion's by `min_improvement`;
- reviewed traffic: on at least `min_reviewed` held-out reviewed products it is right
  significantly more often than the champion (exact McNemar, `reviewed_significance`).
The fixed test split says "no worse on the catalogue as it was"; the reviewed products say
"better on the catalogue as it is now", which the test split cannot show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rakuten_mlops.evaluation.abtest import mcnemar_exact
from rakuten_mlops.evaluation.metrics import compute_classification_metrics
from rakuten_mlops.params import GatePolicy


@dataclass(frozen=True)
class ReviewedComparison:
    """Champion and challenger on the same held-out reviewed products (paired).

    Attributes:
        n: products both models answered.
        champion_correct / challenger_correct: how many each got right.
        challenger_only / champion_only: the discordant pairs (right by one model only).
        p_value: two-sided exact McNemar p-value on the discordant pairs.
        champion_weighted_f1 / challenger_weighted_f1: each model's weighted F1 there.
        champion_version: the champion's registry version, when known.
    """

    n: int
    champion_correct: int
    challenger_correct: int
    challenger_only: int
    champion_only: int
    p_value: float
    champion_weighted_f1: float = math.nan
    challenger_weighted_f1: float = math.nan
    champion_version: int | None = None

    @property
    def champion_accuracy(self) -> float:
        """Share of the products the champion got right."""
        return self.champion_correct / self.n if self.n else math.nan

    @property
    def challenger_accuracy(self) -> float:
        """Share of the products the challenger got right."""
        return self.challenger_correct / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, accuracies included."""
        return {
            **asdict(self),
            "champion_weighted_f1": _none_if_nan(self.champion_weighted_f1),
            "challenger_weighted_f1": _none_if_nan(self.challenger_weighted_f1),
            "champion_accuracy": _none_if_nan(self.champion_accuracy),
            "challenger_accuracy": _none_if_nan(self.challenger_accuracy),
        }


def compare_on_reviewed(
    labels: Any, champion_codes: Any, challenger_codes: Any, champion_version: int | None = None
) -> ReviewedComparison:
    """Pair the two models' answers on reviewed products with the reviewers' codes."""
    truth = np.asarray(labels, dtype=np.int64)
    champion_pred = np.asarray(champion_codes, dtype=np.int64)
    challenger_pred = np.asarray(challenger_codes, dtype=np.int64)
    old, new = champion_pred == truth, challenger_pred == truth
    return ReviewedComparison(
        n=int(truth.size),
        champion_correct=int(old.sum()),
        challenger_correct=int(new.sum()),
        challenger_only=int((new & ~old).sum()),
        champion_only=int((old & ~new).sum()),
        p_value=mcnemar_exact(old.tolist(), new.tolist()),
        champion_weighted_f1=compute_classification_metrics(truth, champion_pred)["weighted_f1"],
        challenger_weighted_f1=compute_classification_metrics(truth, challenger_pred)[
            "weighted_f1"
        ],
        champion_version=champion_version,
    )


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why (one reason per check, prefixed PASS/FAIL/INFO).

    `comparisons` holds the numbers behind the champion comparisons: `test` (primary
    metric of both models on the test split) and `reviewed` (a `ReviewedComparison`).
    """

    promote: bool
    reasons: list[str] = field(default_factory=list)
    comparisons: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (logged as a run artifact)."""
        return asdict(self)


def decide_promotion(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: GatePolicy,
    *,
    champion_note: str | None = None,
    reviewed: ReviewedComparison | None = None,
) -> GateDecision:
    """Decide whether the challenger becomes champion.

    The challenger must pass every absolute threshold of the policy. When a champion
    exists, it must also pass the test split guard and one route (module docstring): beat
    the champion's primary metric by `policy.min_improvement`, or be significantly better on
    the reviewed products. A missing or NaN metric fails its check: the gate never promotes
    on missing evidence.

    Args:
        challenger: metrics of the new model (`weighted_f1`, `macro_f1`, `ece`, ...).
        champion: metrics of the current champion on the same split, or None when there is
            no usable champion.
        policy: the thresholds.
        champion_note: why there is no champion metrics (e.g. "champion v3 could not be
            loaded: ..."), reported among the reasons.
        reviewed: both models on the held-out reviewed products (None: none yet).
    """
    reasons: list[str] = []
    passed = True

    def check(ok: bool, message: str) -> None:
        nonlocal passed
        passed = passed and ok
        reasons.append(f"{'PASS' if ok else 'FAIL'}: {message}")

    def value(metrics: Mapping[str, float], name: str) -> float | None:
        raw = metrics.get(name)
        if raw is None:
            return None
        number = float(raw)
        return None if math.isnan(number) else number

    for name, bound, higher_is_better in (
        ("weighted_f1", policy.min_weighted_f1, True),
        ("macro_f1", policy.min_macro_f1, True),
        ("ece", policy.max_ece, False),
    ):
        got = value(challenger, name)
        sign = ">=" if higher_is_better else "<="
        if got is None:
            check(False, f"challenger {name} is missing (required {sign} {bound:.4f})")
            continue
        ok = got >= bound if higher_is_better else got <= bound
        check(ok, f"challenger {name} {got:.4f} {sign} {bound:.4f}")

    primary = policy.primary_metric
    new = value(challenger, primary)
    old = value(champion, primary) if champion is not None else None
    comparisons: dict[str, Any] = {}
    if champion is None or old is None:
        note = champion_note or "no champion yet"
        if champion is not None:
            note = f"champion has no {primary}"
        reasons.append(f"INFO: {note}; promotion depends on the thresholds only")
        if reviewed is not None:
            comparisons["reviewed"] = reviewed.to_dict()
        return GateDecision(promote=passed, reasons=reasons, comparisons=comparisons)
    if new is None:
        check(False, f"challenger {primary} is missing, cannot compare with the champion")
        return GateDecision(promote=False, reasons=reasons, comparisons=comparisons)

    gain = new - old
    comparisons["test"] = {"metric": primary, "champion": old, "challenger": new, "gain": gain}
    check(
        gain >= -policy.max_test_regression - 1e-12,
        f"test split guard: challenger {primary} {new:.4f}, champion {old:.4f}: {gain:+.4f} "
        f"(at most {policy.max_test_regression:.4f} below)",
    )
    routes: list[bool] = []

    def route(ok: bool, message: str) -> None:
        routes.append(ok)
        reasons.append(f"{'PASS' if ok else 'FAIL'}: {message}")

    route(
        gain >= policy.min_improvement - 1e-12,
        f"challenger {primary} {new:.4f} vs champion {old:.4f}: "
        f"{gain:+.4f} (required >= {policy.min_improvement:+.4f})",
    )
    if reviewed is not None:
        comparisons["reviewed"] = reviewed.to_dict()
        if reviewed.n < policy.min_reviewed:
            reasons.append(
                f"INFO: {reviewed.n} held-out reviewed product(s), fewer than "
                f"gate.min_reviewed {policy.min_reviewed}: reviewed traffic does not decide"
            )
        else:
            better = reviewed.challenger_only > reviewed.champion_only
            route(
                better and reviewed.p_value < policy.reviewed_significance,
                f"reviewed traffic ({reviewed.n} held-out products): challenger right on "
                f"{reviewed.challenger_correct}, champion on {reviewed.champion_correct} "
                f"({reviewed.challenger_only} vs {reviewed.champion_only} discordant), "
                f"McNemar p {reviewed.p_value:.4f} (required < "
                f"{policy.reviewed_significance:g}, challenger ahead)",
            )
    if len(routes) > 1:
        reasons.append(
            "INFO: one route is enough: better on the test split OR significantly better "
            "on reviewed traffic"
        )
    return GateDecision(promote=passed and any(routes), reasons=reasons, comparisons=comparisons)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value
