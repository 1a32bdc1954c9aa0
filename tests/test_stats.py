import numpy as np
import pytest
from scipy.stats import beta, binomtest

from smoothcert.stats import abstain_test_pvalue, clopper_pearson_lower, lower_confidence_bound


@pytest.mark.parametrize("nA,n,alpha", [(1, 1, 0.001), (50, 100, 0.05), (99_990, 100_000, 0.001), (7, 10, 0.3)])
def test_bound_equals_beta_ppf(nA, n, alpha):
    assert lower_confidence_bound(nA, n, alpha) == pytest.approx(beta.ppf(alpha, nA, n - nA + 1), rel=1e-12)


def test_bound_all_successes_closed_form():
    # Beta(n, 1) has cdf p^n, so the bound is alpha^(1/n).
    assert lower_confidence_bound(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)


def test_bound_zero_successes_is_zero_and_vectorised_matches_scalar():
    nA = np.array([0, 3, 10])
    got = clopper_pearson_lower(nA, 10, 0.01)
    assert got[0] == 0.0
    assert got[1] == pytest.approx(lower_confidence_bound(3, 10, 0.01))
    assert got[2] == pytest.approx(0.01 ** (1 / 10))


def test_bound_coverage_by_simulation():
    # P(bound > p) <= alpha for the true p: simulate 20000 binomial draws.
    rng = np.random.default_rng(0)
    p, n, alpha = 0.8, 50, 0.1
    draws = rng.binomial(n, p, size=20000)
    violations = np.mean(clopper_pearson_lower(draws, n, alpha) > p)
    assert violations <= alpha + 0.01


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2.0])
def test_bad_alpha(bad):
    with pytest.raises(ValueError, match="alpha"):
        lower_confidence_bound(5, 10, bad)


def test_bad_counts():
    with pytest.raises(ValueError, match="nA"):
        lower_confidence_bound(11, 10, 0.1)
    with pytest.raises(ValueError, match="n must"):
        lower_confidence_bound(0, 0, 0.1)


def test_pvalue_matches_scipy_binomtest():
    for c1, c2 in [(60, 40), (10, 0), (500, 480), (3, 3)]:
        assert abstain_test_pvalue(c1, c2) == pytest.approx(binomtest(c1, c1 + c2, 0.5).pvalue)
    assert abstain_test_pvalue(0, 0) == 1.0
