"""Quality regression on the real shared sample: the classifier must beat the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from rakuten_mlops.evaluation.metrics import compute_calibration
from rakuten_mlops.features.text import clean_text
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.schema import TARGET_COL, X_TRAIN_FILE, Y_TRAIN_FILE


def load_sample_text(sample_dir: Path, n: int) -> pd.DataFrame:
    """`n` labelled products of the sample, cleaned, text only."""
    x = pd.read_csv(sample_dir / X_TRAIN_FILE, index_col=0)
    y = pd.read_csv(sample_dir / Y_TRAIN_FILE, index_col=0)
    frame = x.join(y).sample(n=n, random_state=0)
    return pd.DataFrame(
        {
            "designation": frame["designation"].map(clean_text),
            "description": frame["description"].map(clean_text),
            "image_path": "",
            TARGET_COL: frame[TARGET_COL].astype("int64"),
        }
    ).reset_index(drop=True)


@pytest.mark.slow
def test_text_branches_beat_the_reference_and_stay_calibrated(sample_dir: Path) -> None:
    products = load_sample_text(sample_dir, 8000)
    train, rest = train_test_split(
        products, test_size=0.4, stratify=products[TARGET_COL], random_state=0
    )
    val, test = train_test_split(rest, test_size=0.5, stratify=rest[TARGET_COL], random_state=0)

    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    reference = LinearSVC().fit(
        vectorizer.fit_transform(train["designation"] + " " + train["description"]),
        train[TARGET_COL],
    )
    reference_pred = reference.predict(
        vectorizer.transform(test["designation"] + " " + test["description"])
    )
    reference_f1 = f1_score(test[TARGET_COL], reference_pred, average="weighted")

    classifier = ProductClassifier({"image": {"enabled": False}}, seed=42).fit(
        train, val, progress=False
    )
    probs = classifier.predict_proba(test)
    predicted = classifier.classes_[probs.argmax(axis=1)]
    f1 = f1_score(test[TARGET_COL], predicted, average="weighted")
    ece = compute_calibration(probs.max(axis=1), predicted == test[TARGET_COL].to_numpy()).ece

    # Measured on this 4,800-row training subset: reference 0.696, classifier 0.735, ECE 0.035
    # (on the whole sample the gap is larger: bench/README.md).
    assert f1 > reference_f1 + 0.025, (f1, reference_f1)
    assert ece < 0.06
    branches = classifier.predict_branches(test)
    sparse_f1 = f1_score(
        test[TARGET_COL], classifier.classes_[branches["sparse"].argmax(axis=1)], average="weighted"
    )
    assert f1 > sparse_f1 - 0.01  # the fusion does not lose what the best branch knows
    assert np.isnan(branches["image"]).all()
