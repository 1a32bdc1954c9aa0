"""Sequential certification: anytime-valid confidence sequences for pA and the stopping rule that
ends estimation as soon as the certificate can no longer improve.

**The confidence sequences.** Three, with one interface (``looks``, ``n_max``, ``lower`` /
``upper`` at look k given the successes, ``level`` for a sorted grid of thresholds,
``decides`` for sequential PREDICT, and the alpha accounting ``spent``); ``confidence_sequence``
builds one by name (``SEQUENCES``). Samples are examined only at the looks, cumulative sample
counts n_1 < n_2 < ... < n_K = n_max fixed in advance (a look costs a host sync, nothing more).

* ``"mixture"`` (the default, ``BetaMixture``): a one-sided Beta-mixture (Robbins) confidence
  sequence, valid at every n, so at any looks.

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

  The prior (``prior``): Beta(1, 3/4) by default; (1, 1) is the uniform prior, (1/2, 1/2) the
  one-sided Krichevsky–Trofimov mixture (for alpha <= 1/4). Chosen on the issue-26 Bernoulli
  scenarios (pA 0.7 ... 0.9999, experiments/bench_sequential.py --bernoulli): b = 1 is best
  where pA is far from 1, b = 1/2 where it is close to 1, and b = 3/4 is the compromise: 0.993x
  the expected samples of the best of the two-sided KT and the betting tests in the median cell,
  1.103x in the worst (pA 0.7 at 0.9 of the true radius; a continuously monitored one-sided KT
  mixture needs 1.4 % fewer in the median), experiments/results/sequential/bernoulli.md. The
  looks: every 8 samples, then every 1% (580 looks up to n_max = 100 000); the bound holds at
  every n, so any looks fixed in advance (``looks``, or ``step`` / ``growth``) keep the guarantee.

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
with the prior Beta(b, a)), so an input whose next level is out of reach stops sooner: on the
MNIST grid (100 images, experiments/README.md) 7107 instead of 7565 mean samples at sigma 0.25
and 25 838 instead of 28 716 at sigma 0.5.

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
# n_max-free spending (every 32 samples, then every 10%), and the mixture's prior Beta(1, 3/4):
# chosen on the Bernoulli benchmark (experiments/bench_sequential.py --bernoulli --variants)
MIXTURE_STEP, MIXTURE_GROWTH = 8, 1.01
MIXTURE_PRIOR = (1.0, 0.75)
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


@dataclass(frozen=True)
class BetaMixture:
    """The one-sided Beta-mixture confidence sequence of the module docstring ("mixture"), at
    level ``alpha`` (one Ville level: ``spent`` is alpha itself), examined at ``looks``."""

    looks: np.ndarray
    alpha: float
    prior: tuple[float, float] = MIXTURE_PRIOR
    name: str = "mixture"

    @classmethod
    def create(cls, n_max: int, alpha: float, *, step: int = MIXTURE_STEP, growth: float = MIXTURE_GROWTH,
               looks: np.ndarray | None = None, prior: tuple[float, float] = MIXTURE_PRIOR) -> "BetaMixture":
        alpha = check_alpha(alpha)
        looks = dense_looks(n_max, step, growth) if looks is None else check_looks(looks, n_max)
        return cls(looks, alpha, check_prior(prior, alpha))

    @property
    def n_max(self) -> int:
        return int(self.looks[-1])

    @property
    def log_level(self) -> float:
        return -math.log(self.alpha) + LOG_MARGIN

    def spent(self) -> Fraction:
        return Fraction(self.alpha)

    def reaches(self, nA: np.ndarray, n: int, p: np.ndarray | float, mirror: bool = False) -> np.ndarray:
        """L_n >= p (broadcast over ``nA`` and ``p``, 0 < p < 1): p < nA / n and M_n(p) >= 1/alpha.
        ``mirror``: the same for the failures (U_n <= 1 - p)."""
        a, b = self.prior[::-1] if mirror else self.prior
        s = np.asarray(nA, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        return (s > n * p) & (log_mixture(s, n, p, a, b) >= self.log_level)

    def _excess(self, s: np.ndarray, n: int, p: np.ndarray, mirror: bool) -> np.ndarray:
        """log M_n(p) - log of the level: >= 0 where p is rejected."""
        a, b = self.prior[::-1] if mirror else self.prior
        return log_mixture(s, n, p, a, b) - self.log_level

    def lower_at(self, nA: np.ndarray, n: int, mirror: bool = False, rtol: float = 0.0) -> np.ndarray:
        """L_n for counts ``nA`` at n samples (0 where nA == 0), never above it: the end of a
        bracket [lo, hi] with M_n(lo) >= 1/alpha > M_n(hi), shrunk by the Illinois method
        until hi - lo <= max(rtol * (hi - lo at the start), 2 ulp). The first hi is the point
        where n KL(nA/n || p) = log(1/alpha) (M_n is at most exp(n KL)); lo widens the gap to
        nA/n until M_n(lo) >= 1/alpha."""
        s_all = np.asarray(nA, dtype=np.int64)
        out = np.zeros(s_all.shape)
        flat = s_all.reshape(-1)
        idx = np.nonzero(flat > 0)[0]
        if idx.size == 0:
            return out
        s = flat[idx].astype(np.float64)
        ph = s / float(n)
        hi = _kl_point(ph, n, -math.log(self.alpha))
        g_hi = self._excess(s, n, hi, mirror)
        lo = np.maximum(ph - 2.0 * (ph - hi), 0.5 * hi)
        g_lo = self._excess(s, n, lo, mirror)
        for _ in range(60):  # widen: M_n -> infinity as p -> 0
            bad = ~(g_lo >= 0)
            if not bad.any():
                break
            hi[bad], g_hi[bad] = lo[bad], g_lo[bad]  # lo was above L_n: a better hi
            lo[bad] = np.maximum(ph[bad] - 2.0 * (ph[bad] - lo[bad]), 0.5 * lo[bad])
            g_lo[bad] = self._excess(s[bad], n, lo[bad], mirror)
        width = np.maximum(rtol * (hi - lo), 2 * np.spacing(hi))
        live = np.nonzero(hi - lo > width)[0]
        side = np.zeros(lo.shape, dtype=np.int8)
        for _ in range(100):
            if live.size == 0:
                break
            l, h, gl, gh = lo[live], hi[live], g_lo[live], g_hi[live]
            x = h - gh * (h - l) / (gh - gl)  # the secant through the bracket
            x = np.where((x > l) & (x < h), x, 0.5 * (l + h))
            gx = self._excess(s[live], n, x, mirror)
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

    def lower(self, nA: np.ndarray, k: int) -> np.ndarray:
        return self.lower_at(nA, int(self.looks[k]))

    def upper(self, nA: np.ndarray, k: int) -> np.ndarray:
        """U_n = 1 - L_n(n - nA) with the mirrored prior, to 1e-6 of its bracket (rounded up: the
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
        none): one evaluation of M_n per threshold (L_n >= t iff t < S/n and M_n(t) >= 1/alpha)."""
        nA = np.asarray(nA, dtype=np.int64)
        hit = self.reaches(nA[..., None], int(self.looks[k]), np.asarray(thresholds, dtype=np.float64))
        return hit.sum(-1) - 1

    def decides(self, c1: np.ndarray, c2: np.ndarray, k: int, num_classes: int) -> np.ndarray:
        """Sequential PREDICT: whether the mixture test of p <= 1/2 on the c1 + c2 votes for the
        top two classes (c1 for the top) rejects at level alpha / (num_classes - 1).

        Returning c != g(x) needs, for the pair (c, g(x)), the same test on their c + g(x) votes to
        reject (the runner-up has at least g(x)'s votes and M_n falls with each failure); on the
        sub-stream of the votes for c or g(x), i.i.d. Bernoulli(theta <= 1/2), that test is
        anytime-valid at its level, and a union bound over the num_classes - 1 classes c gives
        P(returning a wrong class) <= alpha at any stopping time."""
        c1, c2 = np.asarray(c1, dtype=np.int64), np.asarray(c2, dtype=np.int64)
        level = -math.log(self.alpha / max(int(num_classes) - 1, 1)) + LOG_MARGIN
        return (c1 > c2) & (log_mixture(c1, c1 + c2, 0.5, *self.prior) >= level)


AnytimeBound = ConfidenceSequence | BetaMixture


def check_sequence(sequence: Any) -> str:
    """``sequence`` if it names one of ``SEQUENCES``; ArgumentError("sequence") otherwise."""
    if not isinstance(sequence, str) or sequence not in SEQUENCES:
        raise ArgumentError("sequence", f"sequence must be one of {', '.join(SEQUENCES)}, got {sequence!r}")
    return sequence


def confidence_sequence(sequence: str | AnytimeBound, n_max: int, alpha: float, **looks: Any) -> AnytimeBound:
    """The confidence sequence named ``sequence`` (``SEQUENCES``) for n_max samples at level
    alpha; ``looks`` as the keywords of its constructor (step, growth, looks, ...). A sequence
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
