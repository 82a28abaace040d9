"""Drift of production inputs and predictions against the training reference (Evidently).

Pure functions: product frames in, descriptor frames, an Evidently snapshot and a JSON
summary out. Reading the service database, the processed splits and the model, and
writing the reports, live at the edge (`monitoring.runs`, the `monitor drift` command).

A product frame has `designation`, `description`, `has_image` and, when known,
`prdtypecode` (the predicted code, or the label on the reference when no model predicted
it) and `confidence` (top-1 probability). Each product becomes one row of descriptors
(`DRIFT_COLUMNS`): what a merchant's feed looks like (lengths, words, digits, capitals,
missing fields, words the model never saw, images) and what the model answers (class,
confidence). Evidently's `DataDriftPreset` compares their distributions column by column;
the dataset drifts when at least `drift_share` of the columns do.

What the reference learned from must not be measured on the reference itself: a model is
over-confident on its own training rows and knows all their words. So the out-of-vocabulary
rates, predicted classes and confidences of the reference come from held-out products
(`heldout`, the model's predictions on a split it never saw) when given, and a vocabulary
built from the reference is cross-fitted (each half scored against the other half's words).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset

from rakuten_mlops.errors import DataError
from rakuten_mlops.monitoring.attribution import attribution_summary
from rakuten_mlops.schema import TARGET_COL

# Descriptors of one text field, in column order (prefixed with `title_` / `description_`).
TEXT_DESCRIPTORS = ("missing", "length", "words", "digit_share", "upper_share", "oov_rate")
PREDICTED_CLASS = "predicted_class"
CONFIDENCE = "confidence"
HAS_IMAGE = "has_image"
CATEGORICAL_COLUMNS = ("title_missing", "description_missing", HAS_IMAGE, PREDICTED_CLASS)
NUMERICAL_COLUMNS = (
    *(f"title_{d}" for d in TEXT_DESCRIPTORS if d != "missing"),
    *(f"description_{d}" for d in TEXT_DESCRIPTORS if d != "missing"),
    CONFIDENCE,
)
DRIFT_COLUMNS = (
    *(f"title_{d}" for d in TEXT_DESCRIPTORS),
    *(f"description_{d}" for d in TEXT_DESCRIPTORS),
    HAS_IMAGE,
    PREDICTED_CLASS,
    CONFIDENCE,
)
# Descriptors that depend on what was learned from the reference (vocabulary, model).
LEARNED_COLUMNS = ("title_oov_rate", "description_oov_rate", PREDICTED_CLASS, CONFIDENCE)

_WORD_RE = re.compile(r"\w+")
_DIGIT_RE = re.compile(r"\d")
_LETTER_RE = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class DriftOptions:
    """How drift is decided.

    Attributes:
        drift_share: the dataset drifts when at least this share of columns drift. 0.3
            rather than Evidently's 0.5: the 14 descriptors come in groups per field, and a
            feed that changes one or two fields moves 4-8 of them. On the real sample,
            unchanged windows drift on at most 1 column; a window where 60% of the products
            come in capitals without description or image, on 6.
        small_sample_rows: below this many rows on either side, statistical tests
            (Kolmogorov-Smirnov, chi-square: p-value < 0.05) decide each column; from it on,
            distances (normed Wasserstein, Jensen-Shannon: >= 0.1), which do not flag
            negligible differences that large samples make "significant".
        min_rows: fewer current rows than this is not a drift check (`NotEnoughRowsError`).
        vocabulary_min_count: a word joins a vocabulary built from the reference when it
            appears in at least this many products.
        seed: resampling of held-out rows and the cross-fitting halves.
    """

    drift_share: float = 0.3
    small_sample_rows: int = 1000
    min_rows: int = 50
    vocabulary_min_count: int = 2
    seed: int = 0


class NotEnoughRowsError(DataError):
    """Too few products to compare (a clear message, not a crash)."""


@dataclass
class DriftResult:
    """A drift comparison: the Evidently snapshot, its summary, the compared descriptors."""

    snapshot: Snapshot
    summary: dict[str, Any]
    current: pd.DataFrame = field(repr=False)
    reference: pd.DataFrame = field(repr=False)


# ---------------------------------------------------------------------- vocabulary


def tokenize_words(text: str) -> list[str]:
    """Lower-case, accent-free words of a text, as the model's vocabularies store them."""
    return [_fold_word(word) for word in _WORD_RE.findall(text.casefold())]


@lru_cache(maxsize=200_000)
def _fold_word(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def vocabulary_from_texts(texts: Iterable[str], min_count: int = 2) -> frozenset[str]:
    """Words that appear in at least `min_count` of the texts."""
    frequency: Counter[str] = Counter()
    for text in texts:
        frequency.update(set(tokenize_words(text)))
    return frozenset(word for word, n in frequency.items() if n >= min_count)


def vocabulary_from_model(model: object) -> frozenset[str] | None:
    """The word vocabulary of a loaded classifier (title and description words).

    Args:
        model: a `ProductClassifier`, or the MLflow pyfunc model wrapping one.

    Returns:
        The union of the sparse branch's word vocabularies and the neural text branch's
        word features, or None when the model has neither (then build one from the reference).
    """
    classifier = _unwrap_classifier(model)
    word_vocabulary = getattr(classifier, "word_vocabulary", None)
    if not callable(word_vocabulary):
        return None
    return frozenset(word_vocabulary()) or None


def _unwrap_classifier(model: object) -> object | None:
    unwrap = getattr(model, "unwrap_python_model", None)
    if callable(unwrap):
        model = getattr(unwrap(), "classifier", None)
    if model is None or not hasattr(model, "classes_"):
        return None
    return model


# ---------------------------------------------------------------------- descriptors


def text_descriptors(
    texts: Sequence[str], vocabulary: Set[str] | None, prefix: str
) -> pd.DataFrame:
    """Descriptors of one text field (`<prefix>_missing`, `_length`, `_words`, ...).

    Shares are of the characters (digits, capitals among letters) or words (out of the
    vocabulary) of the text; an empty text has 0 for all of them and `missing` "yes".
    `oov_rate` is NaN for every row when no vocabulary is given.
    """
    rows = []
    for value in texts:
        text = value if isinstance(value, str) else ""
        words = _WORD_RE.findall(text)
        letters = len(_LETTER_RE.findall(text))
        rows.append(
            (
                "yes" if not text.strip() else "no",
                float(len(text)),
                float(len(words)),
                len(_DIGIT_RE.findall(text)) / len(text) if text else 0.0,
                _count_upper(text) / letters if letters else 0.0,
            )
        )
    columns = [f"{prefix}_{name}" for name in TEXT_DESCRIPTORS]
    frame = pd.DataFrame.from_records(rows, columns=columns[:-1]) if rows else _empty(columns[:-1])
    frame[columns[-1]] = oov_rates(texts, vocabulary) if len(frame) else []
    return frame


def oov_rates(texts: Sequence[str], vocabulary: Set[str] | None) -> np.ndarray:
    """Share of each text's words outside `vocabulary` (0 for no word; NaN without one)."""
    if vocabulary is None:
        return np.full(len(texts), np.nan)
    rates = np.zeros(len(texts))
    for i, value in enumerate(texts):
        words = tokenize_words(value) if isinstance(value, str) else []
        if words:
            rates[i] = sum(word not in vocabulary for word in words) / len(words)
    return rates


def _count_upper(text: str) -> int:
    """Characters that lower-casing changes (capitals), counted without a Python loop."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters expand when lower-cased
        return sum(ch.isupper() for ch in text)
    original = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return int((original != np.frombuffer(lowered.encode("utf-32-le"), dtype=np.uint32)).sum())


def describe_products(products: pd.DataFrame, vocabulary: Set[str] | None) -> pd.DataFrame:
    """One row of `DRIFT_COLUMNS` per product (same order, fresh RangeIndex).

    Args:
        products: a product frame (see the module docstring). Without `prdtypecode` or
            `confidence`, those columns are NaN.
        vocabulary: the words the model knows (None: NaN out-of-vocabulary rates).

    Raises:
        DataError: `designation` is missing.
    """
    if "designation" not in products.columns:
        raise DataError("products: no `designation` column")
    n = len(products)
    description = (
        products["description"] if "description" in products.columns else pd.Series([""] * n)
    )
    frame = pd.concat(
        [
            text_descriptors(_texts(products["designation"]), vocabulary, "title"),
            text_descriptors(_texts(description), vocabulary, "description"),
        ],
        axis=1,
    )
    has_image = (
        products[HAS_IMAGE].fillna(False).astype(bool).to_numpy()
        if HAS_IMAGE in products.columns
        else np.zeros(n, dtype=bool)
    )
    frame[HAS_IMAGE] = np.where(has_image, "yes", "no")
    frame[PREDICTED_CLASS] = (
        [_code_label(v) for v in products[TARGET_COL]]
        if TARGET_COL in products.columns
        else [None] * n
    )
    frame[CONFIDENCE] = (
        pd.to_numeric(products[CONFIDENCE], errors="coerce").to_numpy(dtype=float)
        if CONFIDENCE in products.columns
        else np.full(n, np.nan)
    )
    return frame.loc[:, list(DRIFT_COLUMNS)]


def reference_descriptors(
    reference: pd.DataFrame,
    *,
    vocabulary: Set[str] | None = None,
    heldout: pd.DataFrame | None = None,
    options: DriftOptions | None = None,
) -> tuple[pd.DataFrame, frozenset[str]]:
    """Descriptors of the reference, and the vocabulary to describe current products with.

    Args:
        reference: the reference products (the training split: labels in `prdtypecode`).
        vocabulary: the model's words; None builds one from the reference, cross-fitted.
        heldout: products the model never saw, with its predictions (`prdtypecode`,
            `confidence`): the reference's learned columns (`LEARNED_COLUMNS`) are resampled
            from them to the reference's length. Without it, the predicted class is the
            reference's label and the confidence is unknown (NaN).
        options: seed and vocabulary threshold.

    Returns:
        (descriptors of the reference, vocabulary for the current products).
    """
    options = options or DriftOptions()
    reference = reference.reset_index(drop=True)
    if vocabulary is None:
        # Each half is described with the other half's words; current products are
        # described with one half's words, so both sides see a vocabulary of the same size.
        half = _halves(reference, options.seed)
        vocab_a = vocabulary_from_texts(
            _all_texts(reference[half == 0]), options.vocabulary_min_count
        )
        vocab_b = vocabulary_from_texts(
            _all_texts(reference[half == 1]), options.vocabulary_min_count
        )
        described = describe_products(reference, vocab_a)
        first = reference[half == 0]
        rows = np.flatnonzero(half == 0)
        described.loc[rows, "title_oov_rate"] = oov_rates(_texts(first["designation"]), vocab_b)
        if "description" in first.columns:
            described.loc[rows, "description_oov_rate"] = oov_rates(
                _texts(first["description"]), vocab_b
            )
        current_vocabulary = vocab_a
    else:
        described = describe_products(reference, vocabulary)
        current_vocabulary = frozenset(vocabulary)
    if heldout is not None and len(heldout):
        learned = describe_products(heldout.reset_index(drop=True), current_vocabulary)
        rng = np.random.default_rng(options.seed)
        picks = rng.choice(len(learned), size=len(described), replace=len(learned) < len(described))
        columns = [c for c in LEARNED_COLUMNS if vocabulary is not None or "oov" not in c]
        for column in columns:
            described[column] = learned[column].to_numpy()[picks]
    return described, current_vocabulary


# ---------------------------------------------------------------------- Evidently


def compare_to_reference(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    vocabulary: Set[str] | None = None,
    heldout: pd.DataFrame | None = None,
    options: DriftOptions | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> DriftResult:
    """Describe current and reference products and compare them with Evidently.

    Args:
        current: recent production products with their predictions.
        reference: the reference products (see `reference_descriptors`).
        vocabulary: the model's words (None: cross-fitted from the reference).
        heldout: held-out products with the model's predictions (see
            `reference_descriptors`).
        options: drift decision settings.
        window: the time window of `current`, written into the summary.

    Raises:
        NotEnoughRowsError: fewer than `options.min_rows` current products or an empty
            reference.
    """
    options = options or DriftOptions()
    check_enough_rows(len(current), options.min_rows)
    if len(reference) == 0:
        raise NotEnoughRowsError("the reference has no products")
    reference_frame, current_vocabulary = reference_descriptors(
        reference, vocabulary=vocabulary, heldout=heldout, options=options
    )
    current_frame = describe_products(current.reset_index(drop=True), current_vocabulary)
    snapshot, columns = run_drift_report(current_frame, reference_frame, options)
    summary = summarize_drift(
        snapshot,
        columns,
        current_frame,
        reference_frame,
        options,
        window=window,
    )
    return DriftResult(snapshot, summary, current_frame, reference_frame)


def check_enough_rows(rows: int, min_rows: int) -> None:
    """Raise `NotEnoughRowsError` when a window has fewer than `min_rows` predictions."""
    if rows < min_rows:
        raise NotEnoughRowsError(
            f"only {rows} prediction(s) in the window, at least {min_rows} are needed for a "
            "drift check: widen the window (--since) or wait for more traffic"
        )


def comparable_columns(current: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """The drift columns with values on both sides (e.g. no confidence without a model)."""
    return [
        column
        for column in DRIFT_COLUMNS
        if current[column].notna().any() and reference[column].notna().any()
    ]


def run_drift_report(
    current: pd.DataFrame, reference: pd.DataFrame, options: DriftOptions | None = None
) -> tuple[Snapshot, list[str]]:
    """Evidently `DataDriftPreset` on the comparable descriptor columns.

    Columns with one and the same value on both sides (no title is ever missing) are not
    sent to Evidently (its tests are undefined there): they did not drift.

    Returns:
        (the snapshot, the compared columns).
    """
    options = options or DriftOptions()
    columns = [
        c
        for c in comparable_columns(current, reference)
        if not _same_constant(c, current, reference)
    ]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c in NUMERICAL_COLUMNS],
        categorical_columns=[c for c in columns if c in CATEGORICAL_COLUMNS],
    )
    small = min(len(current), len(reference)) < options.small_sample_rows
    preset = DataDriftPreset(
        columns=columns,
        drift_share=options.drift_share,
        num_method="ks" if small else "wasserstein",
        cat_method="chisquare" if small else "jensenshannon",
        # A two-valued column (missing or not, image or not): chi-square is unreliable on
        # the few rows of the rare value; the two-proportion Z-test is the standard one.
        per_column_method=(
            {c: "z" for c in columns if c in CATEGORICAL_COLUMNS and c != PREDICTED_CLASS}
            if small
            else None
        ),
    )
    with warnings.catch_warnings():
        # Constant columns (no description at all) make numpy warn in Evidently's plots.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([preset], include_tests=True).run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        )
    return snapshot, columns


def summarize_drift(
    snapshot: Snapshot,
    columns: Sequence[str],
    current: pd.DataFrame,
    reference: pd.DataFrame,
    options: DriftOptions,
    *,
    window: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    """JSON-ready summary of a drift snapshot.

    Keys: `dataset_drift` (bool), `drift_share` (share of drifted columns),
    `drift_share_threshold`, `drifted_columns`, `columns` (per column: `score`, `method`,
    `threshold`, `drifted`, and the current / reference mean), `modalities`,
    `affected_classes` and `explanation` (`monitoring/attribution.py`), `window` (ISO `start`, `end`
    or None), `rows` (`current`, `reference`), `skipped_columns` (not compared: no values
    on one side, or one and the same value on both, such as `title_missing`).
    """
    data = snapshot.dict()
    per_column: dict[str, dict[str, Any]] = {}
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift") and config.get("column") in columns:
            per_column[config["column"]] = {
                "score": _finite(metric.get("value")),
                "method": config.get("method"),
                "threshold": config.get("threshold"),
            }
    for test in data.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in per_column:
            per_column[params["column"]]["drifted"] = test.get("status") == "FAIL"
    for name, entry in per_column.items():
        entry.setdefault("drifted", False)
        entry["current"] = _column_stat(current[name])
        entry["reference"] = _column_stat(reference[name])
    ordered = {name: per_column[name] for name in columns if name in per_column}
    drifted = [name for name, entry in ordered.items() if entry["drifted"]]
    share = len(drifted) / len(ordered) if ordered else 0.0
    return {
        "dataset_drift": bool(ordered) and share >= options.drift_share,
        "drift_share": share,
        "drift_share_threshold": options.drift_share,
        "drifted_columns": drifted,
        "columns": ordered,
        # What drifted by modality, the classes whose estimated precision fell, one sentence.
        **attribution_summary(ordered, current, reference),
        "skipped_columns": [c for c in DRIFT_COLUMNS if c not in ordered],
        "window": {
            "start": window[0].isoformat() if window else None,
            "end": window[1].isoformat() if window else None,
        },
        "rows": {"current": len(current), "reference": len(reference)},
    }


# ---------------------------------------------------------------------- helpers


def _same_constant(column: str, current: pd.DataFrame, reference: pd.DataFrame) -> bool:
    values = pd.concat([current[column], reference[column]]).dropna()
    return values.nunique() == 1


def _texts(values: pd.Series) -> list[str]:
    return [v if isinstance(v, str) else "" for v in values.tolist()]


def _all_texts(frame: pd.DataFrame) -> list[str]:
    descriptions = (
        _texts(frame["description"]) if "description" in frame.columns else [""] * len(frame)
    )
    return [
        f"{title} {description}"
        for title, description in zip(_texts(frame["designation"]), descriptions, strict=True)
    ]


def _halves(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """0/1 per row, from a seeded hash of the title: the same text always in the same half."""
    return np.array(
        [
            hashlib.blake2b(f"{seed}\x00{title}".encode(), digest_size=1).digest()[0] % 2
            for title in _texts(frame["designation"])
        ]
    )


def _code_label(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    try:
        return str(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(value)


def _column_stat(values: pd.Series) -> float | dict[str, float] | None:
    """Mean of a numerical column, share of each value of a categorical one."""
    values = values.dropna()
    if values.empty:
        return None
    if pd.api.types.is_numeric_dtype(values):
        return _finite(float(values.mean()))
    shares = values.astype(str).value_counts(normalize=True)
    return {str(k): round(float(v), 4) for k, v in shares.items()}


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
