"""The one interval method of the package: the Wilson score interval of a proportion (scipy's)."""

from __future__ import annotations

from scipy.stats import binomtest


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> list[float]:
    """``[lo, hi]`` Wilson score interval of ``k`` successes in ``n`` trials (``[0, 1]`` for ``n == 0``).

    Unlike a percentile bootstrap it does not collapse to ``[1, 1]`` when every
    item is right, and it needs no resamples (no memory that grows with ``n``).
    """
    if n == 0:
        return [0.0, 1.0]
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(ci.low), float(ci.high)]
