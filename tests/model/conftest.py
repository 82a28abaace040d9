"""Generated products and a tiny trained classifier, shared by the model tests.

`tiny_model_params()` and the `tiny_products` fixture are also meant for other test
folders (end-to-end training tests): small, distinctive French vocabulary per class, real
JPEGs whose colour depends on the class, the processed-layer contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rakuten_mlops.data.schema import PROCESSED_COLUMNS
from rakuten_mlops.models.pipeline import ProductClassifier

# Five classes, each with its own words; SHARED words appear everywhere.
VOCABULARY: dict[int, list[str]] = {
    10: ["roman", "livre", "poche", "auteur", "chapitre", "édition", "tome"],
    1160: ["carte", "pokemon", "booster", "holo", "rare", "collection", "dracaufeu"],
    1920: ["housse", "couette", "drap", "oreiller", "coton", "rideau", "nappe"],
    2220: ["chien", "chat", "collier", "litière", "croquettes", "niche", "laisse"],
    2583: ["piscine", "gonflable", "pompe", "filtration", "bâche", "chlore", "spa"],
}
SHARED = ["lot", "neuf", "qualité", "couleur", "taille", "promo", "original", "grand"]
COLORS: dict[int, tuple[int, int, int]] = {
    10: (200, 40, 40),
    1160: (40, 200, 40),
    1920: (40, 40, 200),
    2220: (210, 210, 40),
    2583: (40, 200, 210),
}
IMAGE_SIDE = 32


def tiny_model_params() -> dict[str, Any]:
    """`model:` params that train all branches on the generated products in seconds."""
    return {
        "sparse": {"svc_c": 0.5},
        "text_nn": {"embedding_dim": 16, "epochs": 4, "batch_size": 32, "learning_rate": 0.02},
        "image": {
            "image_size": 24,
            "channels": [8, 16],
            "epochs": 4,
            "batch_size": 16,
            "learning_rate": 0.01,
            # No cache: tests must not write under data/interim of the working directory.
            "cache_dir": "",
        },
    }


def write_jpeg(path: Path, color: tuple[int, int, int], seed: int) -> Path:
    """A real, noisy JPEG of one colour."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-30, 30, (IMAGE_SIDE, IMAGE_SIDE, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG")
    return path


def make_products(
    n_per_class: int, seed: int, image_dir: Path, *, label_noise: float = 0.05
) -> pd.DataFrame:
    """Labelled products in the processed contract, an image for every other product.

    Titles mix 2-3 class words, shared words, sometimes a word of another class, and a
    few labels are wrong: learnable but not perfectly, so probabilities are informative.
    """
    rng = np.random.default_rng(seed)
    codes = list(VOCABULARY)
    rows = []
    for code in codes:
        words = VOCABULARY[code]
        for i in range(n_per_class):
            title = rng.choice(words, size=int(rng.integers(2, 4)), replace=False).tolist()
            title += rng.choice(SHARED, size=int(rng.integers(0, 3))).tolist()
            if rng.random() < 0.25:
                other = codes[int(rng.integers(len(codes)))]
                title.append(str(rng.choice(VOCABULARY[other])))
            rng.shuffle(title)
            description = " ".join(rng.choice(words + SHARED, size=6)) if i % 2 else ""
            label = code if rng.random() >= label_noise else codes[int(rng.integers(len(codes)))]
            path = ""
            if i % 2 == 0:
                path = str(
                    write_jpeg(image_dir / f"{seed}_{code}_{i}.jpg", COLORS[code], seed * 7919 + i)
                )
            index = seed * 100_000 + len(rows)
            rows.append(
                {
                    "index": index,
                    "productid": 10_000_000 + index,
                    "imageid": 20_000_000 + index,
                    "designation": f"{' '.join(title).capitalize()} {int(rng.integers(1, 500))}",
                    "description": description,
                    "image_path": path,
                    "has_image": bool(path),
                    "text_origin": "full",
                    "prdtypecode": label,
                }
            )
    frame = pd.DataFrame(rows, columns=list(PROCESSED_COLUMNS))
    return frame.astype(
        {"index": "int64", "productid": "int64", "imageid": "int64", "prdtypecode": "int64"}
    )


@pytest.fixture(scope="session")
def tiny_params() -> dict[str, Any]:
    """`tiny_model_params()` as a fixture (test modules cannot import a conftest)."""
    return tiny_model_params()


@pytest.fixture(scope="session")
def tiny_products(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test) generated products, as `load_split` returns them."""
    image_dir = tmp_path_factory.mktemp("tiny-product-images")
    return (
        make_products(60, seed=1, image_dir=image_dir),
        make_products(30, seed=2, image_dir=image_dir),
        make_products(30, seed=3, image_dir=image_dir),
    )


@pytest.fixture(scope="session")
def tiny_classifier(
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> ProductClassifier:
    """A `ProductClassifier` trained once per session on `tiny_products` (all branches)."""
    train, val, _ = tiny_products
    return ProductClassifier(tiny_model_params(), seed=42).fit(train, val, progress=False)


@pytest.fixture(scope="session")
def class_jpeg() -> Callable[[int, Path, int], Path]:
    """Writes a real JPEG in the colour of a class: `class_jpeg(code, path, seed)`."""

    def write(code: int, path: Path, seed: int = 0) -> Path:
        return write_jpeg(path, COLORS[code], seed)

    return write
