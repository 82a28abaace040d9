"""Image branch: a compact CNN trained from scratch on small product images (CPU).

Inputs are `(size, size, 3)` uint8 arrays from `features.image_tensors`. Products without
a usable image never reach this branch; the pipeline marks them unavailable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from tqdm.auto import tqdm

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.history import record_validation
from rakuten_mlops.params import ImageParams

# Per-channel statistics of product photos (mostly white backgrounds), roughly centred.
_MEAN = torch.tensor([0.70, 0.68, 0.66]).view(1, 3, 1, 1)
_STD = torch.tensor([0.30, 0.30, 0.31]).view(1, 3, 1, 1)


class CompactCNN(nn.Module):
    """Conv-BN-ReLU-pool blocks, global average pooling, dropout, linear head.

    One convolution per block keeps a forward pass at ~60 MFLOPs for a 64 px image, so the
    branch trains in under a minute on two CPU cores for the sample's ~600 images.
    """

    def __init__(self, channels: Sequence[int], n_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            previous = width
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(previous, n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of a float batch (N, 3, H, W), already normalised."""
        logits: torch.Tensor = self.head(self.backbone(images))
        return logits


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (tensor - _MEAN) / _STD


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 1/8 of the side (reflect padding)."""
    n, _, height, width = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip.view(n, 1, 1, 1), batch.flip(3), batch)
    pad = max(1, height // 8)
    padded = functional.pad(batch, (pad, pad, pad, pad), mode="reflect")
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    return torch.stack(
        [
            padded[i, :, dy : dy + height, dx : dx + width]
            for i, (dy, dx) in enumerate(shifts.tolist())
        ]
    )


class ImageClassifier:
    """`CompactCNN` trained with AdamW, cosine learning rate, light augmentation."""

    def __init__(self, params: ImageParams, seed: int = 42) -> None:
        self.params = params
        self.seed = seed
        self.net: CompactCNN | None = None
        self.n_classes = 0

    def _build_net(self) -> CompactCNN:
        return CompactCNN(self.params.channels, self.n_classes, self.params.dropout)

    def _load_pretrained(self, net: CompactCNN) -> None:
        path = Path(self.params.pretrained_weights or "")
        if not path.is_file():
            raise ModelError(f"model.image.pretrained_weights: file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise ModelError(f"model.image.pretrained_weights: cannot read {path}: {exc}") from exc
        if not isinstance(state, dict):
            raise ModelError(f"model.image.pretrained_weights: {path} is not a state_dict")
        # The head depends on the classes: only the backbone is reused.
        backbone = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
        try:
            net.backbone.load_state_dict(backbone or state)
        except RuntimeError as exc:
            raise ModelError(
                f"model.image.pretrained_weights: {path} does not match the image CNN "
                f"(channels {list(self.params.channels)}): {exc}"
            ) from exc

    def fit(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        val: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        progress: bool = True,
    ) -> dict[str, list[float]]:
        """Train on uint8 images (N, H, W, 3) with class indices 0..n_classes-1.

        Returns:
            Per-epoch curves: `train_loss`, and `val_loss` / `val_accuracy` when `val` is given.
        """
        p = self.params
        self.n_classes = n_classes
        history: dict[str, list[float]] = {"train_loss": []}
        if val is not None and len(val[1]):
            history.update(val_loss=[], val_accuracy=[])
        data = to_tensor(images)
        target = torch.as_tensor(labels, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = self._build_net()
            if p.pretrained_weights:
                self._load_pretrained(self.net)
            optimizer = torch.optim.AdamW(
                self.net.parameters(), lr=p.learning_rate, weight_decay=p.weight_decay
            )
            n_batches = max(1, (len(data) + p.batch_size - 1) // p.batch_size)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=p.learning_rate, total_steps=max(1, p.epochs * n_batches)
            )
            bar = tqdm(range(p.epochs), desc="image", disable=not progress, unit="epoch")
            for _ in bar:
                self.net.train()
                order = torch.randperm(len(data), generator=generator)
                running = 0.0
                for start in range(0, len(order), p.batch_size):
                    rows = order[start : start + p.batch_size]
                    if len(rows) < 2:  # BatchNorm needs two samples
                        continue
                    batch = _augment(data[rows], generator)
                    loss = functional.cross_entropy(
                        self.net(batch), target[rows], label_smoothing=0.1
                    )
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    running += float(loss.detach()) * len(rows)
                history["train_loss"].append(running / max(1, len(data)))
                postfix = {"loss": f"{history['train_loss'][-1]:.3f}"}
                if "val_loss" in history and val is not None:
                    accuracy = record_validation(history, self.predict_log_proba(val[0]), val[1])
                    postfix["val_acc"] = f"{accuracy:.3f}"
                bar.set_postfix(postfix)
        self.net.eval()
        return history

    def predict_log_proba(self, images: np.ndarray) -> np.ndarray:
        """Log-probabilities (N, K) of uint8 images (N, H, W, 3)."""
        if self.net is None:
            raise ModelError("the image model is not fitted")
        if len(images) == 0:
            return np.zeros((0, self.n_classes))
        self.net.eval()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(images), 256):
                batch = to_tensor(images[start : start + 256])
                outputs.append(functional.log_softmax(self.net(batch), dim=1).numpy())
        return np.concatenate(outputs).astype(np.float64)

    def state(self) -> dict[str, Any]:
        """Sizes and weights, to save with the model."""
        if self.net is None:
            raise ModelError("the image model is not fitted")
        return {"n_classes": self.n_classes, "weights": self.net.state_dict()}

    @classmethod
    def from_state(
        cls, params: ImageParams, state: dict[str, Any], seed: int = 42
    ) -> ImageClassifier:
        """Rebuild a model saved with `state()`."""
        model = cls(params, seed)
        model.n_classes = int(state["n_classes"])
        model.net = model._build_net()
        model.net.load_state_dict(state["weights"])
        model.net.eval()
        return model
