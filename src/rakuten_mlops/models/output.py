"""The prediction output contract: the columns every prediction path writes.

The pyfunc, `predict` (batch), the API and Spark scoring all build their rows here:
`prdtypecode`, `category`, `confidence` (= top-1 probability), `needs_review` (the model's
review rule: `models/review.py`), `top_k_code` / `top_k_proba` for k = 1..3 (code -1 and
probability 0 when the model knows fewer classes), `has_image`.
The column names are `schema.OUTPUT_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.models.review import ReviewRule
from rakuten_mlops.schema import CATEGORY_NAMES, OUTPUT_COLUMNS

TOP_K = 3
# A model without a review rule (trained before models carried one) flags its predictions
# under this top-1 probability.
DEFAULT_REVIEW_THRESHOLD = 0.5
# The pandas dtype of each output column, in the order of `schema.OUTPUT_COLUMNS`.
OUTPUT_DTYPES: dict[str, str] = dict(
    zip(
        OUTPUT_COLUMNS,
        (
            "int64",  # prdtypecode
            "object",  # category
            "float64",  # confidence
            "bool",  # needs_review
            *("int64", "float64") * TOP_K,  # top_k_code, top_k_proba
            "bool",  # has_image
        ),
        strict=True,
    )
)


def category_name(code: int) -> str:
    """Human-readable name of a product type code (the code itself when unknown)."""
    return CATEGORY_NAMES.get(int(code), str(code))


def empty_output(index: pd.Index) -> pd.DataFrame:
    """The prediction output contract with no row (typed columns, given index)."""
    return pd.DataFrame(
        {name: pd.Series([], dtype=dtype) for name, dtype in OUTPUT_DTYPES.items()}, index=index
    )


@dataclass(frozen=True)
class TopPredictions:
    """The top-3 of each row: `codes` (n, 3) int64 (-1 when the model knows fewer classes),
    `probs` (n, 3) float64 (0 for those), `has_image` (n,) bool (the image was used),
    `needs_review` (n,) bool (the review rule sends it to a reviewer)."""

    codes: np.ndarray
    probs: np.ndarray
    has_image: np.ndarray
    needs_review: np.ndarray


def top_predictions(
    probs: np.ndarray,
    classes: np.ndarray,
    has_image: np.ndarray,
    rule: ReviewRule | None = None,
) -> TopPredictions:
    """The top-3 codes and probabilities of fused probabilities (n, n_classes), flagged for
    review by `rule` (without one: under `DEFAULT_REVIEW_THRESHOLD`)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    rows = np.arange(len(probs))[:, None]
    top = order[:, :TOP_K]
    top_probs = probs[rows, top].astype(np.float64)
    top_codes = classes[top].astype(np.int64)
    if top.shape[1] < TOP_K:
        pad = TOP_K - top.shape[1]
        top_codes = np.pad(top_codes, ((0, 0), (0, pad)), constant_values=-1)
        top_probs = np.pad(top_probs, ((0, 0), (0, pad)), constant_values=0.0)
    review = (
        rule.needs_review(top_codes[:, 0], top_probs[:, 0])
        if rule is not None
        else top_probs[:, 0] < DEFAULT_REVIEW_THRESHOLD
    )
    return TopPredictions(
        top_codes, top_probs, np.asarray(has_image, dtype=bool), np.asarray(review, dtype=bool)
    )


def build_output(top: TopPredictions, index: pd.Index | Sequence[Any]) -> pd.DataFrame:
    """The prediction output contract of `top`.

    Columns: prdtypecode, category, confidence (= top-1 probability), needs_review,
    top_k_code / top_k_proba for k = 1..3 (code -1 and probability 0 when fewer classes),
    has_image.
    """
    columns: dict[str, Any] = {
        "prdtypecode": top.codes[:, 0],
        "category": [category_name(code) for code in top.codes[:, 0]],
        "confidence": top.probs[:, 0],
        "needs_review": top.needs_review,
    }
    for k in range(TOP_K):
        columns[f"top_{k + 1}_code"] = top.codes[:, k]
        columns[f"top_{k + 1}_proba"] = top.probs[:, k]
    columns["has_image"] = top.has_image
    return pd.DataFrame(columns, index=index if isinstance(index, pd.Index) else pd.Index(index))
