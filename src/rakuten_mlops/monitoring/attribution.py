"""What drifted, by modality, and which classes it hurts.

A drift report lists drifting descriptor columns; an operator needs to know what changed
(the text, the missing fields, the model's answers) and who is affected. This module
groups the drift report's columns by modality and, when the reference carries the model's
held-out answers, ties the drift to the predicted classes whose estimated precision moved:

* estimated precision of a predicted class = the mean calibrated confidence of the products
  predicted in it (confidence-based estimation: no label needed), in the window and in the
  model's held-out reference answers;
* a class is affected when it has at least `min_rows` products in the window and its
  estimated precision fell by at least `min_drop`;
* for each affected class, the drifted descriptors that moved inside the class (a
  standardised mean difference of at least `min_effect` for a number, a change of at least
  `min_effect` / 2.5 in share for a yes/no field) are named: the descriptor explains the
  drop of that class, not merely of the whole window.

Image content is not described (the service keeps no image descriptors): for images the
report says whether they are missing (`has_image`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.schema import CATEGORY_NAMES

MODALITIES: dict[str, tuple[str, ...]] = {
    "text": (
        "title_length",
        "title_words",
        "title_digit_share",
        "title_upper_share",
        "title_oov_rate",
        "description_length",
        "description_words",
        "description_digit_share",
        "description_upper_share",
        "description_oov_rate",
    ),
    "missing fields": ("title_missing", "description_missing", "has_image"),
    "model answers": ("predicted_class", "confidence"),
}
BINARY = frozenset({"title_missing", "description_missing", "has_image"})


@dataclass(frozen=True)
class AttributionOptions:
    """Thresholds of the class attribution (see the module docstring)."""

    min_rows: int = 10
    min_drop: float = 0.05
    min_effect: float = 0.5


@dataclass(frozen=True)
class DescriptorShift:
    """A drifted descriptor inside one predicted class: mean in the window vs reference."""

    column: str
    modality: str
    current: float
    reference: float


@dataclass(frozen=True)
class AffectedClass:
    """A predicted class whose estimated precision fell, and the descriptors behind it."""

    code: int
    name: str
    rows: int
    estimated_precision: float
    reference_precision: float
    descriptors: list[DescriptorShift] = field(default_factory=list)

    @property
    def change(self) -> float:
        """Estimated precision now minus in the reference."""
        return self.estimated_precision - self.reference_precision


def modality_of(column: str) -> str:
    """The modality a drift column describes."""
    for modality, columns in MODALITIES.items():
        if column in columns:
            return modality
    return "other"


def drift_by_modality(columns: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Compared and drifted columns per modality, from a drift summary's `columns`."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in columns.items():
        group = out.setdefault(modality_of(name), {"compared": 0, "drifted": []})
        group["compared"] += 1
        if entry.get("drifted"):
            group["drifted"].append(name)
    for group in out.values():
        group["drift_share"] = len(group["drifted"]) / group["compared"]
    order = [*MODALITIES, "other"]
    return {name: out[name] for name in order if name in out}


def affected_classes(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    drifted: Sequence[str],
    options: AttributionOptions | None = None,
) -> list[AffectedClass]:
    """Predicted classes whose estimated precision fell, worst first, with their descriptors.

    Args:
        current / reference: descriptor frames (`drift.describe_products`) with
            `predicted_class` and `confidence`; the reference's come from the model's
            held-out answers. Without confidences on both sides, no class is attributed.
        drifted: the drifted columns of the report.
    """
    options = options or AttributionOptions()
    if current["confidence"].isna().all() or reference["confidence"].isna().all():
        return []
    descriptors = [c for c in drifted if modality_of(c) in ("text", "missing fields")]
    out = []
    for code, rows in current.groupby("predicted_class"):
        reference_rows = reference[reference["predicted_class"] == code]
        if len(rows) < options.min_rows or len(reference_rows) < options.min_rows:
            continue
        now = float(rows["confidence"].mean())
        before = float(reference_rows["confidence"].mean())
        if before - now < options.min_drop:
            continue
        moved = (
            _shift(rows[column], reference_rows[column], column, options.min_effect)
            for column in descriptors
        )
        shifts = [shift for shift in moved if shift is not None]
        label = int(str(code))
        out.append(
            AffectedClass(
                code=label,
                name=CATEGORY_NAMES.get(label, str(label)),
                rows=len(rows),
                estimated_precision=now,
                reference_precision=before,
                descriptors=shifts,
            )
        )
    return sorted(out, key=lambda c: c.change)


def explain(
    modalities: Mapping[str, Mapping[str, Any]],
    classes: Sequence[AffectedClass],
    *,
    worst: int = 3,
) -> str:
    """One sentence for an alert: what changed, by modality, and the classes it hurts."""
    changed = [
        f"{name} ({', '.join(group['drifted'])})"
        for name, group in modalities.items()
        if group["drifted"]
    ]
    sentence = "drift in " + "; ".join(changed) if changed else "no drifted column"
    if classes:
        parts = []
        for affected in classes[:worst]:
            why = ", ".join(
                f"{d.column} {d.reference:.2f} -> {d.current:.2f}" for d in affected.descriptors
            )
            parts.append(
                f"{affected.code} {affected.name} {affected.reference_precision:.2f} -> "
                f"{affected.estimated_precision:.2f}" + (f" ({why})" if why else "")
            )
        more = f" and {len(classes) - worst} more" if len(classes) > worst else ""
        sentence += "; estimated precision fell for " + "; ".join(parts) + more
    return sentence


def attribution_summary(
    columns: Mapping[str, Mapping[str, Any]],
    current: pd.DataFrame,
    reference: pd.DataFrame,
    options: AttributionOptions | None = None,
) -> dict[str, Any]:
    """JSON-ready `modalities`, `affected_classes` and `explanation` of a drift summary."""
    modalities = drift_by_modality(columns)
    drifted = [name for name, entry in columns.items() if entry.get("drifted")]
    classes = affected_classes(current, reference, drifted, options)
    return {
        "modalities": modalities,
        "affected_classes": [{**asdict(c), "change": c.change} for c in classes],
        "explanation": explain(modalities, classes),
    }


def _values(series: pd.Series, column: str) -> np.ndarray:
    """A descriptor as numbers (a yes/no field: 1.0 for "yes")."""
    kept = series.dropna()
    if column in BINARY:
        return kept.astype(str).eq("yes").to_numpy(dtype=float)
    return kept.astype(float).to_numpy()


def _shift(
    now: pd.Series, before: pd.Series, column: str, min_effect: float
) -> DescriptorShift | None:
    """The descriptor's means in the window and the reference, when it moved enough."""
    a, b = _values(now, column), _values(before, column)
    if a.size == 0 or b.size == 0:
        return None
    current, reference = float(a.mean()), float(b.mean())
    difference = abs(current - reference)
    if column in BINARY:
        moved = difference >= min_effect / 2.5
    else:
        spread = float(np.sqrt((a.var() + b.var()) / 2.0))
        moved = difference / spread >= min_effect if spread > 0 else difference > 0
    return DescriptorShift(column, modality_of(column), current, reference) if moved else None
