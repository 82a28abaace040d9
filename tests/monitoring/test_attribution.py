"""Drift by modality, tied to the classes whose estimated precision fell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.monitoring.attribution import (
    AttributionOptions,
    affected_classes,
    attribution_summary,
    drift_by_modality,
    modality_of,
)
from rakuten_mlops.schema import CATEGORY_NAMES


def descriptors(
    rows: int, code: str, confidence: float, missing: str, length: float, seed: int
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "predicted_class": [code] * rows,
            "confidence": np.clip(rng.normal(confidence, 0.03, rows), 0, 1),
            "description_missing": [missing] * rows,
            "description_length": rng.normal(length, 20.0, rows),
            "title_upper_share": rng.normal(0.1, 0.02, rows),
        }
    )


COLUMNS = {
    "description_missing": {"drifted": True},
    "description_length": {"drifted": True},
    "title_upper_share": {"drifted": False},
    "predicted_class": {"drifted": True},
    "confidence": {"drifted": False},
}


@pytest.fixture
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    # Class 2583 loses its descriptions and its confidence; class 10 changes nothing;
    # class 40 has too few products now to judge.
    reference = pd.concat(
        [
            descriptors(200, "2583", 0.90, "no", 300.0, 1),
            descriptors(200, "10", 0.85, "no", 250.0, 2),
            descriptors(200, "40", 0.80, "no", 250.0, 3),
        ],
        ignore_index=True,
    )
    current = pd.concat(
        [
            descriptors(60, "2583", 0.62, "yes", 0.0, 4),
            descriptors(60, "10", 0.85, "no", 250.0, 5),
            descriptors(5, "40", 0.30, "yes", 0.0, 6),
        ],
        ignore_index=True,
    )
    return current, reference


def test_columns_are_grouped_by_modality() -> None:
    groups = drift_by_modality(COLUMNS)
    assert groups["text"] == {
        "compared": 2,
        "drifted": ["description_length"],
        "drift_share": 0.5,
    }
    assert groups["missing fields"]["drifted"] == ["description_missing"]
    assert groups["model answers"]["drifted"] == ["predicted_class"]
    assert modality_of("has_image") == "missing fields" and modality_of("x") == "other"


def test_the_class_that_lost_precision_is_named_with_its_descriptors(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    current, reference = frames
    drifted = ["description_missing", "description_length", "predicted_class"]
    classes = affected_classes(current, reference, drifted, AttributionOptions())
    assert [c.code for c in classes] == [2583]
    affected = classes[0]
    assert affected.name == CATEGORY_NAMES[2583]
    assert affected.rows == 60
    assert affected.change == pytest.approx(0.62 - 0.90, abs=0.02)
    assert [d.column for d in affected.descriptors] == [
        "description_missing",
        "description_length",
    ]
    missing = affected.descriptors[0]
    assert (missing.reference, missing.current) == (0.0, 1.0)


def test_the_summary_explains_in_one_sentence(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    current, reference = frames
    summary = attribution_summary(COLUMNS, current, reference)
    assert summary["affected_classes"][0]["code"] == 2583
    assert summary["explanation"].startswith(
        "drift in text (description_length); missing fields (description_missing); "
        "model answers (predicted_class); estimated precision fell for 2583 "
    )
    assert "description_missing 0.00 -> 1.00" in summary["explanation"]


def test_without_confidences_no_class_is_blamed(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    current, reference = frames
    reference = reference.assign(confidence=np.nan)
    assert affected_classes(current, reference, list(COLUMNS)) == []
