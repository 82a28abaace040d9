"""Late fusion of the branches into one calibrated probability.

Each branch gives a score matrix (n, K): decision scores or log-probabilities. The fusion
is a log-linear model fit on the validation split by minimising the log-loss:

    logit[i, k] = sum_b w_b * available_b[i] * score_b[i, k] + bias[k]

One weight per branch (it also acts as the temperature, so the result is calibrated) and
one bias per class. A branch that is unavailable for a row (no image) contributes nothing
to that row, so the same model serves products with and without images. Few parameters:
it fits reliably on a few thousand validation rows, and on the ~150 of them with images.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize

from rakuten_mlops.errors import ModelError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, numerically stable."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


def _negative_log_likelihood(
    theta: np.ndarray,
    scores: list[np.ndarray],
    masks: list[np.ndarray],
    labels: np.ndarray,
    bias_l2: float,
    use_bias: bool,
) -> tuple[float, np.ndarray]:
    """Mean log-loss of the fusion and its gradient with respect to (weights, biases)."""
    n_branches = len(scores)
    n, n_classes = scores[0].shape
    weights = theta[:n_branches]
    bias = theta[n_branches:] if use_bias else np.zeros(n_classes)
    logits = np.tile(bias, (n, 1))
    for weight, score, mask in zip(weights, scores, masks, strict=True):
        logits += weight * mask[:, None] * score
    log_probs = log_softmax(logits)
    loss = -log_probs[np.arange(n), labels].mean() + bias_l2 * float(bias @ bias)
    residual = np.exp(log_probs)
    residual[np.arange(n), labels] -= 1.0
    residual /= n
    grad_w = np.array(
        [
            float((residual * (mask[:, None] * score)).sum())
            for score, mask in zip(scores, masks, strict=True)
        ]
    )
    if not use_bias:
        return float(loss), grad_w
    grad_b = residual.sum(axis=0) + 2.0 * bias_l2 * bias
    return float(loss), np.concatenate([grad_w, grad_b])


class LogLinearFusion:
    """Weighted sum of branch scores plus a class bias, fit by maximum likelihood."""

    def __init__(self, branches: list[str], bias_l2: float = 0.01, max_iter: int = 200) -> None:
        if not branches:
            raise ModelError("fusion needs at least one branch")
        self.branches = list(branches)
        self.bias_l2 = bias_l2
        self.max_iter = max_iter
        self.weights = np.ones(len(branches))
        self.bias: np.ndarray | None = None

    def _stack(
        self, scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        missing = [name for name in self.branches if name not in scores]
        if missing:
            raise ModelError(f"fusion: scores missing for branch(es) {', '.join(missing)}")
        n = scores[self.branches[0]].shape[0]
        stacked, mask_list = [], []
        for name in self.branches:
            mask = np.ones(n, dtype=bool) if masks is None or name not in masks else masks[name]
            # NaN rows are unavailable rows (no image): zero them so they add nothing.
            stacked.append(np.where(mask[:, None], np.nan_to_num(scores[name], nan=0.0), 0.0))
            mask_list.append(mask.astype(np.float64))
        return stacked, mask_list

    def fit(
        self,
        scores: Mapping[str, np.ndarray],
        labels: np.ndarray,
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> LogLinearFusion:
        """Fit weights and biases on held-out scores.

        Args:
            scores: branch name -> (n, K) scores of the validation rows.
            labels: class indices 0..K-1 of those rows.
            masks: branch name -> (n,) bool, rows where the branch is available
                (default: all rows).
        """
        stacked, mask_list = self._stack(scores, masks)
        n_classes = stacked[0].shape[1]
        theta0 = np.concatenate([np.ones(len(stacked)), np.zeros(n_classes)])
        result = minimize(
            _negative_log_likelihood,
            theta0,
            args=(stacked, mask_list, labels, self.bias_l2, True),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        self.weights = result.x[: len(stacked)]
        self.bias = result.x[len(stacked) :]
        return self

    def predict_log_proba(
        self, scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Fused log-probabilities, shape (n, K)."""
        if self.bias is None:
            raise ModelError("the fusion is not fitted")
        stacked, _ = self._stack(scores, masks)
        logits = np.tile(self.bias, (stacked[0].shape[0], 1))
        for weight, score in zip(self.weights, stacked, strict=True):
            logits += weight * score
        return log_softmax(logits)

    def state(self) -> dict[str, object]:
        """JSON-serialisable state."""
        return {
            "branches": self.branches,
            "bias_l2": self.bias_l2,
            "max_iter": self.max_iter,
            "weights": self.weights.tolist(),
            "bias": None if self.bias is None else self.bias.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> LogLinearFusion:
        """Rebuild a fusion saved with `state()`."""
        fusion = cls(list(state["branches"]), float(state["bias_l2"]), int(state["max_iter"]))  # type: ignore[call-overload, arg-type]
        fusion.weights = np.asarray(state["weights"], dtype=np.float64)
        bias = state["bias"]
        fusion.bias = None if bias is None else np.asarray(bias, dtype=np.float64)
        return fusion


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """Scale that turns one branch's scores into calibrated probabilities (softmax(scale*s))."""
    stacked = [np.nan_to_num(scores, nan=0.0)]
    masks = [np.ones(scores.shape[0])]
    result = minimize(
        _negative_log_likelihood,
        np.ones(1),
        args=(stacked, masks, labels, 0.0, False),
        jac=True,
        method="L-BFGS-B",
        bounds=[(1e-3, 1e3)],
    )
    return float(result.x[0])
