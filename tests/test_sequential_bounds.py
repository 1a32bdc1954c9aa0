"""The anytime-valid bounds of ``smoothcert.sequential`` (issue 26): the alpha accounting is exact
(never an ulp over), the Beta mixture agrees with a brute-force evaluation of its martingale and
crosses 1/alpha once, and under the stopping rule's own stopping the false-certificate and
miscoverage rates are consistent with alpha (a one-sided binomial test: a rate fails only if it
is significantly above alpha), at the boundary where a certificate is false.

alpha is large (0.1) so that a few thousand simulated streams resolve the rate.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binom, norm

from smoothcert.noise import GaussianNoise
from smoothcert.sequential import (SEQUENCES, BetaMixture, abstain_test_pvalues, ConfidenceSequence, StoppingRule, alpha_spending,
                                   confidence_sequence, dense_looks, log_mixture, look_schedule, union_spending)
from smoothcert.validation import ArgumentError
from tests.test_sequential import simulate

ALPHA = 0.1
N_MAX = 2000


def not_above(count: int, trials: int, alpha: float, significance: float = 1e-3) -> bool:
    """False only if ``count`` events in ``trials`` are significantly more than alpha allows
    (one-sided binomial test at ``significance``)."""
    return binom.sf(count - 1, trials, alpha) > significance


# -- the alpha accounting --------------------------------------------------------------------------
ALPHAS = [0.001, 0.05, 0.1, 1e-10, 0.3, 0.7, 0.123456789, 1 / 3, 2.0**-20 * 3]


def exact_sum(levels) -> Fraction:
    return sum((Fraction(float(v)) for v in levels), Fraction(0))


def assert_within(levels, alpha: float) -> None:
    """The real sum of the floats used, and their float sum in three orders, are <= alpha."""
    assert np.all(np.asarray(levels) > 0)
    assert exact_sum(levels) <= Fraction(alpha)
    assert math.fsum(levels) <= alpha and sum(levels) <= alpha and float(np.sum(levels)) <= alpha
    assert sum(reversed(list(levels))) <= alpha


@pytest.mark.parametrize("alpha", ALPHAS)
def test_union_spending_never_exceeds_alpha(alpha):
    for K in list(range(1, 120)) + [997, 4096, 20_000]:
        levels = union_spending(K, alpha)
        assert len(levels) == K
        assert_within(levels, alpha)
        # each early look at most its exact share 5 alpha / ((t + 4)(t + 5)), and not much less
        t = np.arange(1, K)
        share = [Fraction(alpha) * Fraction(5, (i + 4) * (i + 5)) for i in t.tolist()]
        assert all(Fraction(float(v)) <= s for v, s in zip(levels[:-1], share))
        assert np.allclose(levels[:-1], 5 * alpha / ((t + 4) * (t + 5)), rtol=1e-15, atol=0)
        # the last look gets the tail 5 alpha / (K + 4), less the slack alpha (K - 1) 2^-50
        tail = Fraction(alpha) * Fraction(5, K + 4)
        assert tail - Fraction(alpha) * Fraction(K, 2**50) <= Fraction(float(levels[-1])) <= tail
    # the telescoping sum: all of alpha is spent over infinitely many looks
    assert Fraction(alpha) * sum(Fraction(5, (t + 4) * (t + 5)) for t in range(1, 10_001)) + \
        Fraction(alpha) * Fraction(5, 10_005) == Fraction(alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_geometric_spending_never_exceeds_alpha(alpha):
    for n_max in [1, 2, 63, 64, 65, 1000, 99_999, 100_000, 123_457, 10**7]:
        looks = look_schedule(n_max)
        levels = alpha_spending(looks, alpha)
        assert_within(levels, alpha)
        if len(looks) > 1:
            assert levels[-1] >= alpha / 2 * (1 - 1e-12)
    assert alpha_spending(look_schedule(1), 0.01).tolist() == [0.01]  # one look: all of alpha, exactly


def test_the_naive_float_spending_goes_over_alpha():
    """Why the accounting is exact: computed naively (each level rounded to nearest, the last
    one alpha minus the float sum of the others) the float sum of the levels exceeds alpha for
    some look counts -- the audit's 1-2 ulp. The tests above fail for that implementation."""
    over = 0
    for K in range(2, 400):
        t = np.arange(1, K)
        early = 5 * 0.001 / ((t + 4) * (t + 5))
        levels = np.append(early, 0.001 - early.sum())
        over += exact_sum(levels) > Fraction(0.001) or sum(levels) > 0.001
    assert over > 0


def test_every_sequence_accounts_for_at_most_alpha():
    for name in SEQUENCES:
        for n_max in (1, 17, 2000, 100_000):
            for alpha in (0.001, 0.1):
                cs = confidence_sequence(name, n_max, alpha)
                assert cs.spent() <= Fraction(alpha) and cs.n_max == n_max and cs.looks[-1] == n_max
                assert np.all(np.diff(cs.looks) > 0) and cs.name == name


def test_dense_looks_and_bad_names():
    assert dense_looks(100, 16).tolist() == [16, 32, 48, 64, 80, 96, 100]
    looks = dense_looks(100_000, 16, 1.02)
    assert looks[:3].tolist() == [16, 32, 48] and looks[-1] == 100_000
    assert np.all(np.diff(looks)[:-1] >= np.maximum(16, np.ceil(0.02 * looks[:-2]) - 1))
    assert dense_looks(5, 16).tolist() == [5]
    with pytest.raises(ArgumentError) as e:
        confidence_sequence("bonferroni", 100, 0.01)
    assert e.value.arg == "sequence"
    with pytest.raises(ArgumentError) as e:
        BetaMixture.create(100, 0.01, looks=[10, 5, 100])
    assert e.value.arg == "looks"
    for prior, alpha in (((2.0, 1.0), 0.01), ((1.0, 1.5), 0.01), ((0.5, 0.5), 0.3), ((0.4, 1.0), 0.01)):
        with pytest.raises(ArgumentError) as e:
            BetaMixture.create(100, alpha, prior=prior)
        assert e.value.arg == "prior"


# -- the Beta mixture against a brute-force evaluation ----------------------------------------------
def brute_log_mixture(s: int, n: int, p0: float, a: float, b: float) -> float:
    """log of (1/Pi(p0)) int_{p0}^1 LR(q, p0) Beta(a, b)(q) dq, written from the definition: the
    midpoint rule on 200 000 points in w, 1 - q = (1 - p0) w^2 (smooth for b >= 1/2), logsumexp."""
    from scipy.special import logsumexp
    w = (np.arange(200_000) + 0.5) / 200_000
    one_minus_q = (1 - p0) * w**2
    q = 1 - one_minus_q
    log_lr = s * np.log(q / p0) + (n - s) * np.log(one_minus_q / (1 - p0))
    log_prior_dq = (a - 1) * np.log(q) + (b - 1) * np.log(one_minus_q) + np.log(2 * (1 - p0) * w)
    return float(logsumexp(log_lr + log_prior_dq) - logsumexp(log_prior_dq))


CASES = [(9, 10, 0.1), (90, 100, 0.1), (1000, 1000, 0.001), (700, 1000, 0.05), (3, 40, 0.2), (4990, 5000, 0.001),
         (1, 1, 0.1), (12, 13, 0.25)]


@pytest.mark.parametrize("s, n, alpha", CASES)
@pytest.mark.parametrize("prior", [(1.0, 1.0), (1.0, 0.5), (0.5, 0.5)])
def test_mixture_matches_brute_force_and_crosses_once(s, n, alpha, prior):
    if prior[0] < 1 and alpha > 0.25:
        pytest.skip("prior needs alpha <= 1/4")
    cs = BetaMixture.create(n, alpha, prior=prior, looks=[n], final_share=0.0)
    grid = np.linspace(0.002, 0.998, 250)
    grid = grid[grid < s / n]
    closed = log_mixture(s, n, grid, *prior)
    brute = np.array([brute_log_mixture(s, n, p0, *prior) for p0 in grid[::25]])
    assert closed[::25] == pytest.approx(brute, abs=2e-3, rel=2e-3)
    # the rejected p0 (M_n >= 1/alpha) are a prefix of the grid: one crossing
    rejected = closed >= -math.log(alpha)
    assert not np.any(np.diff(rejected.astype(int)) > 0)
    L = float(cs.lower(np.array([s]), 0)[0])
    below, above = grid[rejected], grid[~rejected]
    assert (below.size == 0 or below.max() <= L) and (above.size == 0 or L <= above.min())
    # at L the martingale is exactly at the Ville level 1/alpha (not 1/(2 alpha), not 1)
    assert brute_log_mixture(s, n, L, *prior) == pytest.approx(-math.log(alpha), abs=2e-3)
    assert cs.level(np.array([s]), 0, np.array([L * (1 - 1e-7), L * (1 + 1e-5)])).tolist() == [0]


def test_mixture_bounds_are_monotone():
    s = np.arange(0, 1001)
    for cs in (BetaMixture.create(1000, 0.001), BetaMixture.create(1000, 0.001, prior=(1.0, 0.75), final_share=0)):
        k = len(cs.looks) - 1
        L, U = cs.lower(s, k), cs.upper(s, k)
        assert L[0] == 0 and U[-1] == 1 and np.all(np.diff(L) > 0) and np.all(np.diff(U) > 0)
        assert np.all(L < s / 1000 + 1e-15) and np.all(U > s / 1000 - 1e-15) and np.all(L < U)
        # mirror image: U(s) = 1 - L(n - s) with each prior Beta(a, b) mirrored to Beta(b, a), the
        # bands in reverse order and the cuts c -> 1 - c
        mirrored = BetaMixture(cs.looks, cs.alpha, tuple(p[::-1] for p in cs.priors[::-1]),
                               tuple(1 - c for c in cs.cuts[::-1]), cs.final_share)
        assert U == pytest.approx(1 - mirrored.lower(s[::-1], k), abs=1e-6)
    assert not np.allclose(U, 1 - L[::-1], atol=1e-4)  # Beta(1, 3/4) is not symmetric
    # more samples at the same rate: a higher lower bound; a smaller alpha: a lower one
    n = np.array([100, 1000, 10_000])
    big = BetaMixture.create(10_000, 0.001, looks=n)
    assert np.all(np.diff([big.lower(np.array([9 * m // 10]), i)[0] for i, m in enumerate(n)]) > 0)
    assert BetaMixture.create(1000, 1e-6, looks=[1000]).lower(np.array([900]), 0)[0] < BetaMixture.create(
        1000, 0.001, looks=[1000]).lower(np.array([900]), 0)[0]
    # the price of anytime validity at one n: below CP at alpha, above CP at alpha / 50
    from smoothcert.stats import clopper_pearson_lower
    one = BetaMixture.create(1000, 0.001, looks=[1000], final_share=0).lower(np.array([990]), 0)[0]
    assert clopper_pearson_lower(np.array([990]), 1000, 0.001 / 50)[0] < one < clopper_pearson_lower(
        np.array([990]), 1000, 0.001)[0]


# -- coverage and false certificates under the rule's own stopping ---------------------------------
@pytest.mark.parametrize("name", SEQUENCES)
@pytest.mark.parametrize("p", [0.5, norm.cdf(0.5), 0.97, 0.999])
def test_simultaneous_coverage(name, p):
    """P(p < L_k for SOME look k) <= alpha: the event any optional stopping could exploit. For
    the mixture, also at every n (it is valid at every n, not just at its looks)."""
    cs = confidence_sequence(name, N_MAX, ALPHA)
    trials = 3000
    rng = np.random.default_rng(11)
    if name == "mixture":
        x = rng.random((trials, N_MAX)) < p
        S = np.cumsum(x, axis=1)
        n = np.arange(1, N_MAX + 1)
        with np.errstate(divide="ignore", invalid="ignore"):  # M_n <= exp(n KL(S/n || p)): a cheap sieve
            ph = S / n
            kl = np.nan_to_num(ph * np.log(ph / p)) + np.nan_to_num((1 - ph) * np.log((1 - ph) / (1 - p)))
        maybe = (S > n * p) & (n * kl >= cs.log_level - 1e-6)
        rows, cols = np.nonzero(maybe)
        violated = np.zeros(trials, dtype=bool)
        for n_k in np.unique(cols + 1):  # L_n > p: p itself rejected (its band's test, or CP at n_max)
            at = cols + 1 == n_k
            violated[rows[at][cs.reaches(S[rows[at], n_k - 1], int(n_k), math.nextafter(p, 1.0))]] = True
        violated |= cs.lower(S[:, -1], len(cs.looks) - 1) > p  # the look at n_max, CP included
    else:
        steps = np.diff(np.concatenate([[0], cs.looks]))
        counts = np.cumsum(rng.binomial(steps[None, :], p, size=(trials, len(steps))), axis=1)
        violated = np.zeros(trials, dtype=bool)
        for k in range(len(cs.looks)):
            violated |= cs.lower(counts[:, k], k) > p
    assert not_above(int(violated.sum()), trials, ALPHA), violated.mean()


@pytest.mark.parametrize("name", SEQUENCES)
@pytest.mark.parametrize("r_over_sigma", [0.0, 0.5, 1.5])
def test_false_certificates_at_the_grid_threshold(name, r_over_sigma):
    """pA a hair below the level that certifies grid radius r, so any certificate of r (or more)
    is false; the rule keeps looking while r stays reachable and stops on its own."""
    noise = GaussianNoise(1.0)
    rule = StoppingRule(noise, confidence_sequence(name, N_MAX, ALPHA), np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
    p = noise.p_lower_needed(r_over_sigma) - 1e-9
    trials = 3000
    radius, used = simulate(rule, p, trials, seed=2)
    assert not_above(int(np.sum(radius >= r_over_sigma)), trials, ALPHA)
    assert used.max() <= N_MAX


@pytest.mark.parametrize("name", SEQUENCES)
def test_false_certificates_without_grid(name):
    noise = GaussianNoise(0.5)
    rule = StoppingRule(noise, confidence_sequence(name, N_MAX, ALPHA))
    trials = 1500
    for r_true in (0.1, 0.6):
        radius, _ = simulate(rule, noise.p_lower_needed(r_true), trials, seed=3)
        assert not_above(int(np.sum(radius > r_true)), trials, ALPHA)


class _Broken(BetaMixture):
    """The mixture with its Ville level forgotten: rejects once M_n >= 1."""

    @property
    def log_level(self) -> float:
        return 0.0


def test_the_simulations_catch_a_broken_bound():
    """The soundness tests have teeth: the mixture rejecting at M_n >= 1 instead of 1/alpha, or
    CP at every look at the full alpha (no spending), shows a false-certificate rate well above
    alpha under the same simulation."""
    noise = GaussianNoise(1.0)
    radii = np.array([0.0, 0.5, 1.0])
    p = noise.p_lower_needed(0.5) - 1e-9
    broken = _Broken(dense_looks(N_MAX, 16, 1.02), ALPHA)
    radius, _ = simulate(StoppingRule(noise, broken, radii), p, 1000, seed=5)
    assert not not_above(int(np.sum(radius >= 0.5)), 1000, ALPHA)
    looks = dense_looks(N_MAX, 16, 1.02)
    unspent = ConfidenceSequence(looks, np.full(len(looks), ALPHA), "cp-union")
    radius, _ = simulate(StoppingRule(noise, unspent, radii), p, 1000, seed=5)
    assert not not_above(int(np.sum(radius >= 0.5)), 1000, ALPHA)


def test_mixture_certifies_early_and_like_fixed_n():
    """Not only sound: at pA = 0.999 the mixture certifies 2 sigma (p needed 0.977) within a few
    hundred samples, and at n_max it is within a few hundredths of sigma of fixed-N CP."""
    noise = GaussianNoise(1.0)
    rule = StoppingRule(noise, confidence_sequence("mixture", 100_000, 0.001), np.array([0.0, 1.0, 2.0]))
    radius, used = simulate(rule, 0.999, 200, seed=7)
    assert np.all(radius == 2.0) and used.mean() < 600
    from smoothcert.stats import clopper_pearson_lower
    cs = confidence_sequence("mixture", 100_000, 0.001)
    k = len(cs.looks) - 1
    for s in (60_000, 99_000, 99_990):
        mix = norm.ppf(cs.lower(np.array([s]), k)[0])
        fixed = norm.ppf(clopper_pearson_lower(np.array([s]), 100_000, 0.001)[0])
        assert fixed - 0.06 < mix < fixed


def test_a_built_sequence_with_other_looks_is_accepted_when_it_fits():
    from smoothcert.smoothing import Smooth
    from test_sequential import Halfspace, inputs
    mine = BetaMixture.create(3000, 0.01, step=1000)
    assert confidence_sequence(mine, 3000, 0.01) is mine
    for n_max, alpha in ((2000, 0.01), (3000, 0.005)):
        with pytest.raises(ArgumentError) as e:
            confidence_sequence(mine, n_max, alpha)
        assert e.value.arg == "sequence"
    xs, _ = inputs([0.3, 2.0], 2)
    _, _, used = Smooth(Halfspace(), 2, 0.5, seed=1).certify_sequential_batch(xs, 20, 3000, 0.01, 1000,
                                                                              radii=[0.0, 0.25], sequence=mine)
    assert set(used.tolist()) <= {1000, 2000, 3000}



def test_the_mixture_rule_stops_on_the_fixed_n_cp_upper_bound():
    """The mixture's stopping rule judges what is still reachable with the fixed-n CP upper bound
    at alpha (``stop_upper``), not the anytime mirror image (looser); the CP sequences use their
    own U_k. A stream whose next grid level is out of reach by the CP bound but not by the mirror
    image stops under the rule (and the certificate it returns is the current level)."""
    from smoothcert.noise import get_noise
    from smoothcert.sequential import ConfidenceSequence, StoppingRule
    from smoothcert.stats import clopper_pearson_upper

    cs = BetaMixture.create(100_000, 0.001)
    s, k = np.array([9900, 9950, 10_000]), int(np.searchsorted(cs.looks, 10_000))
    n = int(cs.looks[k])
    s = np.minimum(s, n)
    assert np.array_equal(cs.stop_upper(s, k), clopper_pearson_upper(s, n, 0.001))
    assert np.all(cs.stop_upper(s[:2], k) < cs.upper(s[:2], k))  # the mirror image is looser
    geo = ConfidenceSequence.create(100_000, 0.001)
    assert np.array_equal(geo.stop_upper(np.array([50, 60]), 3), geo.upper(np.array([50, 60]), 3))
    # sigma 1, grid {0, 2.5}: 2.5 needs pA_lower >= Phi(2.5) = 0.99379 at n_max; at pA_hat = 0.992 after
    # ~10 000 samples the CP upper bound (0.9944) reaches only 0.9931 there, the mirror image (0.9956) 0.995
    noise = get_noise("gaussian", 1.0)
    radii = np.array([0.0, 2.5])
    count = np.array([int(0.992 * n)])
    stop, radius = StoppingRule(noise, cs, radii).step(count, k)
    class Mirror(BetaMixture):  # the rule as it was: reach from the anytime upper bound
        def stop_upper(self, nA, k):
            return self.upper(nA, k)

    mirror = Mirror(cs.looks, cs.alpha, cs.priors, cs.cuts, cs.final_share)
    stop_mirror, _ = StoppingRule(noise, mirror, radii).step(count, k)
    assert stop.tolist() == [True] and stop_mirror.tolist() == [False] and radius.tolist() == [0.0]


# -- the bands and the look at n_max ----------------------------------------------------------------
def test_the_first_failing_band_decides_the_bound():
    """L_n = max(c_{j-1}, L^(j)) for the first band j whose own bound L^(j) stays below its top:
    band 1's prior may give a higher bound, but it counts only once band 0 has passed its top."""
    banded = BetaMixture.create(1000, 0.001, priors=((1.0, 1.0), (0.5, 0.5)), cuts=(0.8,), final_share=0, looks=[1000])
    lo = BetaMixture.create(1000, 0.001, prior=(1.0, 1.0), final_share=0, looks=[1000])
    hi = BetaMixture.create(1000, 0.001, prior=(0.5, 0.5), final_share=0, looks=[1000])
    s = np.arange(700, 1001)
    L, L0, L1 = banded.lower(s, 0), lo.lower(s, 0), hi.lower(s, 0)
    below = L0 < 0.8
    assert below.any() and (~below).any()
    assert np.array_equal(L[below], L0[below])
    assert np.array_equal(L[~below], np.maximum(0.8, L1[~below]))
    # a threshold above the cut needs band 0 to reject 0.8 AND band 1 to reject the threshold
    t = np.array([0.75, 0.8, 0.85, 0.95])
    lv = banded.level(s, 0, t)
    assert np.array_equal(lv, np.searchsorted(t, L, side="right") - 1)
    # 40 successes in 40: KT alone rejects 0.81, but the uniform prior of band 0 does not reject
    # 0.8, so the banded bound must not certify 0.81 (it stays at band 0's own bound, below 0.8)
    banded40 = BetaMixture(np.array([40]), 0.001, banded.priors, banded.cuts)
    s40 = np.array([40])
    assert BetaMixture(np.array([40]), 0.001, ((0.5, 0.5),), ()).reaches(s40, 40, 0.81)[0]
    assert not BetaMixture(np.array([40]), 0.001, ((1.0, 1.0),), ()).reaches(s40, 40, 0.8)[0]
    assert banded40.level(s40, 0, np.array([0.5, 0.81])).tolist() == [0] and banded40.lower(s40, 0)[0] < 0.8


@pytest.mark.parametrize("n_max, final", [(5000, False), (5000, True)])
def test_level_agrees_with_lower(n_max, final):
    cs = BetaMixture.create(n_max, 0.001)
    k = len(cs.looks) - 1 if final else 40
    n = int(cs.looks[k])
    s = np.arange(n // 2, n + 1, max(1, n // 400))
    t = np.sort(np.concatenate([np.linspace(0.55, 0.999, 40), [0.8]]))
    L = cs.lower(s, k)
    lv = cs.level(s, k, t)
    ref = np.searchsorted(t, L, side="right") - 1
    close = np.abs(t[np.clip(ref + 1, 0, len(t) - 1)] - L) < 1e-9
    assert np.all((lv == ref) | close)


def test_the_final_share_is_spent_exactly_and_only_at_n_max():
    from smoothcert.stats import clopper_pearson_lower
    for alpha in (0.001, 0.05, 0.2):
        for w in (0.3, 0.5, 0.123):
            cs = BetaMixture.create(2000, alpha, final_share=w)
            assert cs.spent() <= Fraction(alpha) and cs.levels[1] > 0
            assert cs.levels[0] == pytest.approx((1 - w) * alpha, rel=1e-12)
            assert cs.log_level == pytest.approx(-math.log((1 - w) * alpha), abs=1e-8)
    cs = BetaMixture.create(100_000, 0.001, final_share=0.3)
    pure = BetaMixture(cs.looks, 0.001 * 0.7, cs.priors, cs.cuts, 0.0)  # the mixture part alone
    s, k = np.array([5000, 9000, 9990, 10_000]), int(np.searchsorted(cs.looks, 10_000))
    s = np.minimum(s, cs.looks[k])
    assert cs.lower(s, k) == pytest.approx(pure.lower(s, k), abs=1e-12)  # no CP before n_max
    last = len(cs.looks) - 1
    s = np.array([60_000, 99_000, 99_900, 99_990])
    cp = clopper_pearson_lower(s, 100_000, cs.levels[1])
    assert np.array_equal(cs.lower(s, last), np.maximum(pure.lower(s, last), cp))
    # at n_max the look brings the bound within a few hundredths of sigma of fixed-N CP at alpha
    fixed = norm.ppf(clopper_pearson_lower(s, 100_000, 0.001))
    mix = norm.ppf(cs.lower(s, last))
    assert np.all(mix < fixed) and np.all(mix > fixed - 0.03)
    alone = norm.ppf(pure.lower(s, last))  # the mixture alone: further off where pA is near 1
    assert np.all(alone <= mix) and np.all(alone[2:] < fixed[2:] - 0.03)


def test_the_default_final_share_follows_the_radii():
    from smoothcert.sequential import MIXTURE_FINAL_SHARE
    assert confidence_sequence("mixture", 1000, 0.01, [0.5]).final_share == 0
    assert confidence_sequence("mixture", 1000, 0.01, [0.0, 0.5]).final_share == MIXTURE_FINAL_SHARE > 0
    assert confidence_sequence("mixture", 1000, 0.01).final_share == MIXTURE_FINAL_SHARE
    assert confidence_sequence("mixture", 1000, 0.01, [0.5], final_share=0.5).final_share == 0.5
    with pytest.raises(ArgumentError) as e:
        BetaMixture.create(100, 0.01, final_share=1.0)
    assert e.value.arg == "final_share"
    with pytest.raises(ArgumentError) as e:
        BetaMixture.create(100, 0.01, priors=((1.0, 1.0),), cuts=(0.5,))
    assert e.value.arg == "prior"


def test_false_certificates_at_the_band_edge():
    """pA a hair below the cut 0.8 between the bands, the radius that needs 0.8 in the grid: a
    certificate of it is false, whichever band's test would have made it."""
    noise = GaussianNoise(1.0)
    r = float(norm.ppf(0.8))
    rule = StoppingRule(noise, confidence_sequence("mixture", N_MAX, ALPHA), np.array([0.0, r, 1.0]))
    assert rule.cs.cuts == (0.8,) and rule._needed[1] == pytest.approx(0.8, abs=1e-12)
    trials = 3000
    radius, _ = simulate(rule, 0.8 - 1e-9, trials, seed=4)
    assert not_above(int(np.sum(radius >= r)), trials, ALPHA)


def test_sequential_predict_uses_the_final_share_at_n_max_only():
    cs = BetaMixture.create(1000, 0.001, final_share=0.3)
    c1, c2 = np.array([560]), np.array([440])  # p-value of the binomial test ~1.8e-4 < 0.3 alpha
    assert abstain_test_pvalues(c1, c2)[0] < cs.levels[1]
    last = len(cs.looks) - 1
    assert not cs.decides(c1, c2, last - 1, 2)[0] and cs.decides(c1, c2, last, 2)[0]
    assert not BetaMixture.create(1000, 0.001, final_share=0).decides(c1, c2, last, 2)[0]
