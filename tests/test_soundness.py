"""Bad input never yields a certificate (issue 12, soundness): non-finite inputs, non-finite
logits, more outputs than classes, input dtypes, non-real sigma; the caller's model is left alone;
CERTIFY takes cA from the selection draw; old Gaussian runs certify exactly as before."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from smoothcert import Smooth
from smoothcert.noise import GaussianNoise
from smoothcert.smoothing import sample_counts
from smoothcert.validation import ArgumentError


def linear(k: int = 3, d: int = 4, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).to(dtype)


# -- non-finite inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused_naming_the_input(bad):
    s = Smooth(linear(), 3, 0.25, seed=0)
    x = torch.rand(1, 2, 2)
    x[0, 1, 0] = bad  # one pixel is enough
    with pytest.raises(ArgumentError, match=r"^x has non-finite") as e:
        s.certify(x, 10, 100, 0.01, 50)
    assert e.value.arg == "x"
    with pytest.raises(ArgumentError, match=r"^x has non-finite"):
        s.predict(x, 100, 0.01, 50)
    xs = torch.rand(3, 1, 2, 2)
    xs[2] = x
    with pytest.raises(ArgumentError, match=r"^xs\[2\] has non-finite"):
        s.certify_batch(xs, 10, 100, 0.01, 50)
    with pytest.raises(ArgumentError, match=r"^xs\[2\] has non-finite"):
        s.predict_batch(xs, 100, 0.01, 50)
    with pytest.raises(ArgumentError, match=r"^xs\[2\] has non-finite"):
        s.sample_counts(xs, 100, 50)


@pytest.mark.parametrize("pack", [1, 3])
def test_a_dataset_with_a_nan_input_stops_naming_its_dataset_idx(tmp_path, pack):
    """certify_dataset stops at the bad input with its dataset index (not its place in the pack),
    and the rows logged before it stay: nothing is certified for the NaN input."""
    from smoothcert.certification import certify_dataset
    from smoothcert.data import TensorImageDataset
    from smoothcert.logs import read_tsv

    x = torch.rand(8, 1, 2, 2)
    x[4, 0, 1, 1] = float("nan")
    ds = TensorImageDataset(x, torch.zeros(8, dtype=torch.long), name="t", num_classes=3, mean=(0.0,), std=(1.0,),
                            default_arch="x")
    out = tmp_path / "c.tsv"
    with pytest.raises(ArgumentError, match=r"^dataset: input idx 4 has non-finite") as e:
        certify_dataset(Smooth(linear(), 3, 0.25), ds, out, 10, 50, 0.01, 50, seed=0, pack=pack)
    assert e.value.arg == "dataset"
    logged = [int(r[0]) for r in read_tsv(out)[1]]
    assert 4 not in logged and logged == list(range(len(logged))) and len(logged) >= (4 // pack) * pack


def test_all_nan_input_of_the_issue_gets_no_certificate():
    s = Smooth(linear(10, 64), 10, 0.25, seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        s.certify(torch.full((1, 8, 8), float("nan")), 100, 1000, 0.001, 1000)


def test_float64_overflowing_float32_is_non_finite():
    s = Smooth(linear(), 3, 0.25, seed=0)
    with pytest.raises(ArgumentError, match="non-finite"):
        s.certify(torch.full((1, 2, 2), 1e300, dtype=torch.float64), 10, 10, 0.01, 10)


# -- non-finite logits, wrong number of outputs, count sums -------------------------------------
def test_model_with_nan_weights_is_an_error_not_votes_for_class_0():
    net = linear(10)
    with torch.no_grad():
        net[1].weight.fill_(float("nan"))
    s = Smooth(net, 10, 0.25, seed=0)
    with pytest.raises(ValueError, match="non-finite logits"):
        s.certify(torch.rand(1, 2, 2), 10, 100, 0.01, 50)
    with pytest.raises(ValueError, match="non-finite logits"):
        s.predict(torch.rand(1, 2, 2), 100, 0.01, 50)


def test_one_inf_logit_in_a_later_forward_batch_is_caught():
    calls = []

    def model(x):
        calls.append(1)
        out = torch.zeros(x.shape[0], 3)
        if len(calls) == 3:
            out[5, 1] = float("inf")
        return out

    with pytest.raises(ValueError, match="non-finite logits"):
        sample_counts(model, torch.zeros(1, 1, 2, 2), 100, GaussianNoise(0.5), 3, 20)


def test_more_outputs_than_num_classes_with_two_inputs_packed():
    """Issue 12: 12 outputs, num_classes = 10, two inputs in one forward batch. Votes for classes
    10 and 11 used to land in the next input's counts (200 votes from 100 samples)."""

    class Twelve(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 12)
            out[:, 11] = 1.0
            return out

    s = Smooth(Twelve(), 10, 0.25, seed=0)
    with pytest.raises(ValueError, match=r"num_classes=10") as e:
        s.certify_batch(torch.zeros(2, 1, 2, 2), 100, 100, 0.01, 200)
    assert "12" in str(e.value)  # names both numbers
    with pytest.raises(ValueError, match="num_classes=10"):
        sample_counts(Twelve(), torch.zeros(2, 1, 2, 2), 100, GaussianNoise(0.5), 10, 200)
    with pytest.raises(ValueError, match="num_classes=10"):  # fewer outputs than classes too
        sample_counts(nn.Sequential(nn.Flatten(), nn.Linear(4, 9)), torch.zeros(2, 1, 2, 2), 100,
                      GaussianNoise(0.5), 10, 200)


def test_counts_that_do_not_sum_to_num_trip_the_sampler(monkeypatch):
    bincount = torch.bincount
    monkeypatch.setattr(torch, "bincount", lambda x, minlength=0: bincount(x, minlength=minlength) * 2)
    with pytest.raises(AssertionError, match="sum to num=50"):
        sample_counts(linear(), torch.zeros(2, 1, 2, 2), 50, GaussianNoise(0.5), 3, 64)


# -- dtypes and sigma ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_inputs_are_refused_naming_the_dtype(dtype):
    s = Smooth(linear(), 3, 0.25, seed=0)
    x = torch.ones(1, 2, 2).to(dtype)
    with pytest.raises(ArgumentError, match=rf"^x has dtype {dtype}") as e:
        s.certify(x, 10, 10, 0.01, 10)
    assert "x.float() / 255" in str(e.value)
    with pytest.raises(ArgumentError, match=rf"^xs has dtype {dtype}"):
        s.predict_batch(x[None], 10, 0.01, 10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_inputs_are_converted_to_the_model_dtype(dtype):
    x = torch.tensor([[[0.25, 0.5], [0.75, 1.0]]])  # exactly representable in every dtype
    ref = Smooth(linear(), 3, 0.25, seed=4).certify(x, 10, 200, 0.01, 64)
    assert Smooth(linear(), 3, 0.25, seed=4).certify(x.to(dtype), 10, 200, 0.01, 64) == ref
    # and a float64 model gets float64 inputs (no matmul dtype error)
    s = Smooth(linear(dtype=torch.float64), 3, 0.25, seed=4)
    assert s.dtype == torch.float64
    assert s.certify(x, 10, 200, 0.01, 64)[0] in (0, 1, 2, Smooth.ABSTAIN)


@pytest.mark.parametrize("sigma", [True, "0.25", [0.25], float("nan"), float("inf"), 0.0, -0.1, None])
def test_sigma_must_be_a_positive_real_number(sigma):
    with pytest.raises(ArgumentError) as e:
        Smooth(linear(), 3, sigma)
    assert e.value.arg == "sigma"


# -- the caller's model is left alone -----------------------------------------------------------
def test_smooth_does_not_change_the_callers_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = Smooth(net, 3, 0.25, channels_last=True, seed=0)
    s.certify(torch.rand(3, 8, 8), 10, 100, 0.01, 64)
    s.predict(torch.rand(3, 8, 8), 100, 0.01, 64)
    assert net.training
    assert net[0].weight.is_contiguous() and not net[0].weight.is_contiguous(memory_format=torch.channels_last)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched


# -- CERTIFY: cA comes from the selection draw --------------------------------------------------
class Switch(nn.Module):
    """Votes class 0 on its first forward call and class 1 ever after: the selection draw (one
    forward, n0 <= batch_size) sees only class 0, the estimation draw only class 1."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = torch.zeros(x.shape[0], 2)
        out[:, 0 if self.calls == 1 else 1] = 1.0
        return out


@pytest.mark.parametrize("bound", ["one-sided", "two-sided"])
def test_cA_is_chosen_from_the_selection_counts(bound):
    """Choosing cA from the estimation counts would certify class 1 with nA = n here; the
    algorithm picks cA = 0 from the selection draw, finds nA = 0 and abstains."""
    assert Smooth(Switch(), 2, 0.5, seed=0).certify(torch.zeros(1, 2, 2), 10, 1000, 0.01, 100,
                                                    bound=bound) == (Smooth.ABSTAIN, 0.0)


def test_two_sided_never_below_one_sided_at_half_alpha_with_the_same_samples():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    xs = torch.rand(40, 1, 4, 4) * 3
    alpha = 0.01
    one = Smooth(net, 5, 0.5, seed=7).certify_batch(xs, 20, 500, alpha / 2, 1000)
    two = Smooth(net, 5, 0.5, seed=7).certify_batch(xs, 20, 500, alpha, 1000, bound="two-sided")
    certified = one[0] != Smooth.ABSTAIN
    assert certified.sum() > 10
    assert torch.equal(two[0][certified], one[0][certified])
    assert (two[1] >= one[1] - 1e-12).all()
    assert (two[1] > one[1] + 1e-3).any()


# -- old Gaussian runs certify as before --------------------------------------------------------
# recorded on main before several noises existed (commit b32a68a): a digits_cnn run written by
# tests/conftest.write_run(seed=3), Smooth(model, 10, sigma, seed=0).certify_batch(test[:6], 50, 500, 0.01, 128)
RECORDED = {
    0.25: ([2] * 6, [0.5896899992232703] * 6),
    1.0: ([2] * 6, [1.249377370024423, 1.57266924891724, 1.3300246203972608, 1.8973297922868468,
                    1.7841509570746554, 1.275202108314876]),
}
# and `smoothcert certify RUN(sigma 1.0) --N0 50 --N 500 --alpha 0.01 --batch 128 --max 5 --seed 1`,
# radii as the log writes them since the runner rounds them DOWN to 4 decimals (floor_decimal; the
# recording, rounded to nearest, read 1.1887 and 1.4563 in rows 0 and 1: the same certificates)
RECORDED_LOG = [["0", "2", "2", "1.1886", "1"], ["1", "8", "2", "1.4562", "0"], ["2", "2", "2", "1.5311", "1"],
                ["3", "6", "2", "1.8973", "0"], ["4", "6", "2", "2.1271", "0"]]


def test_old_gaussian_runs_certify_exactly_as_before(tmp_path, runner):
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import write_run

    from smoothcert.cli import main
    from smoothcert.data import get_dataset
    from smoothcert.logs import read_tsv
    from smoothcert.runs import load_model

    run = write_run(tmp_path / "run", seed=3)
    model, config = load_model(run)
    xs = get_dataset("digits", "test").x[:6]
    for sigma, (pred, radius) in RECORDED.items():
        p, r = Smooth(model, 10, sigma, seed=0).certify_batch(xs, 50, 500, 0.01, 128)
        assert p.tolist() == pred and r.tolist() == radius
        p, r = Smooth(model, 10, sigma, "gaussian", seed=0).certify_batch(xs, 50, 500, 0.01, 128, norm="l2")
        assert p.tolist() == pred and r.tolist() == radius
    run1 = write_run(tmp_path / "run1", seed=3, sigma=1.0)
    out = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(run1), "--N0", "50", "--N", "500", "--alpha", "0.01", "--batch", "128",
                             "--max", "5", "--seed", "1", "--out", str(out), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    header, rows = read_tsv(out)
    assert [row[:5] for row in rows] == RECORDED_LOG
