"""Exact binomial statistics used by CERTIFY and PREDICT (Cohen et al., 2019).

* ``lower_confidence_bound``: the one-sided (1 - alpha) Clopper–Pearson lower bound on a
  binomial proportion, ``Beta.ppf(alpha; nA, n - nA + 1)``. This is identical to
  ``statsmodels.proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]`` used by the
  reference implementation.
* ``upper_confidence_bound`` / ``clopper_pearson_upper``: the one-sided (1 - alpha) upper bound,
  ``Beta.ppf(1 - alpha; nB + 1, n - nB)`` = 1 - (the lower bound for n - nB successes); 1 when
  nB == n. The two-sided certificate bounds the runner-up class with it.
* ``abstain_test_pvalue``: the two-sided exact binomial test of ``c1 ~ Bin(c1 + c2, 1/2)``
  that PREDICT uses to decide whether to abstain.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import beta, binomtest

from .validation import check_alpha as _check_alpha


def lower_confidence_bound(nA: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound: P(p >= bound) >= 1 - alpha.

    ``beta.ppf(alpha, nA, n - nA + 1)``, and 0 when ``nA == 0``.
    """
    _check_alpha(alpha)
    nA, n = int(nA), int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (0 <= nA <= n):
        raise ValueError(f"nA must be in [0, n], got nA={nA}, n={n}")
    return float(clopper_pearson_lower(np.array([nA]), n, alpha)[0])


def clopper_pearson_lower(nA: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Vectorised form of ``lower_confidence_bound`` over an array of counts ``nA`` (0 where
    nA == 0, where Beta(0, .) is undefined)."""
    nA = np.asarray(nA, dtype=np.int64)
    out = np.zeros(nA.shape, dtype=np.float64)
    pos = nA > 0
    out[pos] = beta.ppf(alpha, nA[pos], n - nA[pos] + 1)
    return out


def clopper_pearson_upper(nB: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bounds, P(p <= bound) >= 1 - alpha, for an array of counts
    ``nB``: ``beta.ppf(1 - alpha, nB + 1, n - nB)``, computed as 1 - the lower bound of the
    complementary count (1 where nB == n)."""
    nB = np.asarray(nB, dtype=np.int64)
    return 1.0 - clopper_pearson_lower(n - nB, n, alpha)


def upper_confidence_bound(nB: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound: P(p <= bound) >= 1 - alpha."""
    _check_alpha(alpha)
    nB, n = int(nB), int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (0 <= nB <= n):
        raise ValueError(f"nB must be in [0, n], got nB={nB}, n={n}")
    return float(clopper_pearson_upper(np.array([nB]), n, alpha)[0])


def abstain_test_pvalue(c1: int, c2: int) -> float:
    """Two-sided p-value of ``binomtest(c1, c1 + c2, 0.5)``; 1.0 when no votes at all."""
    c1, c2 = int(c1), int(c2)
    if c1 + c2 == 0:
        return 1.0
    return float(binomtest(c1, c1 + c2, 0.5).pvalue)
