"""Generated labelled products shared by every test folder.

Five classes, each with its own small French vocabulary and image colour: learnable in
seconds by the real `ProductClassifier`, but not perfectly (shared words, words of other
classes, a few wrong labels), so scores and probabilities stay informative. The same
generator gives the processed layer (`make_products`) and the official raw layout
(`write_raw_dataset`). Importable as `factories` (pytest `pythonpath = ["tests"]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from rakuten_mlops.schema import (
    IMAGE_TRAIN_DIR,
    INDEX_COL,
    PROCESSED_COLUMNS,
    TARGET_COL,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    image_filename,
)

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
# The columns of the official X_train CSV (after its unnamed index column).
_RAW_X_COLUMNS = ["designation", "description", "productid", "imageid"]


def tiny_model_params(epochs: int = 4) -> dict[str, Any]:
    """`model:` params that train all branches on the generated products in seconds.

    Args:
        epochs: of the text network and of the image network. The default makes both
            branches informative on their own (model tests); fewer is faster, for tests
            that only need a working classifier (the sparse branch carries the text).
    """
    return {
        "sparse": {"svc_c": 0.5},
        # Off in the default model (params.yaml): the tests still cover it.
        "text_nn": {
            "enabled": True,
            "embedding_dim": 16,
            "epochs": epochs,
            "batch_size": 32,
            "learning_rate": 0.02,
        },
        "image": {
            "image_size": 24,
            "channels": [8, 16],
            "epochs": epochs,
            "batch_size": 16,
            "learning_rate": 0.01,
            # No cache: tests must not write under data/interim of the working directory.
            "cache_dir": "",
        },
    }


def write_jpeg(path: Path, color: tuple[int, int, int], seed: int) -> Path:
    """Write a real, noisy JPEG of one colour and return its path."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-30, 30, (IMAGE_SIDE, IMAGE_SIDE, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG")
    return path


def make_products(
    n_per_class: int, seed: int, image_dir: Path, *, label_noise: float = 0.05
) -> pd.DataFrame:
    """Labelled products in the processed contract, an image for every other product.

    Titles mix 2-3 class words, shared words, sometimes a word of another class, and a
    few labels are wrong. Images are written in `image_dir` under their official names
    (`image_filename(imageid, productid)`); indexes start at `seed * 100_000`, so frames
    made with different seeds can share one folder.
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
            index = seed * 100_000 + len(rows)
            productid, imageid = 10_000_000 + index, 20_000_000 + index
            path = ""
            if i % 2 == 0:
                image = image_dir / image_filename(imageid, productid)
                path = str(write_jpeg(image, COLORS[code], seed * 7919 + i))
            rows.append(
                {
                    INDEX_COL: index,
                    "productid": productid,
                    "imageid": imageid,
                    "designation": f"{' '.join(title).capitalize()} {int(rng.integers(1, 500))}",
                    "description": description,
                    "image_path": path,
                    "has_image": bool(path),
                    "text_origin": "full",
                    TARGET_COL: label,
                }
            )
    frame = pd.DataFrame(rows, columns=list(PROCESSED_COLUMNS))
    return frame.astype(
        {INDEX_COL: "int64", "productid": "int64", "imageid": "int64", TARGET_COL: "int64"}
    )


def write_raw_dataset(
    root: Path, n_per_class: int = 40, seed: int = 0, *, label_noise: float = 0.05
) -> Path:
    """Write `make_products` in the official raw layout under `root` and return `root`.

    X/Y CSVs indexed by an unnamed index column, empty descriptions left empty (read back
    as missing, like the official data), JPEGs in `images/image_train`.
    """
    images = root / IMAGE_TRAIN_DIR
    images.mkdir(parents=True)
    products = make_products(n_per_class, seed, images, label_noise=label_noise)
    products = products.set_index(INDEX_COL).rename_axis(None)
    products[_RAW_X_COLUMNS].to_csv(root / X_TRAIN_FILE)
    products[[TARGET_COL]].to_csv(root / Y_TRAIN_FILE)
    return root


# Probabilities of the same products computed in batches of other shapes differ by ~1e-7
# (BLAS kernels and float32 rounding depend on the CPU and the batch size); any real change
# of the input (another text, an image used) moves them by orders of magnitude more.
PROBA_ATOL = 1e-5


def assert_same_prediction(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same top class per row, probabilities within `PROBA_ATOL` (CPU-independent)."""
    actual, expected = np.atleast_2d(actual), np.atleast_2d(expected)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=PROBA_ATOL)
