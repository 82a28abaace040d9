"""A small classifier trained in seconds on rows of the real shared sample (tests and bench)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from factories import tiny_model_params
from rakuten_mlops.features.text import clean_text
from rakuten_mlops.models.classifier import Classifier
from rakuten_mlops.models.pipeline import ProductClassifier
from rakuten_mlops.models.pyfunc import load_pyfunc_model, save_pyfunc_model
from rakuten_mlops.schema import (
    IMAGE_TRAIN_DIR,
    INDEX_COL,
    PROCESSED_COLUMNS,
    TARGET_COL,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    image_filename,
)


def sample_products(sample_dir: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` labelled rows of the sample in the processed layout (absolute image paths)."""
    x = pd.read_csv(sample_dir / X_TRAIN_FILE, index_col=0)
    y = pd.read_csv(sample_dir / Y_TRAIN_FILE, index_col=0)
    rows = x.join(y).sample(n=n, random_state=seed)
    images = sample_dir / IMAGE_TRAIN_DIR
    paths = [
        str(images / image_filename(i, p)) if (images / image_filename(i, p)).is_file() else ""
        for i, p in zip(rows["imageid"], rows["productid"], strict=True)
    ]
    frame = pd.DataFrame(
        {
            INDEX_COL: rows.index.to_numpy(dtype="int64"),
            "productid": rows["productid"].to_numpy(dtype="int64"),
            "imageid": rows["imageid"].to_numpy(dtype="int64"),
            "designation": [clean_text(v) for v in rows["designation"]],
            "description": [clean_text(v) for v in rows["description"]],
            "image_path": paths,
            "has_image": [bool(p) for p in paths],
            "text_origin": "full",
            TARGET_COL: rows[TARGET_COL].to_numpy(dtype="int64"),
        }
    )
    return frame[list(PROCESSED_COLUMNS)]


def train_sample_model(sample_dir: Path, out_dir: Path, n: int = 2000) -> Path:
    """Train the real classifier with tiny parameters on `n` sample rows; save it as pyfunc."""
    products = sample_products(sample_dir, n)
    cut = int(len(products) * 0.8)
    train, val = products.iloc[:cut], products.iloc[cut:]
    classifier = ProductClassifier(tiny_model_params(epochs=1), seed=42).fit(
        train, val, progress=False
    )
    return save_pyfunc_model(classifier, out_dir, train)


def pyfunc_round_trip(classifier: Classifier, frame: pd.DataFrame, directory: Path) -> list[str]:
    """Save `classifier` as an MLflow model in `directory`, check that it predicts `frame`
    exactly as the classifier does and names its branches, and return its requirements."""
    path = save_pyfunc_model(classifier, directory, frame)
    predicted = load_pyfunc_model(path).predict(frame)
    pd.testing.assert_frame_equal(pd.DataFrame(predicted), classifier.predict(frame))
    assert mlflow.pyfunc.load_model(str(path)).metadata.metadata["branches"] == (
        classifier.branches
    )
    return (path / "requirements.txt").read_text(encoding="utf-8").split()
