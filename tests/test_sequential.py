"""Sequential certification: the confidence sequence's coverage under optional stopping, and the
soundness of ``Smooth.certify_sequential`` on a linear classifier whose smoothed probabilities are
known in closed form (f(x) = [x_1 > b] under N(0, sigma^2 I): pA = Phi((x_1 - b) / sigma), and the
smoothed classifier's true robust radius is the distance |x_1 - b| to the hyperplane).

alpha is large (0.1) so that violations are frequent enough to be seen; every rate is checked
against alpha plus three Monte Carlo standard errors.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from smoothcert.noise import GaussianNoise
from smoothcert.sequential import (DEFAULT_SEQUENCE, ConfidenceSequence, StoppingRule, abstain_test_pvalues,
                                   alpha_spending, confidence_sequence, look_schedule)
from smoothcert.stats import abstain_test_pvalue
from smoothcert.smoothing import ABSTAIN, Smooth
from smoothcert.validation import ArgumentError

ALPHA = 0.1
N_MAX = 2000


def mc_limit(alpha: float, trials: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def simulate(rule: StoppingRule, p: float, trials: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Run ``rule`` on ``trials`` Bernoulli(p) streams (numpy, binomial increments between looks):
    (radius at stop, -inf for abstain; samples used)."""
    rng = np.random.default_rng(seed)
    nA = np.zeros(trials, dtype=np.int64)
    radius = np.full(trials, -np.inf)
    used = np.zeros(trials, dtype=np.int64)
    running = np.arange(trials)
    prev = 0
    for k, n_k in enumerate(rule.cs.looks):
        nA[running] += rng.binomial(int(n_k) - prev, p, size=running.size)
        prev = int(n_k)
        used[running] = prev
        stop, radius[running] = rule.step(nA[running], k)
        running = running[~stop]
        if running.size == 0:
            break
    return radius, used


# -- the confidence sequence -------------------------------------------------------------------
def test_schedule_and_spending():
    looks = look_schedule(100_000)
    assert looks[-1] == 100_000 and np.all(np.diff(looks) > 0) and looks[0] == 64
    alphas = alpha_spending(looks, 0.001)
    assert alphas.sum() == pytest.approx(0.001) and alphas[-1] == pytest.approx(0.0005)
    assert np.all(np.diff(alphas[:-1]) > 0)  # spent mostly late
    assert look_schedule(1).tolist() == [1] and alpha_spending(look_schedule(1), 0.01).tolist() == [0.01]


@pytest.mark.parametrize("p", [0.5, norm.cdf(0.5), 0.97, 0.999])
def test_confidence_sequence_covers_simultaneously(p):
    """P(p < L_k for SOME look k) <= alpha: the event that any optional-stopping rule (in
    particular "stop as soon as the lower bound passes p", the worst one) could exploit.
    p = Phi(0.5) is exactly the threshold of grid radius 0.5 sigma."""
    cs = ConfidenceSequence.create(N_MAX, ALPHA)
    trials = 6000
    rng = np.random.default_rng(1)
    increments = np.diff(np.concatenate([[0], cs.looks]))
    counts = np.cumsum(rng.binomial(increments[None, :], p, size=(trials, len(increments))), axis=1)
    violated = np.zeros(trials, dtype=bool)
    for k in range(len(cs.looks)):
        violated |= cs.lower(counts[:, k], k) > p
    assert violated.mean() <= mc_limit(ALPHA, trials)


@pytest.mark.parametrize("r_over_sigma", [0.0, 0.5, 1.5])
def test_stopping_rule_false_certificates_at_threshold(r_over_sigma):
    """The hard case: pA a hair below the level that certifies grid radius r, so that any
    certificate of r (or more) is false. The rule keeps looking while r stays reachable."""
    noise = GaussianNoise(1.0)
    radii = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    rule = StoppingRule(noise, ConfidenceSequence.create(N_MAX, ALPHA), radii)
    p = noise.p_lower_needed(r_over_sigma) - 1e-9
    trials = 6000
    radius, used = simulate(rule, p, trials, seed=2)
    assert np.mean(radius >= r_over_sigma) <= mc_limit(ALPHA, trials)
    assert used.max() <= N_MAX


def test_stopping_rule_without_grid_is_sound():
    noise = GaussianNoise(0.5)
    rule = StoppingRule(noise, ConfidenceSequence.create(N_MAX, ALPHA))
    trials = 4000
    for r_true in (0.1, 0.6):
        radius, _ = simulate(rule, noise.p_lower_needed(r_true), trials, seed=3)
        assert np.mean(radius > r_true) <= mc_limit(ALPHA, trials)


# -- Smooth.certify_sequential on a linear classifier -------------------------------------------
class Halfspace(torch.nn.Module):
    """f(x) = 1 if x_1 > b else 0, as two logits (x_1 is the first coordinate)."""

    def __init__(self, b: float = 0.0):
        super().__init__()
        self.b = b
        self.rows = 0  # inputs seen: every noisy sample the sampler draws goes through here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        v = x.flatten(1)[:, 0] - self.b
        return torch.stack([-v, v], 1)


def inputs(offsets: list[float], copies: int, b: float = 0.0) -> tuple[torch.Tensor, np.ndarray]:
    """``copies`` copies of a (1, 1, 2) input with x_1 = b + offset, for each offset."""
    off = np.repeat(np.asarray(offsets, dtype=np.float64), copies)
    xs = torch.zeros(len(off), 1, 1, 2)
    xs[:, 0, 0, 0] = torch.from_numpy(off + b).float()
    return xs, off


@pytest.mark.parametrize("radii, sequence", [(np.arange(0, 1.01, 0.25), "mixture"), (None, "mixture"),
                                             (np.arange(0, 1.01, 0.25), "cp-union")])
def test_certify_sequential_sound_on_halfspace(radii, sequence):
    """False certificate: a class other than g(x) = [x_1 > b], or a radius beyond the distance
    |x_1 - b|. Inputs sit just below grid thresholds (where a certificate of that level is
    false) and exactly on them; the rate must be consistent with alpha."""
    sigma = 0.5
    smooth = Smooth(Halfspace(0.3), 2, sigma, seed=0)
    eps = 1e-4
    offsets = [0.25 - eps, 0.5 - eps, -(0.5 - eps), 0.25, 0.75 - eps]
    copies = 400
    xs, off = inputs(offsets, copies, b=0.3)
    pred, radius, used = smooth.certify_sequential_batch(xs, 20, N_MAX, ALPHA, 50_000, radii=radii,
                                                         sequence=sequence)
    pred, radius = pred.numpy(), radius.numpy()
    truth = (off > 0).astype(np.int64)
    certified = pred != ABSTAIN
    false = certified & ((pred != truth) | (radius > np.abs(off) + 1e-6))
    for j in range(len(offsets)):
        block = slice(j * copies, (j + 1) * copies)
        assert false[block].mean() <= mc_limit(ALPHA, copies), offsets[j]
    assert certified.mean() > 0.5  # not sound by abstaining
    assert int(used.max()) <= N_MAX


def test_never_more_than_n_max_samples_and_counts_add_up():
    smooth = Smooth(Halfspace(), 2, 1.0, seed=1, chunk_size=777)  # fixed chunk: no probe forwards
    model = smooth.model  # the inference copy the sampler runs
    xs, _ = inputs([0.0, 0.05, 0.3, 3.0, -4.0], 4)
    n0, n_max = 30, 5000
    for radii in (np.arange(0, 3.01, 0.5), None):
        model.rows = 0
        _, _, used = smooth.certify_sequential_batch(xs, n0, n_max, 0.001, 777, radii=radii)
        assert int(used.max()) <= n_max
        assert model.rows == n0 * len(xs) + int(used.sum())  # exactly n0 + n_used per input


def test_stops_early_on_easy_inputs():
    smooth = Smooth(Halfspace(), 2, 0.25, seed=2)
    xs, _ = inputs([2.0, -2.0], 5)  # pA = Phi(8): ~1
    n_max = 100_000
    pred, radius, used = smooth.certify_sequential_batch(xs, 100, n_max, 0.001, 10_000, radii=[0.0, 0.25, 0.5])
    assert pred.tolist() == [1] * 5 + [0] * 5 and radius.tolist() == [0.5] * 10
    assert int(used.max()) < n_max // 50  # ~600 samples certify 2 sigma at pA ~ 1
    # a three-way tie (pA = 1/3): the upper bound falls below 1/2 quickly -> early abstention
    a = 0.25 * norm.ppf(2 / 3)
    three = torch.nn.Sequential(torch.nn.Flatten(), _Bands(a))
    p3, r3, u3 = Smooth(three, 3, 0.25, seed=3).certify_sequential_batch(torch.zeros(4, 1, 1, 2), 100, n_max,
                                                                           0.001, 10_000, radii=[0.0, 0.5])
    assert p3.tolist() == [ABSTAIN] * 4 and r3.tolist() == [0.0] * 4 and int(u3.max()) < n_max // 50


class _Bands(torch.nn.Module):
    """Class 0 / 1 / 2 for x_1 < -a / |x_1| <= a / x_1 > a."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0]
        return torch.nn.functional.one_hot((v > -self.a).long() + (v > self.a).long(), 3).float()


def test_seeds_reproducible_and_single_matches_batch():
    xs, _ = inputs([0.1, 0.6], 3)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        runs.append(Smooth(Halfspace(), 2, 0.5).certify_sequential_batch(xs, 50, 3000, 0.01, 1000, generator=g))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    one = [Smooth(Halfspace(), 2, 0.5, seed=5).certify_sequential(xs[1], 50, 3000, 0.01, 1000, radii=[0.0, 0.25])
           for _ in range(2)]
    assert one[0] == one[1] and isinstance(one[0][2], int)


def test_grid_radius_is_a_lower_bound_of_the_radius_certified():
    """With the same draws (same seed) the grid radius is the grid level under the no-grid
    radius at the same stopping look, and never above the largest grid radius."""
    xs, _ = inputs([0.4], 1)
    p, r, n = Smooth(Halfspace(), 2, 0.5, seed=4).certify_sequential(xs[0], 50, 5000, 0.01, 1000,
                                                                    radii=[0.0, 0.25, 0.5])
    cs = confidence_sequence(DEFAULT_SEQUENCE, 5000, 0.01)
    assert p == 1 and r in (0.0, 0.25) and n in cs.looks.tolist()


@pytest.mark.parametrize("kwargs, arg", [
    (dict(radii=[0.5, 0.25]), "radii"),
    (dict(radii=[0.0, 0.0]), "radii"),
    (dict(radii=[-0.25, 0.5]), "radii"),
    (dict(radii=[]), "radii"),
    (dict(n_max=0), "n_max"),
    (dict(tol=0.0), "tol"),
    (dict(tol=-1.0), "tol"),
    (dict(alpha=1.0), "alpha"),
])
def test_bad_input(kwargs, arg):
    call = dict(n0=10, n_max=100, alpha=0.01, batch_size=10)
    call.update(kwargs)
    smooth = Smooth(Halfspace(), 2, 0.5)
    with pytest.raises(ArgumentError) as err:
        smooth.certify_sequential(torch.zeros(1, 1, 2), **call)
    assert err.value.arg == arg and str(err.value).startswith(arg)


def test_grid_level_matches_fixed_n_when_clear():
    """Not just sound but as good as fixed N: where fixed-N CERTIFY (n = n_max) lands clearly
    inside one grid cell, sequential certification reports that cell's level (and saves samples)."""
    sigma, n_max = 0.5, 10_000
    radii = np.arange(0, 2.01, 0.25)
    xs, off = inputs([0.4, -0.9, 1.2], 100)  # true radii 0.4, 0.9, 1.2: levels 0.25, 0.75, 1.0
    smooth = Smooth(Halfspace(), 2, sigma, seed=6)
    pred, radius, used = smooth.certify_sequential_batch(xs, 100, n_max, 0.001, 100_000, radii=radii)
    fixed_pred, fixed_radius = smooth.certify_batch(xs, 100, n_max, 0.001, 100_000)
    fixed_level = radii[np.searchsorted(radii, fixed_radius.numpy(), side="right") - 1]
    assert np.all(fixed_pred.numpy() == (off > 0)) and np.all(pred.numpy() == (off > 0))
    assert np.mean(radius.numpy() == fixed_level) >= 0.95
    assert used.double().mean() < n_max / 2


# -- sequential PREDICT ---------------------------------------------------------------------
def test_abstain_test_pvalues_match_the_scalar_test():
    c1 = np.array([0, 1, 5, 5, 6, 30, 52, 500, 7000])
    c2 = np.array([0, 0, 5, 4, 0, 20, 48, 430, 6900])
    expected = [abstain_test_pvalue(a, b) for a, b in zip(c1, c2)]
    assert abstain_test_pvalues(c1, c2) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_predict_sequential_wrong_class_rate():
    """At x_1 = b the two classes tie (pA = pB = 1/2), so any class returned is wrong; just
    above b, class 0 is wrong. Either must happen with probability <= alpha."""
    smooth = Smooth(Halfspace(), 2, 1.0, seed=8)
    copies = 1500
    xs, off = inputs([0.0, 0.02], copies)
    pred, used = smooth.predict_sequential_batch(xs, N_MAX, ALPHA, 100_000)
    pred = pred.numpy()
    assert np.mean(pred[:copies] != ABSTAIN) <= mc_limit(ALPHA, copies)
    assert np.mean(pred[copies:] == 0) <= mc_limit(ALPHA, copies)
    assert int(used.max()) <= N_MAX


def test_predict_sequential_stops_early_and_agrees():
    # the second release's numbers, with its sequence (cp-geometric: first look 64) passed explicitly
    smooth = Smooth(Halfspace(), 2, 0.25, seed=9)
    xs, _ = inputs([1.0, -1.0, 0.2], 4)
    pred, used = smooth.predict_sequential_batch(xs, 100_000, 0.001, 10_000, sequence="cp-geometric")
    assert pred.tolist() == [1] * 4 + [0] * 4 + [1] * 4
    assert int(used[:8].max()) == 64 and int(used.max()) < 2_000
    p, n = smooth.predict_sequential(xs[0], 100_000, 0.001, 10_000, sequence="cp-geometric")
    assert (p, n) == (1, 64)
    # the default (mixture) decides pA ~ 1 at its first look, 16 samples
    pred, used = smooth.predict_sequential_batch(xs, 100_000, 0.001, 10_000)
    assert pred.tolist() == [1] * 4 + [0] * 4 + [1] * 4
    assert int(used[:8].max()) == 16 and int(used.max()) < 2_000


# -- dataset level and command line ----------------------------------------------------------------
SEQ_CLI = ["--N0", "10", "--N", "2000", "--batch", "500", "--seed", "3", "--quiet", "--sequential"]


def _rows(path):
    from smoothcert.logs import read_tsv
    header, rows = read_tsv(path)
    t = header.index("time")
    return header, [r[:t] + r[t + 1:] for r in rows]


def test_cli_sequential_log_resume_and_seed(digits_run, runner, tmp_path):
    from smoothcert.cli import main
    from smoothcert.logs import CERTIFY_COLUMNS
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    args = ["certify", str(digits_run), "--radii", "0:1:0.25", *SEQ_CLI]
    assert runner.invoke(main, [*args, "--max", "6", "--out", str(full)]).exit_code == 0
    assert runner.invoke(main, [*args, "--max", "3", "--out", str(part)]).exit_code == 0
    r = runner.invoke(main, [*args, "--max", "6", "--out", str(part)])
    assert r.exit_code == 0, r.output
    header, rows = _rows(full)
    assert tuple(header) == CERTIFY_COLUMNS + ("n_used",)  # Cohen's columns, then n_used
    assert _rows(part) == (header, rows)  # resumed == uninterrupted (seeded)
    for idx, label, pred, radius, correct, n_used in rows:
        assert float(radius) in (0.0, 0.25, 0.5, 0.75, 1.0) and 1 <= int(n_used) <= 2000
        assert int(correct) == int(int(pred) == int(label))
    meta = json.loads(Path(str(full) + ".meta.json").read_text())
    assert meta["certify"]["sequential"] is True and meta["certify"]["radii"] == [0, 0.25, 0.5, 0.75, 1.0]
    # no grid: radius itself, tol recorded
    out = tmp_path / "nogrid.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), *SEQ_CLI, "--tol", "0.05", "--max", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(Path(str(out) + ".meta.json").read_text())["certify"]["tol"] == 0.05


def test_cli_sequence_is_recorded_and_a_second_release_log_resumes_only_with_its_own(digits_run, runner, tmp_path):
    """--sequence picks the confidence sequence and the metadata always records it; a sequential
    log of the second release (its metadata has no sequence: it was cp-geometric) resumes with
    --sequence cp-geometric, and with the new default it is refused naming --sequence."""
    from smoothcert.cli import main
    args = ["certify", str(digits_run), "--radii", "0:1:0.25", *SEQ_CLI]
    out, old = tmp_path / "mix.tsv", tmp_path / "old.tsv"
    assert runner.invoke(main, [*args, "--max", "2", "--out", str(out)]).exit_code == 0
    assert json.loads(Path(str(out) + ".meta.json").read_text())["certify"]["sequence"] == "mixture"
    r = runner.invoke(main, [*args, "--max", "3", "--out", str(old), "--sequence", "cp-geometric"])
    assert r.exit_code == 0, r.output
    meta_file = Path(str(old) + ".meta.json")
    meta = json.loads(meta_file.read_text())
    assert meta["certify"].pop("sequence") == "cp-geometric"
    meta_file.write_text(json.dumps(meta))  # as the second release wrote it
    r = runner.invoke(main, [*args, "--max", "4", "--out", str(old)])
    assert r.exit_code == 2 and "--sequence" in r.output and "cp-geometric" in r.output, r.output
    r = runner.invoke(main, [*args, "--max", "4", "--out", str(old), "--sequence", "cp-geometric"])
    assert r.exit_code == 0, r.output
    assert len(_rows(old)[1]) == 4


def test_resume_of_a_fixed_log_as_sequential_is_refused(digits_run, tmp_path):
    from smoothcert import certify_dataset, load_model
    from smoothcert.data import get_dataset
    from smoothcert.runner import Selection
    model, config = load_model(digits_run)
    smooth = Smooth(model, config["num_classes"], config["sigma"])
    digits = get_dataset("digits", "test")
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, 10, 200, 0.01, 64, selection=Selection(1, 2), seed=1)
    with pytest.raises(ValueError, match="n_used|sequential"):  # refused: other columns, other settings
        certify_dataset(smooth, digits, out, 10, 200, 0.01, 64, selection=Selection(1, 3), seed=1, sequential=True)
    for kwargs, arg in ((dict(radii=[0.0]), "radii"), (dict(tol=0.1), "tol"),
                        (dict(sequential=True, radii=[0.5, 0.1]), "radii"), (dict(sequential=True, tol=0.0), "tol")):
        with pytest.raises(ArgumentError) as err:
            certify_dataset(smooth, digits, tmp_path / "x.tsv", 10, 200, 0.01, 64, **kwargs)
        assert err.value.arg == arg
    assert not (tmp_path / "x.tsv").exists()


@pytest.mark.parametrize("args,needle", [
    (["--radii", "0:1:0.25"], "--radii"),
    (["--tol", "0.1"], "--tol"),
    (["--sequential", "--radii", "0.5,0.25"], "--radii"),
    (["--sequential", "--radii", "-0.25,0.5"], "--radii"),
    (["--sequential", "--radii", "a:b"], "--radii"),
    (["--sequential", "--tol", "0"], "--tol"),
    (["--sequential", "--tol", "-1"], "--tol"),
    (["--sequential", "--N", "0"], "--N"),
    (["--sequence", "mixture"], "--sequence"),
    (["--sequential", "--sequence", "bonferroni"], "--sequence"),
])
def test_cli_sequential_errors_exit_2_one_line(digits_run, runner, tmp_path, args, needle):
    from smoothcert.cli import main
    r = runner.invoke(main, ["certify", str(digits_run), "--out", str(tmp_path / "o.tsv"), *args])
    assert r.exit_code == 2
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and needle in err[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.tsv").exists()


@pytest.mark.parametrize("noise,norm_", [("laplace", "l1"), ("uniform", "linf"), ("gaussian", "linf")])
def test_certify_sequential_other_noises_and_norms_are_sound(noise, norm_):
    """The stopping rule uses the noise's radius for the asked norm: on the half-space the true
    L1 / Linf distance of x to the boundary is |x_1 - b| (the input has 2 coordinates), so false
    certificates stay at a rate consistent with alpha, and the radius is the noise's formula."""
    smooth = Smooth(Halfspace(0.3), 2, 0.5, noise=noise, seed=0)
    copies = 300
    xs, off = inputs([0.2, 0.4], copies, b=0.3)
    pred, radius, used = smooth.certify_sequential_batch(xs, 20, N_MAX, ALPHA, 50_000, norm=norm_)
    pred, radius = pred.numpy(), radius.numpy()
    certified = pred != ABSTAIN
    false = certified & ((pred != (off > 0)) | (radius > np.abs(off) + 1e-6))
    assert false.mean() <= mc_limit(ALPHA, 2 * copies) and certified.mean() > 0.5
    # sharper, and it fails if the rule used another norm's formula: never above the radius that
    # the true pA gives for this norm (pA in closed form: the noise's 1-D CDF at the distance)
    lam = smooth.noise.sigma / math.sqrt(2) if noise == "laplace" else smooth.noise.sigma * math.sqrt(3)
    d = np.abs(off)
    p_true = {"gaussian": norm.cdf(d / 0.5), "laplace": 1 - 0.5 * np.exp(-d / lam),
              "uniform": np.minimum(0.5 + d / (2 * lam), 1.0)}[noise]
    best = np.asarray(smooth.noise.radius(p_true, norm_, 2))
    assert np.mean(certified & (radius > best + 1e-6)) <= mc_limit(ALPHA, 2 * copies)
    assert int(used.max()) <= N_MAX
    with pytest.raises(ArgumentError) as e:
        smooth.certify_sequential_batch(xs[:2], 20, N_MAX, ALPHA, 1000, bound="two-sided")
    assert e.value.arg == "bound"
    if noise == "laplace":
        with pytest.raises(ArgumentError) as e:
            smooth.certify_sequential_batch(xs[:2], 20, N_MAX, ALPHA, 1000, norm="l2")
        assert e.value.arg == "norm"
