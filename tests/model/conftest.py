"""Generated products and a tiny trained classifier, shared by the model tests.

The generators live in `tests/factories.py` (importable from every test folder); this
module turns them into session fixtures: small, distinctive French vocabulary per class,
real JPEGs whose colour depends on the class, the processed-layer contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from factories import COLORS, make_products, tiny_model_params, write_jpeg
from rakuten_mlops.models.pipeline import ProductClassifier


@pytest.fixture(scope="session")
def tiny_params() -> dict[str, Any]:
    """`factories.tiny_model_params()` as a fixture."""
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
