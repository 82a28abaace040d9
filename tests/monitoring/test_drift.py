"""Drift descriptors and the Evidently comparison, on the real sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.monitoring.drift import (
    DRIFT_COLUMNS,
    DriftOptions,
    NotEnoughRowsError,
    compare_to_reference,
    describe_products,
    reference_descriptors,
    text_descriptors,
    tokenize_words,
    vocabulary_from_model,
    vocabulary_from_texts,
)


def _halves(products: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(products))
    middle = len(products) // 2
    return products.iloc[order[:middle]], products.iloc[order[middle:]]


def _capitals_feed(products: pd.DataFrame) -> pd.DataFrame:
    feed = products.copy()
    feed["designation"] = feed["designation"].str.upper()
    feed["description"] = ""
    feed["has_image"] = False
    return feed


def test_text_descriptors_measure_each_property() -> None:
    frame = text_descriptors(["ABC def 12", "", "été Piscine"], {"abc", "piscine", "ete"}, "t")
    assert frame["t_missing"].tolist() == ["no", "yes", "no"]
    assert frame["t_length"].tolist() == [10.0, 0.0, 11.0]
    assert frame["t_words"].tolist() == [3.0, 0.0, 2.0]
    assert frame["t_digit_share"].tolist() == pytest.approx([0.2, 0.0, 0.0])
    assert frame["t_upper_share"].tolist() == pytest.approx([0.5, 0.0, 1 / 10])
    # "def" and "12" are unknown; accents and case do not matter ("été" is "ete").
    assert frame["t_oov_rate"].tolist() == pytest.approx([2 / 3, 0.0, 0.0])


def test_describe_products_has_every_column_and_no_vocabulary_means_nan() -> None:
    products = pd.DataFrame(
        {"designation": ["Lot de 3 balles"], "description": [None], "has_image": [True]}
    )
    frame = describe_products(products, None)
    assert list(frame.columns) == list(DRIFT_COLUMNS)
    assert frame.loc[0, "has_image"] == "yes"
    assert frame.loc[0, "description_missing"] == "yes"
    assert np.isnan(frame.loc[0, "title_oov_rate"])
    assert np.isnan(frame.loc[0, "confidence"])


def test_tokenize_matches_the_model_vocabularies() -> None:
    assert tokenize_words("Piscine HORS-SOL été 4x2m") == ["piscine", "hors", "sol", "ete", "4x2m"]
    assert vocabulary_from_texts(["a b", "b c", "c"], min_count=2) == {"b", "c"}


def test_real_unchanged_products_are_not_flagged(sample_products: pd.DataFrame) -> None:
    reference, current = _halves(sample_products, seed=1)
    result = compare_to_reference(current, reference)
    summary = result.summary
    assert summary["dataset_drift"] is False
    assert summary["drifted_columns"] == []
    assert summary["rows"] == {"current": len(current), "reference": len(reference)}
    # Every descriptor was compared except the confidence (no model: unknown on the
    # reference) and the title's absence (never: the same value on both sides).
    assert summary["skipped_columns"] == ["title_missing", "confidence"]
    assert len(summary["columns"]) == len(DRIFT_COLUMNS) - 2


def test_a_small_real_window_is_not_flagged(sample_products: pd.DataFrame) -> None:
    """Under 1000 rows, statistical tests decide: a real window of 300 stays quiet."""
    reference, current = _halves(sample_products, seed=2)
    result = compare_to_reference(current.sample(300, random_state=0), reference)
    assert result.summary["dataset_drift"] is False
    assert result.summary["drift_share"] < 0.25


@pytest.mark.parametrize("rows", [300, 1500])
def test_capital_titles_without_description_or_image_are_flagged(
    sample_products: pd.DataFrame, rows: int, tmp_path: Path
) -> None:
    """Flagged by the statistical tests (300 rows) and by the distances (1500 rows)."""
    reference, current = _halves(sample_products, seed=3)
    feed = _capitals_feed(current.sample(rows, random_state=rows))
    result = compare_to_reference(feed, reference)
    summary = result.summary
    assert summary["dataset_drift"] is True
    assert summary["drift_share"] >= 0.5
    for column in ("title_upper_share", "description_missing", "description_length", "has_image"):
        assert column in summary["drifted_columns"]
    # Unchanged properties are not blamed.
    for column in ("title_length", "title_words", "title_oov_rate"):
        assert column not in summary["drifted_columns"]
    assert summary["columns"]["title_upper_share"]["current"] > 0.9
    expected_method = "ks" if rows < 1000 else "wasserstein"
    assert expected_method in summary["columns"]["title_upper_share"]["method"].lower().replace(
        "k-s", "ks"
    )
    json.dumps(summary)  # JSON-ready
    result.snapshot.save_html(str(tmp_path / "drift.html"))
    assert "title_upper_share" in (tmp_path / "drift.html").read_text(encoding="utf-8")


def test_too_few_rows_is_a_clear_error(sample_products: pd.DataFrame) -> None:
    with pytest.raises(NotEnoughRowsError, match="only 10 prediction"):
        compare_to_reference(sample_products.head(10), sample_products, options=DriftOptions())


def test_reference_vocabulary_is_cross_fitted(sample_products: pd.DataFrame) -> None:
    """Scored against its own words the reference would look unnaturally familiar."""
    reference, current = _halves(sample_products, seed=5)
    described, vocabulary = reference_descriptors(reference)
    own = describe_products(reference, vocabulary_from_texts(reference["designation"]))
    fresh = describe_products(current, vocabulary)
    cross_fitted, naive = described["title_oov_rate"].mean(), own["title_oov_rate"].mean()
    assert naive < 0.75 * fresh["title_oov_rate"].mean()
    assert cross_fitted == pytest.approx(fresh["title_oov_rate"].mean(), rel=0.15)


def test_heldout_predictions_give_the_reference_its_classes_and_confidences(
    sample_products: pd.DataFrame,
) -> None:
    reference = sample_products.head(1000)
    heldout = sample_products.tail(200).assign(prdtypecode=10, confidence=0.75)
    described, _ = reference_descriptors(reference, heldout=heldout)
    assert set(described["predicted_class"]) == {"10"}
    assert described["confidence"].tolist() == [0.75] * 1000
    # The text descriptors stay the reference's own.
    assert described["title_length"].tolist() == [float(len(t)) for t in reference["designation"]]


def test_vocabulary_from_a_served_model(tiny_served_model: tuple[Path, Path]) -> None:
    from rakuten_mlops.models.pyfunc import load_pyfunc_model

    model = load_pyfunc_model(tiny_served_model[0])
    vocabulary = vocabulary_from_model(model)
    assert vocabulary is not None and len(vocabulary) > 20
    assert all(" " not in word and word == word.lower() for word in vocabulary)
    assert vocabulary_from_model(object()) is None


def test_descriptions_cut_short_drift_the_description_text_only(
    sample_products: pd.DataFrame,
) -> None:
    """A real shift in text length alone (same products, descriptions cut to 200
    characters) is named as what it is: description text; titles, images and the class
    mix are not blamed, so the drift does not saturate every column."""
    described = sample_products[sample_products["description"].fillna("").str.strip().ne("")]
    reference, current = _halves(described, seed=4)
    current = current.assign(description=current["description"].str.slice(0, 200))
    summary = compare_to_reference(current.sample(1500, random_state=1), reference).summary
    drifted = set(summary["drifted_columns"])
    assert {"description_length", "description_words"} <= drifted
    assert all(column.startswith("description_") for column in drifted), drifted
    assert summary["drift_share"] < 0.5
    assert summary["modalities"]["text"]["drifted"] == summary["drifted_columns"]
    assert summary["modalities"]["missing fields"]["drifted"] == []
    assert summary["modalities"]["model answers"]["drifted"] == []
    assert summary["explanation"].startswith("drift in text (description_length")
    assert summary["affected_classes"] == []  # no model: no confidence to compare
