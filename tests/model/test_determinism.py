"""Same seed, same data, same params: the same model, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from rakuten_mlops.models.pipeline import ProductClassifier


def test_two_fits_with_the_same_seed_give_identical_probabilities(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tiny_params: dict[str, Any],
) -> None:
    train, val, test = tiny_products
    global_rng = torch.get_rng_state()
    again = ProductClassifier(tiny_params, seed=42).fit(train, val, progress=False)
    # Training does not consume or reseed the caller's global torch RNG.
    assert torch.equal(torch.get_rng_state(), global_rng)
    first = tiny_classifier.predict_branches(test)
    second = again.predict_branches(test)
    for name in ("sparse", "text_nn", "image", "fused"):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert again.history == tiny_classifier.history


def test_another_seed_gives_another_neural_model(
    tiny_classifier: ProductClassifier,
    tiny_products: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tiny_params: dict[str, Any],
) -> None:
    train, val, test = tiny_products
    other = ProductClassifier(tiny_params, seed=7).fit(train, val, progress=False)
    assert not np.array_equal(
        other.predict_branches(test)["text_nn"], tiny_classifier.predict_branches(test)["text_nn"]
    )
