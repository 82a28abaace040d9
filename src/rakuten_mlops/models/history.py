"""Per-epoch training curves shared by the neural branches."""

from __future__ import annotations

import numpy as np


def record_validation(
    history: dict[str, list[float]], log_probs: np.ndarray, labels: np.ndarray
) -> float:
    """Append one epoch's `val_loss` (mean NLL) and `val_accuracy` to `history`.

    Returns:
        The epoch's validation accuracy.
    """
    labels = np.asarray(labels)
    history.setdefault("val_loss", []).append(
        float(-log_probs[np.arange(len(labels)), labels].mean())
    )
    accuracy = float((log_probs.argmax(1) == labels).mean())
    history.setdefault("val_accuracy", []).append(accuracy)
    return accuracy
