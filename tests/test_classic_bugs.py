"""Tests aimed at the classic bugs of a smoothing toolkit, each on a classifier whose answer is
known exactly, so that the buggy variant fails:

* PREDICT testing at 2 alpha (or alpha / 2) instead of alpha: unanimous votes right at the threshold;
* ``attack --smoothed`` and the certificate check evaluating the base model instead of PREDICT:
  a base classifier whose own prediction differs from its smoothed classifier's;
* the certificate check dropping PREDICT's alpha from its null rate: an exact binomial p-value;
* the Jensen–Shannon consistency loss with a KL direction reversed or without its 1/k.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from smoothcert import Smooth
from smoothcert.attacks import PGD, SmoothedEval, attack_dataset, check_certificates
from smoothcert.cli import main
from smoothcert.data import DATASETS, DatasetEntry, TensorImageDataset
from smoothcert.logs import CERTIFY_COLUMNS, TSVLog, read_tsv
from smoothcert.losses import js_divergence
from smoothcert.models import MODELS

from conftest import write_run


# -- PREDICT's abstain threshold -------------------------------------------------------------------
class Constant(nn.Module):
    """Every noisy copy votes for class ``c``: n samples give the counts (n, 0) exactly."""

    def __init__(self, c: int = 1, k: int = 3):
        super().__init__()
        self.c, self.k = c, k
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.c), self.k).float()


@pytest.mark.parametrize("n, alpha, expected", [
    # two-sided p-value of n unanimous votes: 2 * 0.5^n
    (9, 0.0025, Smooth.ABSTAIN),  # p = 0.0039 in (alpha, 2 alpha]: testing at 2 alpha would predict
    (9, 0.004, 1),                # p = 0.00390625 <= alpha
    (10, 0.0025, 1),              # p = 0.00195 in (alpha / 2, alpha]: testing at alpha / 2 would abstain
    (10, 0.0019, Smooth.ABSTAIN),  # p = 0.00195 > alpha
])
def test_predict_abstains_exactly_when_the_pvalue_exceeds_alpha(n, alpha, expected):
    assert 2 * 0.5 ** n != alpha
    smooth = Smooth(Constant(1), 3, 0.25, seed=0)
    assert smooth.predict(torch.zeros(1, 2, 2), n=n, alpha=alpha, batch_size=4) == expected
    assert smooth.predict_batch(torch.zeros(3, 1, 2, 2), n=n, alpha=alpha, batch_size=5).tolist() == [expected] * 3


# -- a base classifier that disagrees with its smoothed classifier ---------------------------------
SIDE, SIGMA, WIDTH = 4, 0.5, 0.005


class Spike(nn.Module):
    """Class 1 only in a thin slab |mean(x) - 1/2| < ~1.18 WIDTH, class 0 elsewhere (smooth logits, so
    attacks get gradients). At x = 1/2 the base model says 1; under N(0, SIGMA^2 I) noise mean(x)
    moves by N(0, (SIGMA / SIDE)^2) = N(0, 0.125^2), so P(f(x + noise) = 1) < 0.04 for every x
    and the smoothed classifier says 0 everywhere."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, input_size: int = SIDE):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.flatten(1).mean(1) - 0.5
        spike = 2 * torch.exp(-d ** 2 / (2 * WIDTH ** 2)) - 1  # > 0 iff |d| < WIDTH * sqrt(2 ln 2)
        return torch.stack([torch.zeros_like(spike), 10 * spike], 1) + 0 * self.dummy


def _spike_data(count: int = 12) -> TensorImageDataset:
    return TensorImageDataset(torch.full((count, 1, SIDE, SIDE), 0.5), torch.zeros(count, dtype=torch.long),
                              name="spike-data", num_classes=2, mean=(0.0,), std=(1.0,), default_arch="spike")


@pytest.fixture
def spike_run(tmp_path, request):
    """A run directory of the Spike model on 12 mid-grey inputs of class 0 (registered for the test)."""
    MODELS.add("spike", Spike)
    request.addfinalizer(lambda: MODELS.remove("spike"))
    DATASETS.add("spike-data", DatasetEntry(lambda split, root, download: _spike_data(), False, "generated"))
    request.addfinalizer(lambda: DATASETS.remove("spike-data"))
    return write_run(tmp_path / "spike", arch="spike", dataset="spike-data", input_shape=(1, SIDE, SIDE),
                     num_classes=2, sigma=SIGMA)


def test_the_spike_model_disagrees_with_its_smoothed_classifier():
    model, x = Spike(), torch.full((1, 1, SIDE, SIDE), 0.5)
    assert model(x).argmax(1).item() == 1
    smooth = Smooth(model, 2, SIGMA, seed=0)
    counts = smooth.sample_counts(x, 2000, 2000)
    assert counts[0, 1] < 0.06 * 2000 and smooth.predict(x[0], 200, 0.001, 200) == 0


def test_smoothed_attack_evaluates_predict_not_the_base_model(spike_run, runner, tmp_path):
    out = tmp_path / "a.tsv"
    r = runner.invoke(main, ["attack", str(spike_run), "--smoothed", "--norm", "l2", "--eps", "0.1", "--N", "200",
                             "--num-noise-vec", "4", "--max", "6", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = read_tsv(out)[1]
    assert len(rows) == 6
    assert all(row[2] == "0" and row[4] == "0" for row in rows)  # predict and clean_predict: g's class, not f's
    assert "clean accuracy 1.0000, robust accuracy 1.0000" in r.output
    base = runner.invoke(main, ["attack", str(spike_run), "--norm", "l2", "--eps", "0.1", "--max", "6", "--quiet"])
    assert "clean accuracy 0.0000" in base.output  # the base model itself says 1


def _plant(path, certificates):
    with TSVLog(path, CERTIFY_COLUMNS) as f:
        for idx, (label, c_a, radius) in enumerate(certificates):
            f.write([idx, label, c_a, radius, int(label == c_a), 0.1])
    return path


def test_certificate_check_evaluates_predict_not_the_base_model(spike_run, runner, tmp_path):
    log = _plant(tmp_path / "cert.tsv", [(0, 0, 0.1)] * 12)  # true certificates of g (which says 0)
    r = runner.invoke(main, ["check-certificates", str(spike_run), str(log), "--N", "200", "--num-noise-vec", "4",
                             "--quiet"])
    assert r.exit_code == 0 and "12 certificates checked" in r.output and " 0 violations" in r.output, r.output


def test_certificate_check_null_rate_adds_predicts_alpha(tmp_path):
    # 20 certificates, one of them false (cA = 1 where g says 0): exactly one violation
    log = _plant(tmp_path / "cert.tsv", [(0, 0, 0.1)] * 19 + [(0, 1, 0.1)])
    ds = _spike_data(20)
    cert_alpha, alpha, level = 0.01, 0.01, 0.25
    result = check_certificates(Spike(), ds, log, SIGMA, cert_alpha=cert_alpha, n=200, alpha=alpha, num_noise_vec=4,
                                steps=2, level=level, seed=0)
    assert (result.checked, result.violations) == (20, 1)
    assert result.null_rate == pytest.approx(cert_alpha + alpha)
    # P(Bin(20, 0.02) >= 1) = 0.332 is not significant at 0.25; with the null rate 0.01 alone it would be 0.182
    assert result.p_value == pytest.approx(1 - (1 - cert_alpha - alpha) ** 20, rel=1e-9)
    assert not result.significant


def test_attack_dataset_library_smoothed_uses_predict_and_leaves_the_model_alone():
    model = Spike()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = attack_dataset(model, _spike_data(4), PGD(0.1, 2, norm="l2"), smoothed=SmoothedEval(SIGMA, 4, 200),
                             seed=0)
    assert (summary.clean_correct, summary.robust_correct) == (4, 4)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_attack_predictor_keeps_the_callers_memory_format():
    # PREDICT lays its model out channels-last for speed: on a copy, never on the caller's model
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)).eval()
    assert model[0].weight.is_contiguous()
    ds = TensorImageDataset(torch.rand(2, 3, 6, 6), torch.zeros(2, dtype=torch.long), name="r", num_classes=10,
                            mean=(0.0,) * 3, std=(1.0,) * 3, default_arch="")
    attack_dataset(model, ds, PGD(0.1, 1, norm="l2"), smoothed=SmoothedEval(0.25, 2, 20), seed=0)
    assert model[0].weight.is_contiguous()


# -- the Jensen–Shannon consistency loss ----------------------------------------------------------
def test_js_divergence_matches_the_definition_by_hand():
    """JS(p_1..p_k) = (1/k) sum_i KL(p_i || M), M = mean_i p_i (AugMix, Eq. 4), batch mean: computed
    here in float64 from explicit probabilities. A reversed KL, KL(M || p_i), or a missing 1/k gives
    another number."""
    p = np.array([[[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]],
                  [[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]],
                  [[0.2, 0.2, 0.6], [0.6, 0.3, 0.1]]])  # (k = 3 distributions, batch 2, 3 classes)
    m = p.mean(0)
    expected = np.mean([np.mean([np.sum(p[i, b] * np.log(p[i, b] / m[b])) for i in range(3)]) for b in range(2)])
    reversed_kl = np.mean([np.mean([np.sum(m[b] * np.log(m[b] / p[i, b])) for i in range(3)]) for b in range(2)])
    assert abs(reversed_kl - expected) > 1e-3  # the two directions differ on these numbers
    logits = [torch.tensor(np.log(p[i]), dtype=torch.float64) for i in range(3)]
    assert js_divergence(*logits).item() == pytest.approx(expected, rel=1e-6)
    # k = 2: JS of two point masses apart is log 2 (the divergence's maximum)
    two = [torch.tensor([[50.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 50.0]], dtype=torch.float64)]
    assert js_divergence(*two).item() == pytest.approx(math.log(2), rel=1e-6)
