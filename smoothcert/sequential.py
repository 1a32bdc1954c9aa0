"""Sequential certification: an anytime-valid confidence sequence for pA and the stopping rule
that ends estimation as soon as the certificate can no longer improve.

**The confidence sequence** (``ConfidenceSequence``). Estimation samples are examined only at a
fixed schedule of cumulative sample counts ("looks") n_1 < n_2 < ... < n_K = n_max, growing
geometrically (default: 64, 96, 144, ... samples, x1.5 a look, 20 looks up to n_max = 100 000).
Look k uses the one-sided Clopper–Pearson bound at level alpha_k, with sum_k alpha_k = alpha.

  *Theorem* (the one-sided Clopper–Pearson bound, Clopper & Pearson, Biometrika 1934, at each
  look, combined by Boole's inequality over the looks -- the Bonferroni bound for repeated
  looks at accumulating data of group-sequential testing). Let
  X_1, X_2, ... be i.i.d. Bernoulli(p) and L_k = CP_lower(S_{n_k}, n_k, alpha_k), where S_n is
  the number of successes among the first n. For each fixed k, P(p < L_k) <= alpha_k (the
  one-sided CP bound is exact-conservative). Hence
      P(there is a k with p < L_k) <= sum_k alpha_k <= alpha,
  and for ANY random look index tau (a stopping time or not: it may depend on all the data),
  P(p < L_tau) <= alpha. The bound therefore survives optional stopping.

The same holds for the upper bounds U_k = CP_upper(S_{n_k}, n_k, alpha_k), which the stopping
rule uses only to decide *when* to stop (an early stop can cost a certificate, never make one
wrong). Spending, mostly on late looks: the final look (the one that matters for inputs running
to n_max) gets ``final_share`` of alpha (default 1/2, so the bound at n_max is CP at alpha/2 -- a
few hundredths of sigma at most below fixed-N CP at alpha); the earlier looks share the rest in
proportion to their sample counts n_k (chosen by simulating the rule on the pA of the MNIST
benchmark: against an equal split it saved ~20% of the samples at sigma = 0.5).

**The stopping rule** (``StoppingRule``), for the top class cA chosen by independent selection
samples as in CERTIFY (Cohen et al., 2019). At look k let L, U be the bounds above and
    reach = CP_lower(nA + ceil((n_max - n_k) * U), n_max, alpha_K),
the lower bound that the samples left up to n_max would give if they came in at rate U -- the
best certificate that is still plausible.

* With a sorted grid of ``radii``: the current level is the largest grid radius r with
  L >= noise.p_lower_needed(r) (radius 0 counts as certified when L >= 1/2, exactly as fixed-N
  CERTIFY certifies when pA_lower >= 1/2), or none (ABSTAIN). Stop when the current level is at
  least the level that ``reach`` allows (this includes "no level at all is reachable", e.g.
  U < 1/2: abstain), or at n_max. The reported radius is that grid radius: a lower bound on the
  radius noise.radius(L) that the same samples certify.
* Without ``radii``: the current radius is noise.radius(L) (ABSTAIN when L < 1/2). Stop when
  noise.radius(reach) - radius <= ``tol`` (default 0.01 sigma), when even ``reach`` < 1/2
  (abstain), or at n_max.

Either way, with probability >= 1 - alpha over the estimation samples, every returned radius is
certified: the prediction cA is returned only with L_tau >= p_lower_needed(radius), and
L_tau <= pA except on the event of probability <= alpha bounded above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import binom

from .stats import clopper_pearson_lower, clopper_pearson_upper
from .validation import ArgumentError, check_alpha, check_float, check_int

DEFAULT_FIRST_LOOK = 64
DEFAULT_GROWTH = 1.5
DEFAULT_FINAL_SHARE = 0.5
DEFAULT_TOL_SIGMAS = 0.01


def look_schedule(n_max: int, first: int = DEFAULT_FIRST_LOOK, growth: float = DEFAULT_GROWTH) -> np.ndarray:
    """Cumulative sample counts of the looks: first, first * growth, first * growth^2, ...
    (rounded up, strictly increasing), the last one being exactly ``n_max``."""
    n_max = check_int("n_max", n_max, 1)
    first = check_int("first", first, 1)
    growth = check_float("growth", growth, 1.0, lo_open=True)
    looks: list[int] = []
    n = float(first)
    while math.ceil(n) < n_max:
        if not looks or math.ceil(n) > looks[-1]:
            looks.append(math.ceil(n))
        n *= growth
    looks.append(n_max)
    return np.asarray(looks, dtype=np.int64)


def alpha_spending(looks: np.ndarray, alpha: float, final_share: float = DEFAULT_FINAL_SHARE) -> np.ndarray:
    """Per-look levels alpha_k summing to ``alpha`` for cumulative counts ``looks``: the last look
    gets ``final_share`` * alpha, the others share the rest in proportion to n_k (all of alpha
    to the last look when there is only one)."""
    looks = np.asarray(looks, dtype=np.float64)
    alpha = check_alpha(alpha)
    final_share = check_float("final_share", final_share, 0.0, 1.0, lo_open=True, hi_open=len(looks) > 1)
    if len(looks) == 1:
        return np.array([alpha])
    early = alpha * (1.0 - final_share) * looks[:-1] / looks[:-1].sum()
    return np.append(early, alpha * final_share)


@dataclass(frozen=True)
class ConfidenceSequence:
    """Anytime-valid bounds on a Bernoulli mean at the looks ``looks`` with levels ``alphas``
    (the union-bound Clopper–Pearson sequence of the module docstring: simultaneously over all
    looks, P(p < lower(S_{n_k}, k) for some k) <= sum(alphas))."""

    looks: np.ndarray
    alphas: np.ndarray

    @classmethod
    def create(cls, n_max: int, alpha: float, *, first: int = DEFAULT_FIRST_LOOK, growth: float = DEFAULT_GROWTH,
               final_share: float = DEFAULT_FINAL_SHARE) -> "ConfidenceSequence":
        looks = look_schedule(n_max, first, growth)
        return cls(looks, alpha_spending(looks, alpha, final_share))

    @property
    def n_max(self) -> int:
        return int(self.looks[-1])

    def lower(self, nA: np.ndarray, k: int) -> np.ndarray:
        """L_k for counts ``nA`` (successes among the first looks[k] samples)."""
        return clopper_pearson_lower(nA, int(self.looks[k]), float(self.alphas[k]))

    def upper(self, nA: np.ndarray, k: int) -> np.ndarray:
        """U_k for counts ``nA``."""
        return clopper_pearson_upper(nA, int(self.looks[k]), float(self.alphas[k]))


def abstain_test_pvalues(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """``stats.abstain_test_pvalue`` vectorised: the two-sided exact binomial test of
    c1 ~ Bin(c1 + c2, 1/2) for c1 >= c2. The null is symmetric, so the p-value is
    min(1, 2 P(X >= c1)); 1 when c1 + c2 == 0."""
    c1, c2 = np.asarray(c1, dtype=np.int64), np.asarray(c2, dtype=np.int64)
    return np.where(c1 + c2 > 0, np.minimum(1.0, 2.0 * binom.sf(c1 - 1, c1 + c2, 0.5)), 1.0)


def check_radii(radii: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """``radii`` as a float64 array (None stays None); ArgumentError("radii") unless it is a
    non-empty, strictly increasing sequence of finite numbers >= 0."""
    if radii is None:
        return None
    try:
        r = np.asarray(radii, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ArgumentError("radii", f"radii must be a sequence of numbers, got {radii!r}") from None
    if r.size == 0:
        raise ArgumentError("radii", "radii must not be empty")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ArgumentError("radii", f"radii must be finite and >= 0, got {r.tolist()}")
    if np.any(np.diff(r) <= 0):
        raise ArgumentError("radii", f"radii must be sorted in increasing order without repeats, got {r.tolist()}")
    return r


@dataclass
class StoppingRule:
    """The stopping rule of the module docstring for one noise, grid (``radii``) or tolerance
    (``tol``), over the confidence sequence ``cs``. ``step`` is vectorised over inputs that are
    all at the same look."""

    noise: Any
    cs: ConfidenceSequence
    radii: np.ndarray | None = None
    tol: float | None = None
    norm: str | None = None  # the certified norm (None: the noise's own)
    dim: int | None = None  # the input dimension (for linf radii)
    _needed: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.radii = check_radii(self.radii)
        if self.tol is None:
            self.tol = DEFAULT_TOL_SIGMAS * float(self.noise.sigma)
        self.tol = check_float("tol", self.tol, 0.0, lo_open=True)
        if self.radii is not None:
            self._needed = np.array([float(self.noise.p_lower_needed(float(r), self.norm, self.dim)) for r in self.radii])

    def _level(self, p_lower: np.ndarray) -> np.ndarray:
        """Index of the largest grid radius certified by ``p_lower`` (-1: none)."""
        return np.searchsorted(self._needed, p_lower, side="right") - 1

    def _radius(self, p_lower: np.ndarray) -> np.ndarray:
        """noise.radius(p_lower) where p_lower >= 1/2, -inf (no certificate) elsewhere."""
        return np.where(p_lower >= 0.5, np.asarray(self.noise.radius(p_lower, self.norm, self.dim), dtype=np.float64), -np.inf)

    def reach(self, nA: np.ndarray, k: int) -> np.ndarray:
        """The lower bound at n_max if the remaining samples voted for cA at rate U_k."""
        n_left = self.cs.n_max - int(self.cs.looks[k])
        upper = self.cs.upper(nA, k)
        final_count = np.minimum(nA + np.ceil(n_left * upper - 1e-9).astype(np.int64), self.cs.n_max)
        return self.cs.lower(final_count, len(self.cs.looks) - 1)

    def step(self, nA: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """At look ``k`` with counts ``nA`` for cA: (stop, radius), two arrays over inputs; radius
        is the certificate if stopped now (-inf: abstain)."""
        nA = np.asarray(nA, dtype=np.int64)
        final = k == len(self.cs.looks) - 1
        lower = self.cs.lower(nA, k)
        reach = lower if final else self.reach(nA, k)
        if self.radii is not None:
            level, level_reach = self._level(lower), self._level(reach)
            radius = np.where(level >= 0, self.radii[np.maximum(level, 0)], -np.inf)
            stop = level >= level_reach
        else:
            radius, radius_reach = self._radius(lower), self._radius(reach)
            with np.errstate(invalid="ignore"):
                stop = (radius_reach == -np.inf) | (radius_reach - radius <= self.tol)
        if final:
            stop = np.ones_like(stop)
        return stop, radius
