"""CERTIFY/PREDICT against closed forms, the sampler's counting, soundness, reproducibility."""
import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

from smoothcert import Smooth
from smoothcert.noise import GaussianNoise
from smoothcert.smoothing import sample_counts


class Constant(nn.Module):
    """Always predicts class ``c``."""

    def __init__(self, c: int, k: int = 3):
        super().__init__()
        self.c, self.k = c, k
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k)
        out[:, self.c] = 1.0
        return out


class Linear2(nn.Module):
    """Binary linear classifier: class 1 iff w.x + b > 0. Under N(0, sigma^2 I) noise,
    P(class 1) = Phi((w.x + b) / (sigma ||w||)) and the smoothed classifier's decision boundary is
    the same hyperplane, so the true L2 robustness radius of g at x is |w.x + b| / ||w||."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.register_buffer("w", w.flatten())
        self.b = b

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([-s, s], 1)


class Recorder(nn.Module):
    """Records every noisy batch it sees; predicts class 0."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], 2).index_fill_(1, torch.tensor([0]), 1.0)


class Identity(nn.Module):
    """Class = the input's (constant) pixel value rounded to an integer: ignores tiny noise."""

    def forward(self, x):
        k = 6
        cls = x.flatten(1).mean(1).round().long().clamp(0, k - 1)
        return nn.functional.one_hot(cls, k).float()


def test_abstain_constant_is_all_votes():
    s = Smooth(Constant(2), 3, 0.5)
    n, alpha = 1000, 0.001
    pred, radius = s.certify(torch.zeros(1, 4, 4), n0=10, n=n, alpha=alpha, batch_size=300)
    assert pred == 2
    # nA = n: pA_lower = alpha^(1/n), R = sigma * Phi^-1(alpha^(1/n))
    assert radius == pytest.approx(0.5 * norm.ppf(alpha ** (1 / n)), rel=1e-9)


def test_certify_abstains_when_lower_bound_below_half():
    w = torch.zeros(1, 2, 2)
    w[0, 0, 0] = 1.0
    s = Smooth(Linear2(w, 0.0), 2, 1.0, seed=0)  # pA = Phi(0) = 1/2 exactly
    preds = [s.certify(torch.zeros(1, 2, 2), 50, 500, 0.01, 256) for _ in range(20)]
    assert all(p == (Smooth.ABSTAIN, 0.0) for p in preds)


def test_predict_rules():
    s = Smooth(Constant(1), 3, 0.25, seed=0)
    assert s.predict(torch.zeros(1, 3, 3), n=20, alpha=0.001, batch_size=7) == 1
    # 2*0.5^9 = 0.0039 > 0.001 -> abstain with only 9 unanimous votes
    assert s.predict(torch.zeros(1, 3, 3), n=9, alpha=0.001, batch_size=7) == Smooth.ABSTAIN
    w = torch.zeros(1, 2, 2)
    w[0, 0, 0] = 1.0
    fair = Smooth(Linear2(w, 0.0), 2, 1.0, seed=1)
    abstains = sum(fair.predict(torch.zeros(1, 2, 2), 200, 0.05, 64) == Smooth.ABSTAIN for _ in range(40))
    assert abstains >= 30  # a fair coin: abstain with probability >= 0.95


def test_radius_formula_and_bound_on_linear_model():
    w = torch.zeros(1, 2, 2)
    w[0, 0, 0] = 1.0
    sigma, n, alpha = 0.5, 4000, 0.001
    s = Smooth(Linear2(w, 0.0), 2, sigma, seed=3)
    x = torch.zeros(1, 2, 2)
    x[0, 0, 0] = 0.3
    counts = s.sample_counts(x[None], n, 512, torch.Generator().manual_seed(7))
    nA = int(counts[0, 1])
    pred, radius = s.certify(x, 10, n, alpha, 512, generator=torch.Generator().manual_seed(11))
    assert pred == 1
    # radius = sigma * Phi^-1(beta.ppf(alpha, nA, n - nA + 1)) for the estimation counts
    # of the second draw: recompute from that draw's count.
    g = torch.Generator().manual_seed(11)
    s.sample_counts(x[None], 10, 512, g)  # selection draw
    nA2 = int(s.sample_counts(x[None], n, 512, g)[0, 1])  # estimation draw
    assert radius == pytest.approx(sigma * norm.ppf(beta.ppf(alpha, nA2, n - nA2 + 1)), rel=1e-9)
    assert abs(nA - n * norm.cdf(0.3 / sigma)) < 5 * np.sqrt(n * 0.25)


def test_soundness_on_linear_classifier():
    """Certified radius > true radius must happen at a rate consistent with alpha."""
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    b = 0.1
    sigma, alpha, n0, n = 0.5, 0.1, 20, 300
    s = Smooth(Linear2(w, b), 2, sigma, seed=0)
    xs = torch.randn(300, 1, 4, 4) * 0.4
    pred, radius = s.certify_batch(xs, n0, n, alpha, batch_size=4096)
    margin = xs.flatten(1) @ w.flatten() + b
    true_radius = margin.abs() / w.norm()
    true_class = (margin > 0).long()
    certified = pred != Smooth.ABSTAIN
    wrong = certified & ((pred != true_class) | (radius > true_radius.double() + 1e-9))
    assert certified.sum() > 150  # the test is not vacuous
    # violations ~ at most Bin(#certified, alpha): allow the 99.9% quantile
    assert int(wrong.sum()) <= binom.ppf(0.999, int(certified.sum()), alpha)
    # and the certificates are not trivially small: close to the truth on average
    ratio = (radius[certified] / true_radius.double()[certified]).mean()
    assert 0.5 < ratio <= 1.0


def test_sampler_packing_counts_each_input_separately():
    values = torch.tensor([0.0, 3.0, 1.0, 5.0, 2.0])
    xs = values.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    noise = GaussianNoise(1e-6)
    for batch_size in (1, 3, 7, 13, 1000):
        counts = sample_counts(Identity(), xs, 5, noise, 6, batch_size)
        expected = torch.zeros(5, 6, dtype=torch.long)
        expected[torch.arange(5), values.long()] = 5
        assert torch.equal(counts, expected), batch_size


def test_selection_and_estimation_use_independent_draws():
    rec = Recorder()
    s = Smooth(rec, 2, 1.0, seed=0)
    s.certify(torch.zeros(1, 2, 2), n0=8, n=8, alpha=0.01, batch_size=100)
    rec = s.model  # Smooth runs a copy of the caller's model
    assert len(rec.seen) == 2
    assert not torch.allclose(rec.seen[0], rec.seen[1])
    # within one draw, the noise rows differ too (no repeated noise vector)
    assert torch.unique(rec.seen[1].flatten(1), dim=0).shape[0] == 8


def test_noise_scale_is_sigma():
    rec = Recorder()
    s = Smooth(rec, 2, 0.3, seed=0, chunk_size=2000)
    s.sample_counts(torch.full((1, 1, 8, 8), 0.5), 2000, 2000)
    noise = s.model.seen[0] - 0.5  # Smooth runs a copy of the caller's model
    assert noise.std().item() == pytest.approx(0.3, rel=0.02)
    assert noise.mean().abs().item() < 0.01


def test_identical_seeds_identical_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.rand(3, 1, 4, 4)
    a = Smooth(net, 4, 0.5, seed=42).certify_batch(x, 20, 200, 0.01, 64)
    b = Smooth(net, 4, 0.5, seed=42).certify_batch(x, 20, 200, 0.01, 64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c1 = Smooth(net, 4, 0.5).sample_counts(x, 500, 128, torch.Generator().manual_seed(1))
    c2 = Smooth(net, 4, 0.5).sample_counts(x, 500, 128, torch.Generator().manual_seed(2))
    assert not torch.equal(c1, c2)


def test_model_state_restored_and_train_mode_not_used():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    net.train()
    before = net[2].running_mean.clone()
    Smooth(net, 2, 0.5, seed=0).certify(torch.zeros(1, 2, 2), 10, 50, 0.01, 16)
    assert net.training
    assert torch.equal(net[2].running_mean, before)  # eval mode during sampling


@pytest.mark.parametrize("kw,match", [({"n0": 0}, "n0"), ({"n": 0}, "n must"), ({"alpha": 1.0}, "alpha"),
                                      ({"batch_size": 0}, "batch_size")])
def test_library_errors_name_the_argument(kw, match):
    s = Smooth(Constant(0), 3, 0.5)
    args = {"n0": 10, "n": 10, "alpha": 0.01, "batch_size": 4, **kw}
    with pytest.raises(ValueError, match=match):
        s.certify(torch.zeros(1, 2, 2), **args)


def test_bad_sigma_and_classes():
    with pytest.raises(ValueError, match="sigma"):
        Smooth(Constant(0), 3, 0.0)
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(Constant(0), 1, 0.5)


def test_certify_batch_shapes_and_dtypes():
    s = Smooth(Constant(1), 3, 0.5, seed=0)
    pred, radius = s.certify_batch(torch.zeros(4, 1, 3, 3), 5, 50, 0.01, 33)
    assert pred.shape == (4,) and radius.shape == (4,)
    assert pred.dtype == torch.int64 and radius.dtype == torch.float64
    assert (pred == 1).all() and (radius > 0).all()
    assert s.predict_batch(torch.zeros(2, 1, 3, 3), 50, 0.01, 33).tolist() == [1, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_seeded_rerun():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).cuda()
    x = torch.rand(2, 1, 4, 4)
    a = Smooth(net, 4, 0.5, seed=5).certify_batch(x, 20, 500, 0.01, 64)
    b = Smooth(net, 4, 0.5, seed=5).certify_batch(x, 20, 500, 0.01, 64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bf16_autocast_and_channels_last_on_cpu_agree_with_fp32():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(2, 1, 8, 8)
    ref = Smooth(net, 3, 0.1).sample_counts(x, 400, 128, torch.Generator().manual_seed(0))
    for kw in ({"amp_dtype": torch.bfloat16}, {"channels_last": True}):
        got = Smooth(net, 3, 0.1, **kw).sample_counts(x, 400, 128, torch.Generator().manual_seed(0))
        assert got.sum() == 800
        # same noise; only float rounding differs, so at most a few votes move
        assert (got - ref).abs().sum() <= 40


# -- the sampler: chunk independence, soundness checks (speed helper, issue 17 / issue 12) ----------

@pytest.mark.parametrize("channels", [1, 3])
def test_seeded_counts_do_not_depend_on_the_chunk_size(channels):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    xs = torch.rand(3, channels, 6, 6)
    noise = GaussianNoise(1.0)
    runs = {}
    for chunk in (1, 7, 50, 100, 300, 1000):
        for cl in (False, True):
            runs[chunk, cl] = sample_counts(net, xs, 250, noise, 5, 100, torch.Generator().manual_seed(9),
                                            channels_last=cl, chunk_size=chunk)
    ref = runs[100, False]
    assert len(set(ref[0].tolist())) > 1  # the noise matters: not a constant classifier
    for key, counts in runs.items():
        assert torch.equal(counts, ref), key
    s = Smooth(net, 5, 1.0)  # and through Smooth with the probed chunk
    assert torch.equal(s.sample_counts(xs, 250, 100, torch.Generator().manual_seed(9)), ref)


def test_counts_sum_to_num_for_every_packing():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 7))
    for B, num, block, chunk in ((1, 1, 1, 1), (5, 3, 4, 2), (4, 10, 7, 21), (3, 100, 64, 16), (2, 33, 1000, 5)):
        counts = sample_counts(net, torch.rand(B, 1, 2, 2), num, GaussianNoise(2.0), 7, block, chunk_size=chunk)
        assert counts.shape == (B, 7)
        assert counts.sum(1).tolist() == [num] * B


class Logits(nn.Module):
    def __init__(self, k: int, value: float = 1.0, every: int = 0):
        super().__init__()
        self.k, self.value, self.every = k, value, every

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.k)
        out[:, 0] = 1.0
        if self.every:
            out[:: self.every, 1] = self.value
        return out


def test_logits_of_the_wrong_width_are_an_error_naming_both_numbers():
    with pytest.raises(ValueError, match=r"num_classes=3.*4 logits"):
        Smooth(Logits(4), 3, 0.5).certify(torch.zeros(1, 2, 2), 10, 50, 0.01, 16)
    with pytest.raises(ValueError, match=r"num_classes=5.*4 logits"):
        sample_counts(Logits(4), torch.zeros(2, 1, 2, 2), 20, GaussianNoise(0.5), 5, 16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_are_an_error_not_a_vote(bad):
    with pytest.raises(ValueError, match="non-finite"):
        Smooth(Logits(3, bad, every=37), 3, 0.5).certify(torch.zeros(1, 2, 2), 10, 100, 0.01, 16)
