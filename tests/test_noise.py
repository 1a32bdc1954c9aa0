"""Noise objects: sampling scale, radius formulas against closed forms, two-sided radii, the
inverse p_lower_needed, soundness of CERTIFY for each noise and norm by simulation, bad input."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom, kstest, laplace, norm, uniform
from torch import nn

from smoothcert import Smooth
from smoothcert.noise import NOISES, GaussianNoise, LaplaceNoise, Noise, UniformNoise, get_noise
from smoothcert.validation import ArgumentError

# (noise, norm) pairs each noise certifies
CASES = [("gaussian", "l2"), ("gaussian", "l1"), ("gaussian", "linf"), ("laplace", "l1"), ("uniform", "l1"),
         ("uniform", "linf")]


def cdf_1d(noise: Noise):
    """The one-dimensional CDF of one noise coordinate (scipy)."""
    if noise.name == "gaussian":
        return norm(scale=noise.sigma).cdf
    if noise.name == "laplace":
        return laplace(scale=noise.sigma / math.sqrt(2)).cdf
    lam = noise.sigma * math.sqrt(3)
    return uniform(loc=-lam, scale=2 * lam).cdf


# -- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NOISES))
def test_samples_follow_the_distribution_with_std_sigma(name):
    noise = get_noise(name, 0.4)
    x = noise.sample_(torch.empty(200_000, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert x.std().item() == pytest.approx(0.4, rel=0.01)
    assert kstest(x.numpy(), cdf_1d(noise)).pvalue > 1e-3
    # the same generator state gives the same noise; perturb is x + noise and differentiable
    y = torch.zeros(3, 4, requires_grad=True)
    a = noise.perturb(y, torch.Generator().manual_seed(1))
    b = noise.perturb(y, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.requires_grad


def test_laplace_float32_tails_stay_finite():
    noise = LaplaceNoise(1.0)
    x = noise.sample_(torch.empty(4_000_000), torch.Generator().manual_seed(3))
    assert torch.isfinite(x).all() and (x > 0).float().mean().item() == pytest.approx(0.5, abs=0.002)


# -- radius formulas against closed forms ---------------------------------------------------------
@pytest.mark.parametrize("name,norm_", CASES)
@pytest.mark.parametrize("t", [0.01, 0.1, 0.3, 0.7])
def test_radius_of_a_half_space_at_distance_t(name, norm_, t):
    """f(x) = [x_1 > b] at x_1 = b + t: pA = F(t) (the noise's 1-D CDF). Its true radius is t in
    every norm. In one dimension every certificate here is tight (radius(F(t)) == t); in d
    dimensions the linf ones shrink as the formulas say."""
    noise = get_noise(name, 0.5)
    p = cdf_1d(noise)(t)
    if p >= 1:
        pytest.skip("beyond the uniform noise's support")
    assert noise.radius(p, norm_, dim=1) == pytest.approx(t, rel=1e-9, abs=1e-12)
    d = 100
    r = noise.radius(p, norm_, dim=d)
    if norm_ != "linf":
        assert r == pytest.approx(t, rel=1e-9)
    elif name == "gaussian":
        assert r == pytest.approx(t / math.sqrt(d), rel=1e-9)
    else:  # uniform: the TV of cubes shifted by r in every coordinate is exactly p - 1/2
        lam = 0.5 * math.sqrt(3)
        assert 1 - (1 - r / (2 * lam)) ** d == pytest.approx(p - 0.5, rel=1e-9)


def test_radius_known_values_and_scales():
    assert GaussianNoise(0.25).radius(norm.cdf(2.0)) == pytest.approx(0.5, rel=1e-12)
    lam = 0.5 / math.sqrt(2)  # Laplace: -lam ln(2 (1 - p))
    assert LaplaceNoise(0.5).radius(0.9) == pytest.approx(-lam * math.log(0.2), rel=1e-12)
    lam = 0.5 * math.sqrt(3)  # uniform: 2 lam (p - 1/2), 2 lam (1 - (3/2 - p)^(1/d))
    assert UniformNoise(0.5).radius(0.9) == pytest.approx(2 * lam * 0.4, rel=1e-12)
    assert UniformNoise(0.5).radius(0.9, "linf", 784) == pytest.approx(2 * lam * (1 - 0.6 ** (1 / 784)), rel=1e-9)
    # natural norms, no certificate at p <= 1/2, vectorised with scalars as floats
    for name, natural in (("gaussian", "l2"), ("laplace", "l1"), ("uniform", "l1")):
        n = get_noise(name, 0.5)
        assert n.natural_norm == natural and n.radius(0.8) == n.radius(0.8, natural)
        assert isinstance(n.radius(0.8), float)
        np.testing.assert_array_equal(n.radius(np.array([0.0, 0.3, 0.5])), 0.0)
        np.testing.assert_allclose(n.radius(np.array([0.6, 0.99])), [n.radius(0.6), n.radius(0.99)])


@pytest.mark.parametrize("name,norm_", CASES)
def test_p_lower_needed_inverts_radius(name, norm_):
    noise = get_noise(name, 0.5)
    d = 50
    p = np.linspace(0.5, 0.999, 40)
    r = noise.radius(p, norm_, d)
    back = noise.p_lower_needed(r, norm_, d)
    np.testing.assert_allclose(back, p, rtol=1e-9, atol=1e-12)
    assert np.all(noise.radius(back, norm_, d) >= r)  # reaching the radius, never short of it
    assert noise.p_lower_needed(0.0, norm_, d) == 0.5
    if name == "uniform":
        assert noise.p_lower_needed(100.0, norm_, d) == math.inf  # beyond any certificate


# -- two-sided ------------------------------------------------------------------------------------
def test_two_sided_closed_forms():
    g = GaussianNoise(0.5)
    assert g.radius_two_sided(0.8, 0.1) == pytest.approx(0.25 * (norm.ppf(0.8) - norm.ppf(0.1)), rel=1e-12)
    assert g.radius_two_sided(0.8, 0.1, "linf", 16) == pytest.approx(g.radius_two_sided(0.8, 0.1) / 4, rel=1e-12)
    lam = 0.5 / math.sqrt(2)
    assert LaplaceNoise(0.5).radius_two_sided(0.8, 0.1) == pytest.approx(
        max(lam / 2 * math.log(8), -lam * math.log(0.3)), rel=1e-12)
    lam = 0.5 * math.sqrt(3)
    assert UniformNoise(0.5).radius_two_sided(0.8, 0.1) == pytest.approx(lam * 0.7, rel=1e-12)
    for name, norm_ in CASES:  # pB = 1 - pA is the one-sided certificate; pA <= pB none at all
        n = get_noise(name, 0.5)
        assert n.radius_two_sided(0.83, 0.17, norm_, 10) == pytest.approx(n.radius(0.83, norm_, 10), rel=1e-9)
        assert n.radius_two_sided(0.3, 0.3, norm_, 10) == 0.0 and n.radius_two_sided(0.2, 0.5, norm_, 10) == 0.0


def test_laplace_two_sided_is_sound_against_the_exact_1d_worst_case():
    """Neyman–Pearson in one dimension: the worst set for class A is a left half-line of mass pA,
    for B a right half-line of mass pB; the exact radius solves F(F^-1(pA) - r) = 1 - F(F^-1(1 - pB) - r).
    The paper's closed form must never exceed it (and equals it, e.g., for pA, pB < 1/2 and pA/pB
    moderate, where its first term is the exact solution)."""
    noise = LaplaceNoise(1.0)
    F = laplace(scale=1 / math.sqrt(2))
    for pA in np.linspace(0.05, 0.999, 30):
        for pB in np.linspace(0.001, 0.95, 30):
            if not (pB < pA and pA + pB <= 1):
                continue
            exact = brentq(lambda r: F.cdf(F.ppf(pA) - r) - F.sf(F.ppf(1 - pB) - r), 0, 100)
            assert noise.radius_two_sided(pA, pB) <= exact + 1e-9
    exact = brentq(lambda r: F.cdf(F.ppf(0.4) - r) - F.sf(F.ppf(0.9) - r), 0, 100)
    assert noise.radius_two_sided(0.4, 0.1) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("name,norm_", CASES)
def test_two_sided_never_below_one_sided_at_the_same_pA_lower(name, norm_):
    noise = get_noise(name, 0.5)
    pA, frac = np.meshgrid(np.linspace(0.5, 0.9999, 60), np.linspace(0.0, 1.0, 60))
    pB = frac * (1 - pA)  # every pB_upper <= 1 - pA_lower
    two = noise.radius_two_sided(pA.ravel(), pB.ravel(), norm_, 100)
    one = noise.radius(pA.ravel(), norm_, 100)
    assert np.all(two >= one - 1e-12)
    assert np.any(two > one + 1e-3)  # and it does gain where pB_upper < 1 - pA_lower


# -- CERTIFY is sound for each noise and norm (simulation) ----------------------------------------
class HalfSpace(nn.Module):
    """f(x) = 1 if x_1 > b else 0 (x_1 the first coordinate)."""

    def __init__(self, b: float):
        super().__init__()
        self.b = b

    def forward(self, x):
        s = (x.flatten(1)[:, 0] > self.b).float()
        return torch.stack([1 - s, s], 1)


@pytest.mark.parametrize("bound", ["one-sided", "two-sided"])
@pytest.mark.parametrize("name,norm_", CASES)
def test_false_certificates_at_a_rate_consistent_with_alpha(name, norm_, bound):
    """Inputs at signed distance t from the boundary x_1 = b: the smoothed classifier's class is
    [t > 0] and its true radius in every norm is |t| (move x_1 only). In one dimension the
    certificates are tight, so a certificate above |t| happens exactly when the confidence bound
    fails: at most at rate alpha (alpha / 2 for each bound of the two-sided one), and close to it."""
    sigma, alpha, n0, n, b = 0.5, 0.2, 10, 100, 0.3
    noise = get_noise(name, sigma)
    g = torch.Generator().manual_seed(0)
    m = 1500
    lam_max = 0.5 * math.sqrt(3)
    t = (torch.rand(m, generator=g, dtype=torch.float64) * 2 - 1) * 0.9 * lam_max  # inside uniform's support
    xs = (b + t).view(m, 1, 1, 1).float()
    s = Smooth(HalfSpace(b), 2, sigma, name, seed=1)
    pred, radius = s.certify_batch(xs, n0, n, alpha, batch_size=20_000, norm=norm_, bound=bound)
    true_t = (xs.view(-1).double() - b)  # the distance the float32 input really has
    true_class = (true_t > 0).long()
    certified = pred != Smooth.ABSTAIN
    wrong = certified & ((pred != true_class) | (radius > true_t.abs() + 1e-7))
    k = int(certified.sum())
    assert k > 500
    # two classes: pB = 1 - pA, and the runner-up's bound is 1 - pA's bound at the same level, so
    # the two-sided certificate fails exactly when its pA bound (at alpha / 2) does
    rate = alpha if bound == "one-sided" else alpha / 2
    assert int(wrong.sum()) <= binom.ppf(0.999, k, rate)
    assert int(wrong.sum()) >= binom.ppf(0.001, k, rate / 4)  # not vacuous: the bound is nearly met


# -- registry and bad input -----------------------------------------------------------------------
def test_registry_and_get_noise():
    assert set(NOISES) == {"gaussian", "laplace", "uniform"}
    assert isinstance(get_noise("Laplace", 0.25), LaplaceNoise)
    u = UniformNoise(0.25)
    assert get_noise(u) is u and get_noise(u, 0.25) is u
    assert Smooth(nn.Flatten(), 2, None, u).noise is u and Smooth(nn.Flatten(), 2, 0.25, "uniform").noise == u
    assert Smooth(nn.Flatten(), 2, 0.25).noise == GaussianNoise(0.25)


@pytest.mark.parametrize("call,arg", [
    (lambda: get_noise("cauchy", 0.5), "noise"),
    (lambda: get_noise(3, 0.5), "noise"),
    (lambda: get_noise(UniformNoise(0.25), 0.5), "sigma"),
    (lambda: get_noise("laplace", None), "sigma"),
    (lambda: get_noise("laplace", True), "sigma"),
    (lambda: get_noise("laplace", "0.25"), "sigma"),
    (lambda: GaussianNoise(0.5).radius(0.9, "l3"), "norm"),
    (lambda: LaplaceNoise(0.5).radius(0.9, "l2"), "norm"),
    (lambda: LaplaceNoise(0.5).radius(0.9, "linf", 10), "norm"),
    (lambda: UniformNoise(0.5).radius(0.9, "l2"), "norm"),
    (lambda: UniformNoise(0.5).radius(0.9, "linf"), "dim"),
    (lambda: UniformNoise(0.5).radius(1.5), "p_lower"),
    (lambda: UniformNoise(0.5).radius(float("nan")), "p_lower"),
    (lambda: UniformNoise(0.5).p_lower_needed(-1.0), "radius"),
    (lambda: UniformNoise(0.5).radius_two_sided(0.9, -0.1), "pB_upper"),
])
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ArgumentError) as e:
        call()
    assert e.value.arg == arg and str(e.value).startswith(arg)


class NoTwoSided(Noise):
    """A noise with a one-sided certificate only (the base class refuses two-sided)."""

    name, norms, natural_norm = "plain", ("l2",), "l2"

    def sample_(self, buf, generator=None):
        return buf.normal_(0.0, self.sigma, generator=generator)

    def _radius(self, p, norm, dim):
        return self.sigma * (p - 0.5)


def test_smooth_refuses_norms_and_bounds_the_noise_lacks():
    x = torch.zeros(1, 2, 2)
    s = Smooth(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 2, 0.5, "laplace")
    for kw, arg in (({"norm": "l2"}, "norm"), ({"norm": "lp"}, "norm"), ({"bound": "three-sided"}, "bound")):
        with pytest.raises(ArgumentError) as e:
            s.certify(x, 10, 10, 0.1, 10, **kw)
        assert e.value.arg == arg
    s = Smooth(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 2, 0.5, NoTwoSided(0.5))
    assert s.certify(x, 10, 10, 0.1, 10)[0] in (0, 1, Smooth.ABSTAIN)
    with pytest.raises(ArgumentError) as e:
        s.certify(x, 10, 10, 0.1, 10, bound="two-sided")
    assert e.value.arg == "bound"


def cdf_torch(noise: Noise, z: torch.Tensor) -> torch.Tensor:
    """The 1-D CDF of one noise coordinate, in torch (float64)."""
    z = z.double()
    if noise.name == "gaussian":
        return 0.5 * (1 + torch.erf(z / (noise.sigma * math.sqrt(2))))
    if noise.name == "laplace":
        lam = noise.sigma / math.sqrt(2)
        return torch.where(z < 0, 0.5 * torch.exp(z / lam), 1 - 0.5 * torch.exp(-z / lam))
    lam = noise.sigma * math.sqrt(3)
    return ((z + lam) / (2 * lam)).clamp(0, 1)


class Buckets(nn.Module):
    """At x = 0 the class is a bucket of u = F(eps_1) (F the noise's 1-D CDF, so u ~ U(0, 1)):
    class 0 if u < 0.6, class 1 if u < 0.98, else class 2. The votes are exactly multinomial with
    pA = 0.6 and pB = max_{c != 0} p_c = 0.38."""

    def __init__(self, noise: Noise):
        super().__init__()
        self.noise = noise

    def forward(self, x):
        u = cdf_torch(self.noise, x.flatten(1)[:, 0])
        return nn.functional.one_hot((u >= 0.6).long() + (u >= 0.98).long(), 3).float()


@pytest.mark.parametrize("name", sorted(NOISES))
def test_two_sided_bounds_hold_with_probability_1_minus_alpha(name):
    """With probability >= 1 - alpha both pA_lower <= pA and pB_upper >= pB (Bonferroni), and then
    the radius is at most radius_two_sided(pA, pB) (it grows in pA_lower and falls in pB_upper):
    a radius above that value may happen at rate <= alpha."""
    alpha, m = 0.2, 3000
    noise = get_noise(name, 0.5)
    s = Smooth(Buckets(noise), 3, None, noise, seed=0)
    pred, radius = s.certify_batch(torch.zeros(m, 1, 1, 1), 50, 1000, alpha, 100_000, bound="two-sided")
    assert (pred == 0).float().mean() > 0.9
    ideal = noise.radius_two_sided(0.6, 0.38)
    over = int(((pred == 0) & (radius > ideal + 1e-12)).sum())
    assert over <= binom.ppf(0.999, m, alpha)
    assert over >= binom.ppf(0.001, m, alpha / 8)  # not vacuous


# -- training methods draw the chosen noise -------------------------------------------------------
def test_training_methods_draw_the_chosen_noise():
    from smoothcert.methods import create_method

    lam = 0.5 * math.sqrt(3)  # uniform noise at sigma 0.5 lives in [-lam, lam]
    x, y = torch.full((256, 1, 8, 8), 0.5), torch.zeros(256, dtype=torch.long)
    for method, extra in (("gauss", {}), ("maxup-gauss", {"m": 2}), ("maxup", {"augment": "none", "m": 2})):
        meth = create_method(method, sigma=0.5, noise="uniform", **extra)
        d = meth.augmentation(x, y)[0] - x
        assert d.abs().max() <= lam + 1e-6 and d.std().item() == pytest.approx(0.5, rel=0.02)
        assert meth.params()["noise"] == "uniform"
        assert "noise" not in create_method(method, sigma=0.5, **extra).params()  # gaussian configs as before
    torch.manual_seed(0)
    alps = create_method("alps", sigma=0.5, noise="laplace")
    d = alps.perturb(x) - 0.5  # mixing identical images leaves x: the rest is Laplace noise
    assert kstest(d.flatten().numpy(), laplace(scale=0.5 / math.sqrt(2)).cdf).pvalue > 1e-3
    adv = create_method("smoothadv", sigma=0.5, epsilon=0.25, noise="uniform")
    assert adv.noise == UniformNoise(0.5) and adv.params()["noise"] == "uniform"
