"""PREDICT's abstain test with three classes (issue 23, item 8): Cohen et al. (2019) test the top
count nA against the runner-up's nB (nA ~ Bin(nA + nB, 1/2)), not against all other votes
n - nA. With two classes the two are the same; here the smoothed class probabilities are known in
closed form, (1/2, 0.3, 0.2), so nA is about n / 2: the test of (nA, nB) rejects by a wide
margin, the test of (nA, n - nA) almost never does. Checked for predict, predict_batch,
predict_sequential and predict_sequential_batch."""
import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from smoothcert import Smooth
from smoothcert.sequential import abstain_test_pvalues
from smoothcert.stats import abstain_test_pvalue

PROBS = (0.5, 0.3, 0.2)
N, ALPHA = 1000, 0.001


class Thresholds(nn.Module):
    """Three classes by thresholding the (single) input coordinate u: class 0 if u < 0, class 1 if
    0 <= u < Phi^-1(0.8), class 2 otherwise. At x = 0 under N(0, 1) noise the smoothed class
    probabilities are exactly PROBS."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cuts", torch.tensor([0.0, float(norm.ppf(PROBS[0] + PROBS[1]))]))

    def forward(self, x):
        u = x.flatten(1)[:, :1]
        cls = (u >= self.cuts).sum(1)
        return nn.functional.one_hot(cls, 3).float()


@pytest.fixture
def smooth() -> Smooth:
    return Smooth(Thresholds(), 3, 1.0, seed=0)


def test_the_smoothed_probabilities_are_the_closed_form(smooth):
    counts = smooth.sample_counts(torch.zeros(1, 1, 1, 1), 20_000, 5000)[0].cpu().numpy()
    assert np.allclose(counts / 20_000, PROBS, atol=0.015)


def test_the_two_tests_disagree_on_these_counts():
    # about what n = 1000 samples give: nA = 500, nB = 300, nC = 200
    assert abstain_test_pvalue(500, 300) < 1e-10 < ALPHA < abstain_test_pvalue(500, 1000 - 500)
    assert abstain_test_pvalues(np.array([500]), np.array([300]))[0] < 1e-10
    assert abstain_test_pvalues(np.array([500]), np.array([500]))[0] > 0.5


def test_predict_tests_the_top_count_against_the_runner_up(smooth):
    xs = torch.zeros(20, 1, 1, 1)
    assert smooth.predict_batch(xs, N, ALPHA, 4000).tolist() == [0] * 20
    assert [smooth.predict(xs[0], N, ALPHA, 1000) for _ in range(5)] == [0] * 5


def test_sequential_predict_tests_the_top_count_against_the_runner_up(smooth):
    xs = torch.zeros(20, 1, 1, 1)
    pred, used = smooth.predict_sequential_batch(xs, N, ALPHA, 4000)
    assert pred.tolist() == [0] * 20 and int(used.max()) <= N
    assert [smooth.predict_sequential(xs[0], N, ALPHA, 1000)[0] for _ in range(5)] == [0] * 5
