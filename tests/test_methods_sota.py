"""Issue 24's training methods: each one's objective against a hand computation of its paper's
equation, the pieces that are easy to get subtly wrong (KL direction, temperature, the hinge's
restriction, the bottom-K mask, the path point SmoothMix mixes), the CAT-RS prior against a
classifier whose smoothed probabilities are known in closed form, and the one CLI convention
(-p NAME=VALUE) with its one-line errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from smoothcert.cli import main
from smoothcert.methods import TrainContext, create_method, hyperparameters, parse_params
from smoothcert.methods.catrs import smoothed_confidences, worst_noise
from smoothcert.methods.consistency import consistency_terms
from smoothcert.methods.macer import macer_loss
from smoothcert.methods.smoothmix import smoothmix_path, soft_smoothed_nll
from smoothcert.models import create_model
from smoothcert.validation import ArgumentError

K = 4
NEW = ("stability", "consistency", "macer", "smoothmix", "catrs")


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("digits_cnn", K, 1, 8, mean=[0.5], std=[0.25]).train()


def make_batch(n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, K, (n,), generator=g)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Scale(nn.Module):
    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.c


class FixedNoise:
    """A stand-in noise object whose draws are the given tensor (so a loss can be recomputed by hand)."""

    def __init__(self, d: torch.Tensor, name: str = "gaussian"):
        self.d, self.name = d, name

    def sample_(self, buf: torch.Tensor, generator=None) -> torch.Tensor:
        return buf.copy_(self.d.view_as(buf))

    def perturb(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return x + self.d.view_as(x)


# -- stability -----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["kl", "cross-entropy"])
def test_stability_is_clean_cross_entropy_plus_lbd_times_the_divergence_of_the_noisy_prediction(target):
    model, (x, y) = nn.Sequential(make_model(), Scale(20.0)), make_batch()  # peaked predictions: KL directions differ
    d = 0.5 * torch.randn_like(x)
    m = create_method("stability", sigma=0.5, lbd=2.5, target=target)
    m.noise = FixedNoise(d)
    got = m.loss(model, x, y)
    with torch.no_grad():
        pc, pn = F.softmax(model(x), 1).numpy(), F.softmax(model(x + d), 1).numpy()
        ce = F.cross_entropy(model(x), y).item()
    xent = -(pc * np.log(pn)).sum(1)
    kl = (pc * (np.log(pc) - np.log(pn))).sum(1)  # KL(p_clean || p_noisy) = H(pc, pn) - H(pc)
    reverse = (pn * (np.log(pn) - np.log(pc))).sum(1)
    stab = kl if target == "kl" else xent
    assert got.item() - ce == pytest.approx(2.5 * stab.mean(), rel=1e-5, abs=1e-6)
    assert abs(kl.mean() - reverse.mean()) > 1e-3  # far above the tolerance above


# -- consistency ---------------------------------------------------------------------------------
def test_consistency_terms_are_the_kl_from_the_mean_to_each_copy_and_the_entropy_of_the_mean():
    torch.manual_seed(0)
    m, B = 3, 5
    logits = torch.randn(m * B, K) * 2
    kl, ent = consistency_terms(logits, m)
    p = np_softmax(logits.numpy().reshape(m, B, K))
    mean = p.mean(0)
    want_kl = np.mean([(mean * (np.log(mean) - np.log(p[k]))).sum(1) for k in range(m)], 0)  # KL(p^ || p_k)
    wrong_kl = np.mean([(p[k] * (np.log(p[k]) - np.log(mean))).sum(1) for k in range(m)], 0)  # KL(p_k || p^)
    np.testing.assert_allclose(kl.numpy(), want_kl, rtol=1e-5)
    assert not np.allclose(want_kl, wrong_kl, rtol=1e-2)  # the direction matters on these logits
    np.testing.assert_allclose(ent.numpy(), -(mean * np.log(mean)).sum(1), rtol=1e-5)


def test_consistency_loss_is_noisy_ce_plus_lbd_kl_plus_eta_entropy_on_the_drawn_copies():
    model, (x, y) = make_model(), make_batch()
    d = 0.5 * torch.randn(2, *x.shape)
    meth = create_method("consistency", sigma=0.5, num_noise_vec=2, lbd=7.0, eta=0.3)
    meth.noise = FixedNoise(d)
    got = meth.loss(model, x, y)
    with torch.no_grad():
        logits = model((x.unsqueeze(0) + d).flatten(0, 1))
        kl, ent = consistency_terms(logits, 2)
        want = F.cross_entropy(logits, y.repeat(2)) + (7.0 * kl + 0.3 * ent).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_consistency_with_smoothadv_trains_on_the_adversarial_copies():
    model, (x, y) = make_model(), make_batch()
    meth = create_method("consistency", sigma=0.5, num_noise_vec=2, lbd=5.0, epsilon=0.5, num_steps=2, warmup=1)
    torch.manual_seed(3)
    adv = meth.loss(model, x, y).item()
    plain = create_method("consistency", sigma=0.5, num_noise_vec=2, lbd=5.0)
    torch.manual_seed(3)
    assert adv > plain.loss(model, x, y).item()  # the attack raises the loss on the same noise draws
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert meth.params()["epsilon"] == 0.5 and "epsilon" not in plain.params()


# -- MACER ---------------------------------------------------------------------------------------
def _macer_by_hand(logits: np.ndarray, y: np.ndarray, k: int, sigma: float, gamma: float, beta: float):
    z = logits.reshape(k, -1, logits.shape[1])
    g = np_softmax(z).mean(0)
    cl = -np.log(g[np.arange(len(y)), y] + 1e-10).sum()
    gb = np_softmax(beta * z).mean(0)
    order = np.argsort(-gb, 1)
    rl = 0.0
    for i in range(len(y)):
        top, second = gb[i, order[i, 0]], gb[i, order[i, 1]]
        xi = stats.norm.ppf(top) - stats.norm.ppf(second)
        if order[i, 0] == y[i] and np.isfinite(xi) and xi <= gamma:
            rl += gamma - xi
    return cl, rl * sigma / 2


def test_macer_loss_matches_the_hinge_on_correct_inputs_within_gamma_with_beta_only_in_the_radius_term():
    k, B = 4, 6
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(k * B, K, generator=g) * 0.3
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    logits.view(k, B, K)[:, 0, 0] += 0.5   # input 0: correct, small margin -> in the hinge
    logits.view(k, B, K)[:, 1, 2] += 2.0   # input 1: misclassified -> excluded
    logits.view(k, B, K)[:, 2, 2] += 0.1   # input 2: correct, tiny margin
    cl, rl = macer_loss(logits, y, k, sigma=0.5, lbd=1.0, gamma=8.0, beta=16.0)
    want_cl, want_rl = _macer_by_hand(logits.numpy(), y.numpy(), k, 0.5, 8.0, 16.0)
    assert cl.item() == pytest.approx(want_cl, rel=1e-5)
    assert rl.item() == pytest.approx(want_rl, rel=1e-4)
    assert want_rl > 0
    _, rl_small_gamma = macer_loss(logits, y, k, sigma=0.5, lbd=1.0, gamma=0.05, beta=16.0)
    assert rl_small_gamma.item() == pytest.approx(_macer_by_hand(logits.numpy(), y.numpy(), k, 0.5, 0.05, 16.0)[1],
                                                  abs=1e-6)


def test_macer_gradient_is_finite_when_the_soft_votes_saturate():
    model, (x, y) = make_model(), make_batch()
    meth = create_method("macer", sigma=0.25, num_noise_vec=4, beta=200.0)  # beta * logits saturate the softmax
    loss = meth.loss(model, x, y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_macer_defers_the_radius_term_and_refuses_other_noises():
    meth = create_method("macer", sigma=0.5, deferred=3)
    for epoch, lbd in [(0, 0.0), (2, 0.0), (3, 16.0), (10, 16.0)]:
        meth.on_epoch_start(epoch, 12)
        assert meth.current_lbd == lbd
    with pytest.raises(ArgumentError, match="noise must be gaussian") as e:
        create_method("macer", sigma=0.5, noise="laplace")
    assert e.value.arg == "noise"


# -- SmoothMix -----------------------------------------------------------------------------------
def test_smoothmix_path_clean_side_and_end_points():
    model, (x, y) = make_model(), make_batch()
    d = 0.5 * torch.randn(2, *x.shape)
    x0, end = smoothmix_path(model, x, y, d, num_steps=3, step_size=0.5, mix_step=0, maxnorm=None, maxnorm_s=0.0)
    torch.testing.assert_close(x0, x)  # mix_step 0: the clean side is x itself
    assert soft_smoothed_nll(model, end, y, d) > soft_smoothed_nll(model, x, y, d)  # the adversary ascends
    _, one = smoothmix_path(model, x, y, d, num_steps=1, step_size=0.5, mix_step=0, maxnorm=None, maxnorm_s=0.0)
    x1, _ = smoothmix_path(model, x, y, d, num_steps=3, step_size=0.5, mix_step=1, maxnorm=None, maxnorm_s=10.0)
    torch.testing.assert_close(x1, one)  # mix_step 1: the one-step adversary
    x1c, endc = smoothmix_path(model, x, y, d, num_steps=3, step_size=0.5, mix_step=1, maxnorm=0.7, maxnorm_s=0.2)
    assert ((x1c - x).flatten(1).norm(dim=1) <= 0.2 + 1e-5).all()
    assert ((endc - x).flatten(1).norm(dim=1) <= 0.7 + 1e-5).all()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_smoothmix_with_eta_zero_is_the_noisy_cross_entropy_and_the_mixup_term_counts_correct_inputs_only():
    model, (x, y) = make_model(), make_batch()
    d = 0.5 * torch.randn(4, *x.shape)
    meth = create_method("smoothmix", sigma=0.5, num_noise_vec=4, num_steps=2, eta=0.0, warmup=1)
    meth.noise = FixedNoise(d)
    with torch.no_grad():
        want = F.cross_entropy(model((x.unsqueeze(0) + d).flatten(0, 1)), y.repeat(4)).item()
    assert meth.loss(model, x, y).item() == pytest.approx(want, rel=1e-5)
    with torch.no_grad():
        wrong = (F.softmax(model((x.unsqueeze(0) + d).flatten(0, 1)), 1).view(4, len(y), K).mean(0).argmax(1) + 1) % K
    eta = create_method("smoothmix", sigma=0.5, num_noise_vec=4, num_steps=2, eta=3.0, warmup=1)
    eta.noise = FixedNoise(d)
    assert eta.loss(model, x, wrong).item() == pytest.approx(
        F.cross_entropy(model((x.unsqueeze(0) + d).flatten(0, 1)), wrong.repeat(4)).item(), rel=1e-5)


def test_smoothmix_warmup_ramps_eta_and_the_clean_side_radius():
    meth = create_method("smoothmix", sigma=0.5, mix_step=1, step_size=2.0, warmup=4)
    meth.on_epoch_start(0, 10)
    assert meth.ramp == 0.25 and meth.maxnorm_s == 2.0
    meth.on_epoch_start(5, 10)
    assert meth.ramp == 1.0
    with pytest.raises(ArgumentError, match="mix_step"):
        create_method("smoothmix", sigma=0.5, num_steps=2, mix_step=2)


# -- CAT-RS --------------------------------------------------------------------------------------
class Threshold(nn.Module):
    """Class 1 where the mean pixel exceeds 0.5, else 0: under N(0, sigma^2 I) noise on d pixels the
    smoothed probability of class 1 is Phi((mean(x) - 0.5) sqrt(d) / sigma) in closed form."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1) - 0.5
        return torch.stack([-s, s], 1) * 100 + 0 * self.dummy


def test_catrs_prior_is_the_smoothed_vote_frequency_known_in_closed_form():
    sigma, n = 0.5, 4000
    means = torch.tensor([0.45, 0.5, 0.52, 0.6])
    xs = means.view(-1, 1, 1, 1) * torch.ones(4, 1, 4, 4)
    ds = [(xs[i], 0) for i in range(4)]
    conf = smoothed_confidences(Threshold(), ds, 2, sigma, n, batch=1000, seed=0)
    p1 = stats.norm.cdf((means.numpy() - 0.5) * math.sqrt(16) / sigma)
    se = np.sqrt(p1 * (1 - p1) / n) + 1e-9
    assert (np.abs(conf[:, 1].numpy() - p1) <= 4.5 * se + 1e-9).all(), (conf, p1)
    torch.testing.assert_close(conf.sum(1), torch.ones(4))


def test_catrs_worst_noise_keeps_each_rows_mean_and_about_its_rms_and_raises_the_kl():
    model, (x, y) = make_model(), make_batch()
    d = 0.5 * torch.randn(3, *x.shape)
    target = F.one_hot(y, K).float() * 0.7 + 0.3 / K
    adv = worst_noise(model, x, d, target, epsilon=1.0, num_steps=3)
    flat, flat0 = adv.flatten(2), d.flatten(2)
    torch.testing.assert_close(flat.mean(2), flat0.mean(2), atol=1e-5, rtol=1e-4)
    # (d' - mean d') / rms(d') * rms(d) + mean(d), as the reference: the RMS is kept up to the (small) mean
    torch.testing.assert_close(flat.pow(2).mean(2).sqrt(), flat0.pow(2).mean(2).sqrt(), atol=1e-5, rtol=1e-2)

    def kl(noise):
        with torch.no_grad():
            q = F.log_softmax(model((x.unsqueeze(0) + noise).flatten(0, 1)), 1)
            return F.kl_div(q, target.repeat(3, 1), reduction="sum").item()

    assert kl(adv) > kl(d)
    assert model.training


class Votes(nn.Module):
    """Logits that put each input's class at a fixed position regardless of noise (for the loss test)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table, self.w = table, nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table.repeat(x.shape[0] // self.table.shape[0], 1) * self.w + 0 * x.flatten(1).sum(1, keepdim=True)


def _catrs(tmp_path: Path, **kw) -> object:
    from tests.conftest import write_run

    prior = write_run(tmp_path / "gauss", sigma=0.5)
    return create_method("catrs", sigma=0.5, prior=str(prior), **{"prior_n": 8, **kw})


def test_catrs_loss_is_the_bottom_k_cross_entropy_plus_the_kl_on_confident_inputs(tmp_path):
    meth = _catrs(tmp_path, num_noise_vec=2, num_steps=1, lbd=2.0)
    table = torch.tensor([[5.0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0, 0, 0, 0, 0, 0]])
    model = Votes(table)  # input 0 votes class 0, input 1 class 1, whatever the noise
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 0])  # input 0 right on every copy (w = 1), input 1 wrong (w = 0)
    meth.confidences = torch.full((2, 10), 0.1)
    loss = meth.loss(model, x, y, index=torch.tensor([0, 1]))
    ce0 = F.cross_entropy(table[:1], y[:1]).item()
    ce1 = F.cross_entropy(table[1:], y[1:]).item()
    kl0 = F.kl_div(F.log_softmax(table[:1], 1), torch.full((1, 10), 0.1), reduction="sum").item()
    # input 0: K = M = 2 -> both CEs kept (mean over M) + lbd * KL; input 1: K = max(1, Binomial(2, 0)) = 1 -> CE / 2
    want = ((ce0 + 2.0 * kl0) + ce1 / 2) / 2
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_catrs_setup_computes_the_prior_once_and_reads_it_back(tmp_path, monkeypatch):
    from smoothcert.data import get_dataset
    from smoothcert.methods import catrs

    ds = get_dataset("digits", "train")
    meth = _catrs(tmp_path)
    ctx = TrainContext(ds, 10, torch.device("cpu"), tmp_path, True, limit=20)
    meth.setup(ctx)
    assert meth.confidences.shape == (20, 10) and (tmp_path / catrs.PRIOR_NAME).is_file()
    first = meth.confidences.clone()
    monkeypatch.setattr(catrs, "smoothed_confidences", lambda *a, **k: pytest.fail("recomputed"))
    again = _catrs(tmp_path / "b")
    again.prior_fingerprint = meth.prior_fingerprint
    again.setup(ctx)
    torch.testing.assert_close(again.confidences, first)
    monkeypatch.undo()
    other = _catrs(tmp_path / "c", prior_n=9)  # another n: the cache does not match, computed anew
    other.prior_fingerprint = meth.prior_fingerprint
    other.setup(ctx)
    assert other.confidences.shape == (20, 10)


def test_catrs_refuses_a_missing_prior_and_other_noises(tmp_path):
    with pytest.raises(ArgumentError) as e:
        create_method("catrs", sigma=0.5, prior=str(tmp_path / "nope"))
    assert e.value.arg == "prior"
    with pytest.raises(ArgumentError, match="gaussian"):
        _catrs(tmp_path, noise="uniform")


# -- the trainer passes dataset indices to methods that use them ---------------------------------
def test_trainer_passes_each_training_input_index_once_per_epoch():
    from smoothcert.data import get_dataset
    from smoothcert.methods import Method
    from smoothcert.trainer import Batches, Trainer

    class Indexed(Method):
        uses_index = True
        seen: list[int] = []

        def loss(self, model, x, y, index=None):
            self.seen.extend(index.tolist())
            logits = model(x)
            self._record_accuracy(logits, y)
            return F.cross_entropy(logits, y)

        def params(self):
            return {}

    ds = get_dataset("digits", "train")
    meth = Indexed()
    trainer = Trainer(create_model("digits_cnn", 10, 1, 8), meth, epochs=1)
    batches = Batches(ds, 64, train=True, limit=200)
    trainer.train_epoch(batches.epoch(0, with_index=True), len(batches), 0)
    assert len(set(meth.seen)) == len(meth.seen)  # each input once
    assert set(meth.seen) <= set(range(200)) and len(meth.seen) >= 192  # a last batch of < 2 inputs is dropped
    x, y, idx = next(iter(batches.epoch(0, with_index=True)))
    torch.testing.assert_close(x, ds.x[idx])


# -- hyperparameters: one convention -------------------------------------------------------------
def test_every_new_method_is_registered_with_its_papers_hyperparameters_and_defaults():
    names = {m: {hp.name: hp.default for hp in hyperparameters(m)} for m in NEW}
    assert names["consistency"]["lbd"] == 10.0 and names["consistency"]["eta"] == 0.5
    assert names["macer"]["num_noise_vec"] == 16 and names["macer"]["gamma"] == 8.0 and names["macer"]["beta"] == 16.0
    assert names["smoothmix"]["mix_step"] == 0 and names["catrs"]["prior_n"] == 10_000
    assert parse_params("smoothmix", ["eta=2", "mix-step=1", "maxnorm=none"]) == {"eta": 2.0, "mix_step": 1,
                                                                                  "maxnorm": None}
    assert parse_params("catrs", ["confidence_mask=true"]) == {"confidence_mask": True}
    for bad, match in [(["lbd"], "NAME=VALUE"), (["nope=1"], "no hyperparameter"), (["lbd=x"], "lbd must be float"),
                       (["lbd=1", "lbd=2"], "twice")]:
        with pytest.raises(ArgumentError, match=match):
            parse_params("consistency", bad)


@pytest.mark.parametrize("args, message", [
    (["--method", "consistency", "--sigma", "0.5", "-p", "nope=1"], "no hyperparameter 'nope'"),
    (["--method", "consistency", "--sigma", "0.5", "-p", "lbd=x"], "lbd must be float"),
    (["--method", "smoothadv", "--sigma", "0.5", "--epsilon", "0.5", "-p", "epsilon=0.4"], "twice"),
    (["--method", "catrs", "--sigma", "0.5"], "-p prior=VALUE"),
    (["--method", "macer", "--sigma", "0.5", "--noise", "laplace"], "noise must be gaussian"),
])
def test_train_cli_hyperparameter_errors_are_one_line(runner, tmp_path, args, message):
    r = runner.invoke(main, ["train", "--out", str(tmp_path / "x"), "--quiet", "--epochs", "1", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and message in r.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_methods_command_lists_the_hyperparameters(runner, tmp_path):
    r = runner.invoke(main, ["methods", "macer"])
    assert r.exit_code == 0 and "-p gamma=VALUE" in r.output and "default 8.0" in r.output
    r = runner.invoke(main, ["methods", "--out", str(tmp_path / "m.json")])
    assert all(m in r.output for m in NEW)
    import json

    listing = json.loads((tmp_path / "m.json").read_text())
    assert listing["catrs"]["prior"]["required"] and listing["macer"]["beta"]["default"] == 16.0


@pytest.mark.slow
def test_catrs_trains_from_the_cli_with_a_gauss_prior_and_resumes(runner, tmp_path):
    prior = tmp_path / "gauss"
    quick = ["--epochs", "1", "--quiet", "--max-train-samples", "96", "--max-test-samples", "32", "--batch-size", "32"]
    assert runner.invoke(main, ["train", "--out", str(prior), "--sigma", "0.5", *quick]).exit_code == 0
    args = ["train", "--out", str(tmp_path / "c"), "--method", "catrs", "--sigma", "0.5", "-p", f"prior={prior}",
            "-p", "prior_n=4", "-p", "num_steps=1", "-p", "num_noise_vec=2"]
    r = runner.invoke(main, [*args, *quick])
    assert r.exit_code == 0, r.output
    cfg = (tmp_path / "c" / "config.json").read_text()
    assert '"prior_fingerprint"' in cfg and '"prior_n": 4' in cfg
    r = runner.invoke(main, [*args, "--epochs", "2", *quick[2:], "--resume"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "c" / "train_log.tsv").read_text().splitlines()) == 3


def test_a_method_cache_is_not_run_content_so_a_fresh_run_may_start_beside_it(tmp_path):
    from smoothcert.methods.catrs import PRIOR_NAME
    from smoothcert.rundir import CACHE_SUFFIX, RunDir

    assert PRIOR_NAME.endswith(CACHE_SUFFIX)
    (tmp_path / PRIOR_NAME).write_bytes(b"x")
    assert RunDir(tmp_path).contents() == []
    assert RunDir(tmp_path).resume_point({}, resume=False) is None  # starts afresh, the cache kept
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ArgumentError, match="notes.txt"):
        RunDir(tmp_path).resume_point({}, resume=False)
