"""The promotion gate: may a freshly trained challenger replace the champion?

A pure function of two metric dictionaries (measured on the SAME evaluation split) and a
policy read from `params.yaml` (`gate:`). Every check adds a reason, passed or not, so the
decision can be read in the run's tags and in the training summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rakuten_mlops.params import GatePolicy


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why (one reason per check, prefixed PASS/FAIL/INFO)."""

    promote: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (logged as a run artifact)."""
        return asdict(self)


def decide_promotion(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: GatePolicy,
    *,
    champion_note: str | None = None,
) -> GateDecision:
    """Decide whether the challenger becomes champion.

    The challenger must pass every absolute threshold of the policy and, when a champion
    exists, beat its primary metric by at least `policy.min_improvement`. A missing or NaN
    metric fails its check: the gate never promotes on missing evidence.

    Args:
        challenger: metrics of the new model (`weighted_f1`, `macro_f1`, `ece`, ...).
        champion: metrics of the current champion on the same split, or None when there is
            no usable champion.
        policy: the thresholds.
        champion_note: why there is no champion metrics (e.g. "champion v3 could not be
            loaded: ..."), reported among the reasons.
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
    if champion is None or old is None:
        note = champion_note or "no champion yet"
        if champion is not None:
            note = f"champion has no {primary}"
        reasons.append(f"INFO: {note}; promotion depends on the thresholds only")
    elif new is None:
        check(False, f"challenger {primary} is missing, cannot compare with the champion")
    else:
        gain = new - old
        check(
            gain >= policy.min_improvement - 1e-12,
            f"challenger {primary} {new:.4f} vs champion {old:.4f}: "
            f"{gain:+.4f} (required >= {policy.min_improvement:+.4f})",
        )
    return GateDecision(promote=passed, reasons=reasons)
