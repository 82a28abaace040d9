"""Confidence intervals of proportions (no scikit-learn: the service imports this too)."""

from __future__ import annotations

import math

_Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = _Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
