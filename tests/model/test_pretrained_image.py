"""The image branch can start from a local pretrained backbone (`model.image.pretrained_weights`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.image import CompactCNN, ImageClassifier
from rakuten_mlops.params import ImageParams

CHANNELS = (4, 8)


def _images(n: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3


def _save_backbone(path: Path, n_classes: int = 11) -> CompactCNN:
    torch.manual_seed(123)
    donor = CompactCNN(CHANNELS, n_classes=n_classes, dropout=0.0)
    torch.save(donor.state_dict(), path)
    return donor


def test_backbone_weights_are_loaded_and_head_is_new(tmp_path: Path) -> None:
    weights = tmp_path / "backbone.pt"
    donor = _save_backbone(weights)
    params = ImageParams(channels=CHANNELS, epochs=0, pretrained_weights=str(weights))
    model = ImageClassifier(params, seed=1)
    model.fit(*_images(6), n_classes=3, progress=False)

    assert model.net is not None
    loaded = model.net.backbone.state_dict()
    for name, tensor in donor.backbone.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    # The donor had 11 classes: the head is built for this task's 3.
    assert model.net.head[-1].out_features == 3


def test_without_pretrained_weights_the_backbone_differs(tmp_path: Path) -> None:
    weights = tmp_path / "backbone.pt"
    donor = _save_backbone(weights)
    model = ImageClassifier(ImageParams(channels=CHANNELS, epochs=0), seed=1)
    model.fit(*_images(6), n_classes=3, progress=False)
    assert model.net is not None
    first = "0.weight"
    assert not torch.equal(
        model.net.backbone.state_dict()[first], donor.backbone.state_dict()[first]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"not a torch file", "cannot read"),
        ("other-architecture", "does not match"),
    ],
)
def test_bad_pretrained_weights_are_refused_with_a_clear_error(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    weights = tmp_path / "backbone.pt"
    if isinstance(content, bytes):
        weights.write_bytes(content)
    elif content == "other-architecture":
        torch.save(CompactCNN((5, 7), n_classes=3, dropout=0.0).state_dict(), weights)
    params = ImageParams(channels=CHANNELS, epochs=0, pretrained_weights=str(weights))
    with pytest.raises(ModelError, match=message):
        ImageClassifier(params).fit(*_images(6), n_classes=3, progress=False)
