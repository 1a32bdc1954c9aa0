"""Sequential certification: anytime-valid confidence sequences for pA and the stopping rule that
ends estimation as soon as the certificate can no longer improve.

**The confidence sequences.** Three, with one interface (``looks``, ``n_max``, ``lower`` /
``upper`` at look k given the successes, ``level`` for a sorted grid of thresholds,
``decides`` for sequential PREDICT, and the alpha accounting ``spent``); ``confidence_sequence``
builds one by name (``SEQUENCES``). Samples are examined only at the looks, cumulative sample
counts n_1 < n_2 < ... < n_K = n_max fixed in advance (a look costs a host sync, nothing more).

* ``"mixture"`` (the default, ``BetaMixture``): a one-sided Beta-mixture (Robbins) confidence
  sequence, valid at every n, so at any looks, with a prior that may change with the threshold
  (bands) and an optional Clopper–Pearson look at n_max.

  *Theorem* (the mixture method of Robbins, "Statistical methods related to the law of the
  iterated logarithm", Ann. Math. Statist. 1970, with Ville's inequality, Ville 1939; see Howard,
  Ramdas, McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Ann. Statist. 2021, Sec. 3, for one-sided mixtures). Let X_1, X_2, ... be i.i.d.
  Bernoulli(p), S_n = X_1 + ... + X_n, and for p0 in (0, 1) let

      M_n(p0) = int_{p0}^1 (q / p0)^S_n ((1 - q) / (1 - p0))^(n - S_n) pi(q) dq / Pi(p0),

  the likelihood ratio of q against p0 averaged over a prior pi = Beta(a, b) restricted to the
  alternatives q > p0 (Pi(p0) = pi((p0, 1])). In closed form
      M_n(p0) = B(S + a, n - S + b) P(Beta(S + a, n - S + b) > p0)
                / (B(a, b) Pi(p0) p0^S (1 - p0)^(n - S)).
  Under p = p0, M_n(p0) is a nonnegative martingale with M_0 = 1 (Fubini: each likelihood
  ratio is one), so by Ville's inequality P(there is an n with M_n(p) >= 1/alpha) <= alpha.
  Hence L_n = inf{p0 : M_n(p0) < 1/alpha} satisfies
      P(there is an n >= 1 with L_n > p) <= alpha,
  because L_n > p means that p itself was rejected (M_n(p) >= 1/alpha). So P(p < L_tau) <= alpha
  for ANY random time tau, the rule's own stopping time included. (Under p < p0 each ratio is
  a supermartingale, since q > p0: M_n(p0) is a test of p <= p0.)

  *Computing L_n* (the crossing is unique). On (0, S/n), M_n(p0) -> infinity as p0 -> 0 (if
  S > 0) and M_n <= 1 for p0 >= S/n; where M_n(p0) = c = 1/alpha its derivative is negative:
  d log M_n / d p0 = h(p0) (1 - 1/c) - (S - n p0) / (p0 (1 - p0)) with h = pi / Pi the prior's
  hazard, and at a crossing n KL(S/n || p0) >= log c (M_n is at most the maximum likelihood
  ratio) and KL <= (S/n - p0)^2 / (p0 (1 - p0)), so (S - n p0) / (p0 (1 - p0)) >=
  log(c) / (1 - p0), while h(p0) <= b p0^(a - 1) / (1 - p0) for a, b <= 1. For a = 1 and
  b <= 1 this is < log(c) / (1 - p0) for every alpha in (0, 1) (log(1/alpha) > 1 - alpha); for
  1/2 <= a < 1 it holds for alpha <= 1/4 (for p0 <= 1/2 with the bound n (S/n - p0) >=
  sqrt(n p0 (1 - p0) log c) instead). So {p0 : M_n(p0) >= c} = (0, L_n] and
  L_n >= t  <=>  t < S/n and M_n(t) >= c:
  one evaluation decides a grid threshold (``level``), bisection gives L_n (``lower``, the
  bracket's end where M_n >= c, so never above L_n). Every decision asks log M_n >= log c +
  1e-9, a margin over the float error of the log-space evaluation.

  *Bands* (``priors``, ``cuts``): the prior may change with the threshold. With band edges
  0 = c_0 < c_1 < ... < c_J = 1 and the prior pi_j on band j = [c_{j-1}, c_j), let L^(j)_n be
  the bound above with prior pi_j alone, and L_n = max(c_{j-1}, L^(j)_n) for the first band j
  with L^(j)_n < c_j. Then P(there is an n with L_n > p) <= alpha still, with ONE Ville level:
  let p lie in band j*; L_n > p needs j >= j*, and j = j* needs L^(j*)_n > p (c_{j*-1} <= p),
  while j > j* needs L^(j*)_n >= c_{j*} > p; either way the prior pi_j* rejected p itself, an
  event of probability <= alpha by Ville's inequality for that one mixture. For a grid threshold
  t in (c_{j-1}, c_j], L_n >= t iff the band-j test rejects t and every band i < j rejects its top c_i
  (``reaches``: one evaluation per band). Default: Beta(1, 1) below 0.8 and the
  Krichevsky–Trofimov Beta(1/2, 1/2) above (for alpha <= 1/4), chosen on the Bernoulli scenarios
  of issue 26 (experiments/bench_sequential.py --bernoulli): the uniform prior is the better one
  where pA is far from 1, KT where pA is close to 1 (experiments/results/sequential/bernoulli.md).

  *The look at n_max* (``final_share`` w): the mixtures run at alpha_m = (1 - w) alpha and the
  look at n_max also asks the one-sided Clopper–Pearson bound CP_lower(S_{n_max}, n_max, alpha_f),
  alpha_f = w alpha (the two rounded so that alpha_m + alpha_f <= alpha exactly: ``spend``):
  L_{n_max} = max(L_{n_max} above, CP). By Boole's inequality P(L_n > p for some n) <= alpha_m
  + alpha_f <= alpha, the CP event being one fixed-n event (Clopper & Pearson 1934). The
  mixture pays for its anytime validity at n_max (on MNIST it certifies up to 0.06 sigma less
  than fixed-N CP there), and with a grid the inputs just above a level run to n_max:
  ``mixture_final_share`` gives w = 0.3 for a grid of several radii, tol mode and PREDICT, and
  w = 0 for a single radius (w chosen on the MNIST grid simulated from the fixed-N counts,
  experiments/sim_sequential_grid.py: an expected table within 0.6 points of fixed N's at sigma
  0.5, where w = 0 loses 2.1 points at the top radius; a larger w costs more samples on the
  early stops, log(1 / (1 - w)) nats each). The looks: every 8 samples, then every 1% (580 looks
  up to n_max = 100 000); the bound holds at every n, so any looks fixed in advance (``looks``,
  or ``step`` / ``growth``) keep the guarantee.

* ``"cp-union"`` (``ConfidenceSequence.union``): the one-sided Clopper–Pearson bound at each
  look, at level alpha_t = 5 alpha / ((t + 4) (t + 5)) at look t = 1, 2, ... (a spending that
  does not depend on n_max, as in Voracek & Hein, NeurIPS 2024; the sum over all t >= 1 is
  5 alpha sum_t (1/(t + 4) - 1/(t + 5)) = 5 alpha / 5 = alpha, telescoping), the last look n_max
  taking the tail 5 alpha / (K + 4) of the looks never made.
* ``"cp-geometric"`` (``ConfidenceSequence.create``, the rule of the second release): CP at
  geometric looks (64, 96, 144, ... x1.5, 20 looks up to n_max = 100 000), the last look getting
  ``final_share`` of alpha (default 1/2) and the others the rest in proportion to n_k.

  *Theorem* for both CP sequences (the one-sided Clopper–Pearson bound, Clopper & Pearson,
  Biometrika 1934, at each look, combined by Boole's inequality over the looks -- the Bonferroni
  bound for repeated looks at accumulating data of group-sequential testing). With
  L_k = CP_lower(S_{n_k}, n_k, alpha_k), P(p < L_k) <= alpha_k for each fixed k, so
      P(there is a k with p < L_k) <= sum_k alpha_k <= alpha,
  and P(p < L_tau) <= alpha for any random look index tau.

*The alpha accounting is exact*: the levels alpha_k are floats each rounded DOWN from its exact
rational value, the last one being the rest of alpha (1 - (K - 1) 2^-50) minus the exact sum of the
others, so sum_k alpha_k <= alpha holds for the real numbers used, and their float sum in any
order is <= alpha too (``spent`` returns the exact sum as a Fraction).

The upper bounds only decide *when* to stop: an early stop can cost a certificate, never make
one wrong, so no theorem rests on them. The stopping rule asks each sequence's ``stop_upper``:
for the CP sequences their own CP_upper at alpha_k (so cp-geometric stops exactly as the second
release did); for the mixture the fixed-n one-sided Clopper–Pearson upper bound at alpha at the
look's n, tighter than the mixture's anytime mirror image ``upper`` (U(S, n) = 1 - L(n - S, n)
with each prior Beta(a, b) mirrored to Beta(b, a) and the bands reversed), so an input whose
next level is out of reach stops sooner: on the MNIST grid (100 images, the first mixture,
experiments/README.md) 7107 instead of 7565 mean samples at sigma 0.25 and 25 838 instead of
28 716 at sigma 0.5.

**The stopping rule** (``StoppingRule``), for the top class cA chosen by independent selection
samples as in CERTIFY (Cohen et al., 2019). At look k let L be the lower bound above, U the
sequence's ``stop_upper``, and
    reach = L_K(nA + ceil((n_max - n_k) * U)),
the lower bound at n_max that the samples left would give if they came in at rate U -- the best
certificate that is still plausible.

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
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
from scipy.special import betaincc, betaln
from scipy.stats import binom

from .stats import clopper_pearson_lower, clopper_pearson_upper
from .validation import ArgumentError, check_alpha, check_float, check_int

DEFAULT_FIRST_LOOK = 64
DEFAULT_GROWTH = 1.5
DEFAULT_FINAL_SHARE = 0.5
DEFAULT_TOL_SIGMAS = 0.01
# looks of the mixture (every 8 samples, then every 1%) and of the CP union bound with the
# n_max-free spending (every 32 samples, then every 10%), the mixture's bands (Beta(1, 1) below
# 0.8, Beta(1/2, 1/2) above) and its final share: chosen on the Bernoulli benchmark
# (experiments/bench_sequential.py --bernoulli --variants) and the MNIST grid
MIXTURE_STEP, MIXTURE_GROWTH = 8, 1.01
MIXTURE_CUTS, MIXTURE_PRIORS = (0.8,), ((1.0, 1.0), (0.5, 0.5))
MIXTURE_FINAL_SHARE = 0.3
UNION_STEP, UNION_GROWTH = 32, 1.1
SEQUENCES = ("mixture", "cp-union", "cp-geometric")
DEFAULT_SEQUENCE = "mixture"
LOG_MARGIN = 1e-9  # nats asked above log(1/alpha): the float error of a log-space evaluation


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


def dense_looks(n_max: int, step: int, growth: float = 1.0) -> np.ndarray:
    """Looks every ``step`` samples, or every ceil((growth - 1) n) samples once that is more
    (growth 1: every ``step`` samples throughout), the last one being exactly ``n_max``."""
    n_max = check_int("n_max", n_max, 1)
    step = check_int("step", step, 1)
    growth = check_float("growth", growth, 1.0)
    looks = [min(step, n_max)]
    while looks[-1] < n_max:
        n = looks[-1]
        looks.append(min(n_max, n + max(step, math.ceil((growth - 1.0) * n - 1e-9))))
    return np.asarray(looks, dtype=np.int64)


def round_down(x: Fraction) -> float:
    """The largest float <= the rational ``x`` (x >= 0)."""
    f = float(x)  # correctly rounded
    return math.nextafter(f, 0.0) if Fraction(f) > x else f


def spend(alpha: float, early: Sequence[Fraction]) -> np.ndarray:
    """Levels for K = len(early) + 1 looks: alpha * w (w in ``early``, exact weights) rounded
    down for the first K - 1, and for the last the rest of alpha (1 - (K - 1) 2^-50) minus the exact
    sum of those floats, rounded down. The real sum of the K floats is <= alpha, and so is their
    float sum in any order (each of its K - 1 roundings adds at most 2^-53 relative)."""
    a = Fraction(alpha)
    levels = [round_down(a * w) for w in early]
    used = sum((Fraction(v) for v in levels), Fraction(0))
    last = round_down(a * (1 - Fraction(len(levels), 2**50)) - used)
    if last <= 0:
        raise ArgumentError("alpha", f"alpha: nothing left for the last look (alpha={alpha!r})")
    return np.asarray(levels + [last], dtype=np.float64)


def alpha_spending(looks: np.ndarray, alpha: float, final_share: float = DEFAULT_FINAL_SHARE) -> np.ndarray:
    """Per-look levels alpha_k summing to at most ``alpha`` (exactly: ``spend``) for cumulative
    counts ``looks``: the last look gets ``final_share`` * alpha (and the rounding slack), the
    others share the rest in proportion to n_k (all of alpha to the last look when there is
    only one)."""
    looks = np.asarray(looks, dtype=np.int64)
    alpha = check_alpha(alpha)
    final_share = check_float("final_share", final_share, 0.0, 1.0, lo_open=True, hi_open=len(looks) > 1)
    total = int(looks[:-1].sum())
    rest = 1 - Fraction(final_share)
    return spend(alpha, [rest * int(n) / total for n in looks[:-1]])


def union_spending(K: int, alpha: float) -> np.ndarray:
    """alpha_t = 5 alpha / ((t + 4)(t + 5)) for looks t = 1 .. K - 1 and the tail
    5 alpha / (K + 4) = alpha - sum_{t < K} alpha_t for look K (exactly: ``spend``)."""
    K = check_int("K", K, 1)
    return spend(check_alpha(alpha), [Fraction(5, (t + 4) * (t + 5)) for t in range(1, K)])


def abstain_test_pvalues(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """``stats.abstain_test_pvalue`` vectorised: the two-sided exact binomial test of
    c1 ~ Bin(c1 + c2, 1/2) for c1 >= c2. The null is symmetric, so the p-value is
    min(1, 2 P(X >= c1)); 1 when c1 + c2 == 0."""
    c1, c2 = np.asarray(c1, dtype=np.int64), np.asarray(c2, dtype=np.int64)
    return np.where(c1 + c2 > 0, np.minimum(1.0, 2.0 * binom.sf(c1 - 1, c1 + c2, 0.5)), 1.0)


@dataclass(frozen=True)
class ConfidenceSequence:
    """Anytime-valid bounds on a Bernoulli mean at the looks ``looks`` with levels ``alphas``
    (the union-bound Clopper–Pearson sequences of the module docstring: simultaneously over all
    looks, P(p < lower(S_{n_k}, k) for some k) <= sum(alphas)). ``create``: geometric looks,
    spending in proportion to n_k ("cp-geometric"); ``union``: dense looks, the n_max-free
    spending 5 alpha / ((t + 4)(t + 5)) ("cp-union")."""

    looks: np.ndarray
    alphas: np.ndarray
    name: str = "cp-geometric"

    @classmethod
    def create(cls, n_max: int, alpha: float, *, first: int = DEFAULT_FIRST_LOOK, growth: float = DEFAULT_GROWTH,
               final_share: float = DEFAULT_FINAL_SHARE) -> "ConfidenceSequence":
        looks = look_schedule(n_max, first, growth)
        return cls(looks, alpha_spending(looks, alpha, final_share), "cp-geometric")

    @classmethod
    def union(cls, n_max: int, alpha: float, *, step: int = UNION_STEP, growth: float = UNION_GROWTH,
              looks: np.ndarray | None = None) -> "ConfidenceSequence":
        looks = dense_looks(n_max, step, growth) if looks is None else check_looks(looks, n_max)
        return cls(looks, union_spending(len(looks), alpha), "cp-union")

    @property
    def n_max(self) -> int:
        return int(self.looks[-1])

    def spent(self) -> Fraction:
        """The exact sum of the levels used (<= alpha)."""
        return sum((Fraction(float(a)) for a in self.alphas), Fraction(0))

    def lower(self, nA: np.ndarray, k: int) -> np.ndarray:
        """L_k for counts ``nA`` (successes among the first looks[k] samples)."""
        return clopper_pearson_lower(nA, int(self.looks[k]), float(self.alphas[k]))

    def upper(self, nA: np.ndarray, k: int) -> np.ndarray:
        """U_k for counts ``nA``."""
        return clopper_pearson_upper(nA, int(self.looks[k]), float(self.alphas[k]))

    def stop_upper(self, nA: np.ndarray, k: int) -> np.ndarray:
        """The upper bound the stopping rule's reach uses: U_k itself."""
        return self.upper(nA, k)

    def level(self, nA: np.ndarray, k: int, thresholds: np.ndarray) -> np.ndarray:
        """Index of the largest of the sorted ``thresholds`` that L_k reaches (-1: none)."""
        return np.searchsorted(thresholds, self.lower(nA, k), side="right") - 1

    def decides(self, c1: np.ndarray, c2: np.ndarray, k: int, num_classes: int) -> np.ndarray:
        """Sequential PREDICT at look k: whether the top count c1 beats the runner-up c2 (the
        two-sided binomial test of PREDICT at level alpha_k; valid at a fixed n whatever the
        number of classes, Hung & Fithian 2019 as in Cohen et al. 2019, Theorem 2)."""
        return abstain_test_pvalues(c1, c2) <= self.alphas[k]


def check_looks(looks: Any, n_max: int) -> np.ndarray:
    """``looks`` as a strictly increasing int64 array of counts >= 1 ending at ``n_max``."""
    try:
        arr = np.asarray(looks, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ArgumentError("looks", f"looks must be a sequence of sample counts, got {looks!r}") from None
    if arr.size == 0 or np.any(arr != np.round(arr)) or arr[0] < 1 or np.any(np.diff(arr) <= 0) or arr[-1] != n_max:
        raise ArgumentError("looks", f"looks must be increasing integers >= 1 ending at n_max={n_max}")
    return arr.astype(np.int64)


def log_mixture(s: np.ndarray, n: np.ndarray | int, p0: np.ndarray | float, a: float = 1.0,
                b: float = 1.0) -> np.ndarray:
    """log M_n(p0) of the module docstring: the Beta(a, b) mixture over q > p0 of the likelihood
    ratios of q against p0, for s successes in n trials (broadcast), 0 < p0 < 1."""
    s = np.asarray(s, dtype=np.float64)
    f = np.asarray(n, dtype=np.float64) - s
    p0 = np.asarray(p0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (betaln(s + a, f + b) - betaln(a, b) - s * np.log(p0) - f * np.log1p(-p0)
                + np.log(betaincc(s + a, f + b, p0)) - np.log(betaincc(a, b, p0)))


def _kl_point(ph: np.ndarray, n: int, level: float) -> np.ndarray:
    """For each ph in (0, 1]: the p < ph with n KL(ph || p) = level (bisection, rounded up), where
    KL is the Bernoulli Kullback-Leibler divergence (0 log 0 = 0)."""
    lo, hi = np.zeros(ph.shape), ph.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            kl = ph * np.log(ph / mid) + np.where(ph < 1, (1 - ph) * np.log((1 - ph) / (1 - mid)), 0.0)
            far = n * kl > level
            lo, hi = np.where(far, mid, lo), np.where(far, hi, mid)
    return hi


def check_prior(prior: Any, alpha: float) -> tuple[float, float]:
    """(a, b) for which the crossing of the module docstring is unique: a = 1 and 0 < b <= 1, or
    1/2 <= a < 1, 0 < b <= 1 and alpha <= 1/4."""
    try:
        a, b = (float(v) for v in prior)
    except (TypeError, ValueError):
        raise ArgumentError("prior", f"prior must be a pair (a, b), got {prior!r}") from None
    if not (0 < b <= 1 and (a == 1 or (0.5 <= a < 1 and alpha <= 0.25))):
        raise ArgumentError("prior", f"prior: Beta(a, b) needs a = 1, 0 < b <= 1 (or 1/2 <= a < 1 with alpha <= 1/4), "
                                     f"got {prior!r} at alpha={alpha!r}")
    return a, b


def check_bands(priors: Any, cuts: Any, alpha: float) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...]]:
    """(priors, cuts) of a banded mixture: one prior (``check_prior``) per band and the band edges
    ``cuts``, strictly increasing in (0, 1), one fewer than the priors."""
    try:
        priors = tuple(check_prior(p, alpha) for p in priors)
        cuts = tuple(float(c) for c in cuts)
    except (TypeError, ValueError):
        raise ArgumentError("prior", f"prior: bands need a sequence of priors and of cuts, got {priors!r}, {cuts!r}") from None
    if not priors or len(cuts) != len(priors) - 1 or any(not 0 < c < 1 for c in cuts) or any(
            b <= a for a, b in zip(cuts, cuts[1:])):
        raise ArgumentError("prior", f"prior: {len(priors)} priors need {len(priors) - 1} increasing cuts in (0, 1), "
                                     f"got {list(cuts)}")
    return priors, cuts


def mixture_final_share(radii: Sequence[float] | np.ndarray | None) -> float:
    """The mixture's default share of alpha for its Clopper–Pearson look at n_max: none with a
    single radius (an input stops once that radius is decided, and few reach n_max),
    ``MIXTURE_FINAL_SHARE`` (0.3) with a grid of several radii, in tol mode and for PREDICT (the
    inputs just above a level, or all of them in tol mode, run to n_max, where CP at 0.3 alpha
    certifies what the mixture cannot)."""
    return 0.0 if radii is not None and len(np.atleast_1d(radii)) == 1 else MIXTURE_FINAL_SHARE


@dataclass(frozen=True)
class BetaMixture:
    """The banded Beta-mixture confidence sequence of the module docstring ("mixture"), at level
    ``alpha``, examined at ``looks``: band j (between cuts[j-1] and cuts[j]) has the prior
    priors[j]; with ``final_share`` w > 0 the mixture runs at (1 - w) alpha and the look at n_max
    adds the one-sided Clopper–Pearson bound at w alpha (``levels``: the two, summing to at most
    alpha exactly)."""

    looks: np.ndarray
    alpha: float
    priors: tuple[tuple[float, float], ...] = MIXTURE_PRIORS
    cuts: tuple[float, ...] = MIXTURE_CUTS
    final_share: float = 0.0
    name: str = "mixture"
    levels: tuple[float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = check_float("final_share", self.final_share, 0.0, 1.0, hi_open=True)
        priors, cuts = check_bands(self.priors, self.cuts, self.alpha)
        object.__setattr__(self, "priors", priors)
        object.__setattr__(self, "cuts", cuts)
        levels = (self.alpha, 0.0) if w == 0 else tuple(float(v) for v in spend(self.alpha, [1 - Fraction(w)]))
        object.__setattr__(self, "levels", levels)

    @classmethod
    def create(cls, n_max: int, alpha: float, *, step: int = MIXTURE_STEP, growth: float = MIXTURE_GROWTH,
               looks: np.ndarray | None = None, prior: tuple[float, float] | None = None,
               priors: Sequence[tuple[float, float]] = MIXTURE_PRIORS, cuts: Sequence[float] = MIXTURE_CUTS,
               final_share: float = MIXTURE_FINAL_SHARE) -> "BetaMixture":
        """``prior``: one prior for all of (0, 1) (no bands), instead of ``priors`` and ``cuts``."""
        alpha = check_alpha(alpha)
        looks = dense_looks(n_max, step, growth) if looks is None else check_looks(looks, n_max)
        if prior is not None:
            priors, cuts = (prior,), ()
        return cls(looks, alpha, priors, cuts, final_share)

    @property
    def n_max(self) -> int:
        return int(self.looks[-1])

    @property
    def log_level(self) -> float:
        """log(1 / alpha_m) plus the margin: the level of every mixture test."""
        return -math.log(self.levels[0]) + LOG_MARGIN

    def spent(self) -> Fraction:
        return sum((Fraction(v) for v in self.levels), Fraction(0))

    def band(self, p: np.ndarray | float) -> np.ndarray:
        """The band j of each threshold p: c_{j-1} < p <= c_j (a threshold on a cut belongs to the
        band below, whose test decides whether the cut itself is reached)."""
        return np.searchsorted(np.asarray(self.cuts), p, side="left")

    def _final_cp(self, nA: np.ndarray, n: int) -> np.ndarray | None:
        """The Clopper–Pearson lower bound at the final share, where n is n_max (None elsewhere)."""
        if self.levels[1] == 0 or n != self.n_max:
            return None
        return clopper_pearson_lower(np.asarray(nA, dtype=np.int64), n, self.levels[1])

    def _hit(self, s: np.ndarray, n: int, p: np.ndarray | float, prior: tuple[float, float]) -> np.ndarray:
        """The mixture test with ``prior`` rejects p: p < s / n and M_n(p) >= 1 / alpha_m."""
        return (s > n * p) & (log_mixture(s, n, p, *prior) >= self.log_level)

    def reaches(self, nA: np.ndarray, n: int, p: np.ndarray | float) -> np.ndarray:
        """L_n >= p (broadcast over ``nA`` and ``p``, 0 < p < 1): for p in (c_{j-1}, c_j], the test
        of band j rejects p and the test of every band below rejects that band's top; or, at n_max,
        CP >= p."""
        s = np.asarray(nA, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        band = self.band(p)
        out = np.zeros(np.broadcast(s, p).shape, dtype=bool)
        passed = np.ones(s.shape, dtype=bool)  # every band below j rejected its top
        for j, prior in enumerate(self.priors):
            if np.any(band == j):
                out |= (band == j) & passed & self._hit(s, n, p, prior)
            if j < len(self.cuts):
                passed = passed & self._hit(s, n, self.cuts[j], prior)
        cp = self._final_cp(nA, n)
        return out if cp is None else out | (cp >= p)

    def _excess(self, s: np.ndarray, n: int, p: np.ndarray, prior: tuple[float, float]) -> np.ndarray:
        """log M_n(p) - log of the level: >= 0 where p is rejected."""
        return log_mixture(s, n, p, *prior) - self.log_level

    def _bisect(self, s_all: np.ndarray, n: int, prior: tuple[float, float], rtol: float) -> np.ndarray:
        """The lower bound of one prior's mixture for counts ``s_all`` at n samples (0 where the
        count is 0), never above it: the end of a bracket [lo, hi] with M_n(lo) >= 1/alpha_m >
        M_n(hi), shrunk by the Illinois method until hi - lo <= max(rtol * (hi - lo at the start),
        2 ulp). The first hi is the point where n KL(nA/n || p) = log(1/alpha_m) (M_n is at most
        exp(n KL)); lo widens the gap to nA/n until M_n(lo) >= 1/alpha_m."""
        out = np.zeros(s_all.shape)
        flat = s_all.reshape(-1)
        idx = np.nonzero(flat > 0)[0]
        if idx.size == 0:
            return out
        s = flat[idx].astype(np.float64)
        ph = s / float(n)
        hi = _kl_point(ph, n, -math.log(self.levels[0]))
        g_hi = self._excess(s, n, hi, prior)
        lo = np.maximum(ph - 2.0 * (ph - hi), 0.5 * hi)
        g_lo = self._excess(s, n, lo, prior)
        for _ in range(60):  # widen: M_n -> infinity as p -> 0
            bad = ~(g_lo >= 0)
            if not bad.any():
                break
            hi[bad], g_hi[bad] = lo[bad], g_lo[bad]  # lo was above L_n: a better hi
            lo[bad] = np.maximum(ph[bad] - 2.0 * (ph[bad] - lo[bad]), 0.5 * lo[bad])
            g_lo[bad] = self._excess(s[bad], n, lo[bad], prior)
        width = np.maximum(rtol * (hi - lo), 2 * np.spacing(hi))
        live = np.nonzero(hi - lo > width)[0]
        side = np.zeros(lo.shape, dtype=np.int8)
        for _ in range(100):
            if live.size == 0:
                break
            l, h, gl, gh = lo[live], hi[live], g_lo[live], g_hi[live]
            x = h - gh * (h - l) / (gh - gl)  # the secant through the bracket
            x = np.where((x > l) & (x < h), x, 0.5 * (l + h))
            gx = self._excess(s[live], n, x, prior)
            ok = gx >= 0
            lo[live] = np.where(ok, x, l)
            g_lo[live] = np.where(ok, gx, gl)
            hi[live] = np.where(ok, h, x)
            g_hi[live] = np.where(ok, gh, gx)
            # Illinois: an end kept twice in a row has its value halved, so both ends converge
            keep_hi, keep_lo = ok & (side[live] == 1), ~ok & (side[live] == -1)
            g_hi[live[keep_hi]] *= 0.5
            g_lo[live[keep_lo]] *= 0.5
            side[live] = np.where(ok, 1, -1)
            live = live[hi[live] - lo[live] > width[live]]
        out.reshape(-1)[idx] = lo
        return out

    def lower_at(self, nA: np.ndarray, n: int, mirror: bool = False, rtol: float = 0.0) -> np.ndarray:
        """L_n for counts ``nA`` at n samples (module docstring: each band's bound L^(j), at n_max
        raised to CP at the final share; L_n = max(cuts[j-1], L^(j)) for the first band j that
        does not reject its top), never above it. One bisection per count, in its own band: a
        band's top is asked with one evaluation (``_hit``). ``mirror``: the same for the failures
        (the bound 1 - U_n, with the bands and priors mirrored)."""
        s = np.asarray(nA, dtype=np.int64)
        priors, cuts = self.priors, self.cuts
        if mirror:
            priors, cuts = tuple(p[::-1] for p in priors[::-1]), tuple(1.0 - c for c in cuts[::-1])
        cp = self._final_cp(s, n)
        s_float = s.astype(np.float64)
        out = np.zeros(s.shape)
        todo = np.ones(s.shape, dtype=bool)  # counts whose band is not found yet
        for j, prior in enumerate(priors):
            here = todo.copy()
            if j < len(cuts):  # counts whose band j rejects its top go on to band j + 1
                passes = self._hit(s_float, n, cuts[j], prior)
                here &= ~(passes if cp is None else passes | (cp >= cuts[j]))
            if here.any():
                bound = self._bisect(s[here], n, prior, rtol)
                if cp is not None:
                    bound = np.maximum(bound, cp[here])
                out[here] = np.maximum(bound, cuts[j - 1] if j > 0 else 0.0)
            todo &= ~here
            if not todo.any():
                break
        return out

    def lower(self, nA: np.ndarray, k: int) -> np.ndarray:
        return self.lower_at(nA, int(self.looks[k]))

    def upper(self, nA: np.ndarray, k: int) -> np.ndarray:
        """U_n = 1 - L_n(n - nA) with the bands mirrored, to 1e-6 of its bracket (rounded up: the
        upper bound only decides when to stop, and a larger one stops later)."""
        n = int(self.looks[k])
        return 1.0 - self.lower_at(n - np.asarray(nA, dtype=np.int64), n, mirror=True, rtol=1e-6)

    def stop_upper(self, nA: np.ndarray, k: int) -> np.ndarray:
        """The upper bound the stopping rule's reach uses (module doc): the fixed-n one-sided
        Clopper–Pearson upper bound at alpha at the look's n, not an anytime bound (none is needed:
        it only decides when to stop)."""
        return clopper_pearson_upper(np.asarray(nA, dtype=np.int64), int(self.looks[k]), self.alpha)

    def level(self, nA: np.ndarray, k: int, thresholds: np.ndarray) -> np.ndarray:
        """Index of the largest of the sorted ``thresholds`` (in (0, 1)) that L_k reaches (-1:
        none): one evaluation of each band's M_n per threshold (``reaches``)."""
        nA = np.asarray(nA, dtype=np.int64)
        hit = self.reaches(nA[..., None], int(self.looks[k]), np.asarray(thresholds, dtype=np.float64))
        return np.cumprod(hit, axis=-1).sum(-1) - 1

    def decides(self, c1: np.ndarray, c2: np.ndarray, k: int, num_classes: int) -> np.ndarray:
        """Sequential PREDICT: whether the mixture test of p <= 1/2 (the prior of 1/2's band) on the
        c1 + c2 votes for the top two classes (c1 for the top) rejects at level
        alpha_m / (num_classes - 1), or, at n_max, the two-sided binomial test of PREDICT rejects at
        the final share.

        Returning c != g(x) needs, for the pair (c, g(x)), the same test on their c + g(x) votes to
        reject (the runner-up has at least g(x)'s votes and M_n falls with each failure); on the
        sub-stream of the votes for c or g(x), i.i.d. Bernoulli(theta <= 1/2), that test is
        anytime-valid at its level, and a union bound over the num_classes - 1 classes c gives
        P(a wrong class from the mixture) <= alpha_m at any stopping time; the test at n_max is
        PREDICT's at a fixed n (Hung & Fithian 2019, as in Cohen et al. 2019, Theorem 2), wrong
        with probability <= alpha_f: the two sum to <= alpha."""
        c1, c2 = np.asarray(c1, dtype=np.int64), np.asarray(c2, dtype=np.int64)
        prior = self.priors[int(self.band(0.5))]
        level = -math.log(self.levels[0] / max(int(num_classes) - 1, 1)) + LOG_MARGIN
        out = (c1 > c2) & (log_mixture(c1, c1 + c2, 0.5, *prior) >= level)
        if self.levels[1] > 0 and k == len(self.looks) - 1:
            out |= abstain_test_pvalues(c1, c2) <= self.levels[1]
        return out


AnytimeBound = ConfidenceSequence | BetaMixture


def check_sequence(sequence: Any) -> str:
    """``sequence`` if it names one of ``SEQUENCES``; ArgumentError("sequence") otherwise."""
    if not isinstance(sequence, str) or sequence not in SEQUENCES:
        raise ArgumentError("sequence", f"sequence must be one of {', '.join(SEQUENCES)}, got {sequence!r}")
    return sequence


def confidence_sequence(sequence: str | AnytimeBound, n_max: int, alpha: float,
                        radii: Sequence[float] | np.ndarray | None = None, **looks: Any) -> AnytimeBound:
    """The confidence sequence named ``sequence`` (``SEQUENCES``) for n_max samples at level
    alpha; ``looks`` as the keywords of its constructor (step, growth, looks, final_share, ...).
    For the mixture, the final share defaults to ``mixture_final_share(radii)`` (the grid of the
    certification it serves; None: tol mode or PREDICT). A sequence
    built already (``BetaMixture.create(n_max, alpha, step=1000)``: other looks) is returned as
    it is if it ends at n_max and spends at most alpha; ArgumentError("sequence") otherwise."""
    n_max = check_int("n_max", n_max, 1)
    alpha = check_alpha(alpha)
    if isinstance(sequence, (ConfidenceSequence, BetaMixture)) and not looks:
        if sequence.n_max != n_max or sequence.spent() > Fraction(alpha):
            raise ArgumentError("sequence", f"sequence: {sequence.name} ends at n={sequence.n_max} and spends "
                                            f"{float(sequence.spent())!r}; this call has n_max={n_max}, alpha={alpha!r}")
        return sequence
    sequence = check_sequence(sequence)
    if sequence == "mixture":
        looks.setdefault("final_share", mixture_final_share(radii))
        return BetaMixture.create(n_max, alpha, **looks)
    if sequence == "cp-union":
        return ConfidenceSequence.union(n_max, alpha, **looks)
    if sequence == "cp-geometric":
        return ConfidenceSequence.create(n_max, alpha, **looks)
    raise AssertionError(sequence)


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
    (``tol``), over the confidence sequence ``cs`` (any of ``SEQUENCES``). ``step`` is
    vectorised over inputs that are all at the same look."""

    noise: Any
    cs: AnytimeBound
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

    def _radius(self, p_lower: np.ndarray) -> np.ndarray:
        """noise.radius(p_lower) where p_lower >= 1/2, -inf (no certificate) elsewhere."""
        return np.where(p_lower >= 0.5, np.asarray(self.noise.radius(p_lower, self.norm, self.dim), dtype=np.float64), -np.inf)

    def _final_count(self, nA: np.ndarray, k: int) -> np.ndarray:
        """The count at n_max if the remaining samples voted for cA at rate U_k."""
        n_left = self.cs.n_max - int(self.cs.looks[k])
        upper = self.cs.stop_upper(nA, k)
        return np.minimum(nA + np.ceil(n_left * upper - 1e-9).astype(np.int64), self.cs.n_max)

    def reach(self, nA: np.ndarray, k: int) -> np.ndarray:
        """The lower bound at n_max if the remaining samples voted for cA at rate U_k."""
        return self.cs.lower(self._final_count(nA, k), len(self.cs.looks) - 1)

    def step(self, nA: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """At look ``k`` with counts ``nA`` for cA: (stop, radius), two arrays over inputs; radius
        is the certificate if stopped now (-inf: abstain)."""
        nA = np.asarray(nA, dtype=np.int64)
        last = len(self.cs.looks) - 1
        final = k == last
        if self.radii is not None:
            level = self.cs.level(nA, k, self._needed)
            level_reach = level if final else self.cs.level(self._final_count(nA, k), last, self._needed)
            radius = np.where(level >= 0, self.radii[np.maximum(level, 0)], -np.inf)
            stop = level >= level_reach
        else:
            lower = self.cs.lower(nA, k)
            reach = lower if final else self.reach(nA, k)
            radius, radius_reach = self._radius(lower), self._radius(reach)
            with np.errstate(invalid="ignore"):
                stop = (radius_reach == -np.inf) | (radius_reach - radius <= self.tol)
        if final:
            stop = np.ones_like(stop)
        return stop, radius
