"""Attacks (smoothcert.attacks) and ``smoothcert attack``: the threat-model constraints, closed forms
on linear models, PGD's ascent, accuracy drops of a trained model, the unbounded-PGD sanity check,
black-box isolation, state restoration, and the certificate check (passes on a proper certify log,
flags planted false certificates)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothcert.attacks import (ATTACK_COLUMNS, CHECK_COLUMNS, FGSM, PGD, SoftSmoothed, attack_dataset,
                                check_certificates, lp_norm, violation_pvalue)
from smoothcert.certification import Selection
from smoothcert.cli import main
from smoothcert.data import TensorImageDataset, get_dataset
from smoothcert.logs import CERTIFY_COLUMNS, TSVLog, atomic_torch_save, read_tsv, safe_torch_load
from smoothcert.models import create_model
from smoothcert.runs import load_model
from smoothcert.smoothing import Smooth
from smoothcert.validation import ArgumentError

from conftest import train_digits_cnn, write_run

SIGMA = 0.25


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """digits_cnn trained ~1 s with Gaussian augmentation (sigma 0.25), plain SGD: ~97% test accuracy."""
    return train_digits_cnn(epochs=6, sigma=SIGMA)


@pytest.fixture(scope="module")
def test_batch() -> tuple[torch.Tensor, torch.Tensor]:
    te = get_dataset("digits", "test")
    return te.x[:100], te.y[:100]


@pytest.fixture
def trained_run(trained, tmp_path) -> Path:
    run = write_run(tmp_path / "trained")
    ckpt = safe_torch_load(run / "checkpoint.pt")
    ckpt["state_dict"] = trained.state_dict()
    atomic_torch_save(ckpt, run / "checkpoint.pt")
    return run


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def linear_model(w0: torch.Tensor, w1: torch.Tensor, b: float = 0.0) -> nn.Module:
    """Two-class linear classifier on (B, *shape) inputs: logits (w0.x, w1.x + b)."""
    lin = nn.Linear(w0.numel(), 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w0.flatten(), w1.flatten()]))
        lin.bias.copy_(torch.tensor([0.0, b]))
    return nn.Sequential(nn.Flatten(), lin)


# -- constraints and closed forms ---------------------------------------------------------
ATTACKS = {
    "fgsm": lambda eps, norm: FGSM(eps, norm),
    "pgd": lambda eps, norm: PGD(eps, 5, norm=norm),
    "pgd-random-start": lambda eps, norm: PGD(eps, 5, norm=norm, random_start=True),
    "pgd-big-steps": lambda eps, norm: PGD(eps, 5, step_size=3 * eps, norm=norm),
}


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.4)])
@pytest.mark.parametrize("kind", sorted(ATTACKS))
@pytest.mark.parametrize("smoothed", [False, True])
def test_perturbation_in_ball_and_in_box(norm, eps, kind, smoothed):
    torch.manual_seed(1)
    model = create_model("digits_cnn", 10, 1, 8)
    x = torch.rand(8, 1, 8, 8)
    x[:, :, :3] = x[:, :, :3].round()  # pixels exactly at 0 and 1, where clipping binds
    y = torch.randint(0, 10, (8,))
    target = SoftSmoothed(model, SIGMA, 3, generator=torch.Generator().manual_seed(0)) if smoothed else model
    x_adv = ATTACKS[kind](eps, norm)(target, x, y, torch.Generator().manual_seed(2))
    d = lp_norm(x_adv - x, norm)
    assert (d <= eps * (1 + 1e-5)).all() and (d > eps / 10).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_per_input_eps(norm):
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1, 8)
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    eps = torch.tensor([0.01, 0.05, 0.1, 0.2])
    d = lp_norm(PGD(eps, 5, norm=norm)(model, x, y) - x, norm)
    assert (d <= eps * (1 + 1e-5)).all() and (d > eps / 2).all()


@pytest.mark.parametrize("label", [0, 1])
def test_linear_closed_forms(label):
    """For logits (w0.x, w1.x), grad_x CE points along +-(w1 - w0) for every x: FGSM and PGD
    (interior, no clipping) land exactly at x + eps*sign(v) (Linf) and x + eps*v/||v|| (L2),
    v = w_other - w_label."""
    torch.manual_seed(0)
    w0, w1 = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    model = linear_model(w0, w1)
    x = 0.4 + 0.2 * torch.rand(3, 1, 4, 4)
    y = torch.full((3,), label)
    v = (w1 - w0) if label == 0 else (w0 - w1)
    linf, l2 = x + 0.05 * v.sign(), x + 0.3 * v / v.norm()
    assert torch.allclose(FGSM(0.05, "linf")(model, x, y), linf, atol=1e-6)
    assert torch.allclose(PGD(0.05, 7, norm="linf")(model, x, y), linf, atol=1e-6)
    assert torch.allclose(FGSM(0.3, "l2")(model, x, y), l2, atol=1e-6)
    assert torch.allclose(PGD(0.3, 7, norm="l2")(model, x, y), l2, atol=1e-6)


def test_soft_smoothed_is_mean_softmax_over_shared_input():
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1, 8).eval()
    x = torch.rand(3, 1, 8, 8)
    noise = torch.randn(5, 3, 1, 8, 8) * SIGMA
    out = SoftSmoothed(model, SIGMA, 5, fixed_noise=noise)(x)
    manual = torch.stack([F.softmax(model(x + noise[k]), 1) for k in range(5)]).mean(0).log()
    assert torch.allclose(out, manual, atol=1e-6)
    # fresh noise: reproducible with a generator, different across calls, through GaussianNoise
    a = SoftSmoothed(model, SIGMA, 5, generator=torch.Generator().manual_seed(3))
    b = SoftSmoothed(model, SIGMA, 5, generator=torch.Generator().manual_seed(3))
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, a(x))
    assert abs(a.draw_noise(torch.zeros(100, 1, 8, 8)).std().item() - SIGMA) < 0.01


# -- PGD's ascent and accuracy drops ------------------------------------------------------
@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.0)])
def test_pgd_loss_nondecreasing_in_expectation(trained, test_batch, norm, eps):
    x, y = test_batch
    curves = []
    for seed in range(3):
        pgd = PGD(eps, 10, norm=norm, random_start=True, track_loss=True)
        pgd(trained, x, y, torch.Generator().manual_seed(seed))
        assert pgd.loss_history.shape == (11, len(y))
        curves.append(pgd.loss_history.mean(1))
    mean = torch.stack(curves).mean(0)
    assert (mean.diff() >= 0).all(), mean
    assert mean[-1] > 5 * mean[0]


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.0)])
def test_attacks_lower_accuracy_of_trained_model(trained, test_batch, norm, eps):
    x, y = test_batch
    clean = accuracy(trained, x, y)
    fgsm = accuracy(trained, FGSM(eps, norm)(trained, x, y), y)
    pgd = accuracy(trained, PGD(eps, 10, norm=norm)(trained, x, y), y)
    assert clean >= 0.9
    assert fgsm <= clean - 0.4 and pgd <= fgsm and pgd <= 0.2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_unbounded_pgd_drives_accuracy_to_zero(trained, test_batch, norm):
    """ALPS's gradient-masking check: 200 steps of 0.01, no bound; a model without masked
    gradients loses everything."""
    x, y = test_batch[0][:30], test_batch[1][:30]
    x_adv = PGD(math.inf, 200, 0.01, norm)(trained, x, y)
    assert accuracy(trained, x_adv, y) == 0.0
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_model_state_restored_and_no_parameter_grads():
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1, 8)
    model.train()
    model[1][0].eval()  # a submodule in eval mode inside a training model
    frozen = model[1][2].weight
    frozen.requires_grad_(False)
    before = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    seen = []
    model.register_forward_pre_hook(
        lambda m, inp: seen.append((m.training, any(p.requires_grad for p in m.parameters()))))
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    for attack in (FGSM(0.1), PGD(0.5, 3, norm="l2", random_start=True)):
        attack(model, x, y)
        attack(SoftSmoothed(model, SIGMA, 2), x, y)
    assert seen and all(s == (False, False) for s in seen)  # eval mode, frozen, during every attack forward
    after = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    assert after == before
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises((IndexError, RuntimeError)):  # restored after an error too
        PGD(0.1, 2)(model, x, torch.full((4,), 99))
    assert ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]) == before


def test_bad_arguments_raise_value_error():
    for make in (lambda: FGSM(0), lambda: FGSM(math.inf), lambda: PGD(-1), lambda: PGD(0.1, steps=0),
                 lambda: PGD(0.1, norm="l3"), lambda: PGD(math.inf, 10),
                 lambda: PGD(math.inf, 10, 0.1, random_start=True),
                 lambda: PGD(0.1, step_size=0), lambda: SoftSmoothed(nn.Identity(), 0.0)):
        with pytest.raises(ValueError):
            make()
    model = create_model("digits_cnn", 10, 1, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PGD(0.1)(model, torch.rand(2, 1, 8, 8) + 1, torch.zeros(2, dtype=torch.long))


# -- black-box ----------------------------------------------------------------------------
class Spy(nn.Module):
    """Records, for each forward, whether autograd was recording and whether the input needed grad."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_grad_enabled(), x.requires_grad))
        return self.model(x)


def test_black_box_crafts_on_source_only(trained, tmp_path):
    ds = get_dataset("digits", "test")
    torch.manual_seed(5)
    source = create_model("digits_cnn", 10, 1, 8).eval()
    target = Spy(trained)
    pgd = PGD(0.2, 5, norm="linf")
    summary = attack_dataset(target, ds, pgd, tmp_path / "bb.tsv", source=source, batch_size=16,
                             selection=Selection(1, 20), seed=0)
    assert target.calls and all(c == (False, False) for c in target.calls)  # evaluation only
    assert all(p.grad is None for p in trained.parameters())
    header, rows = read_tsv(tmp_path / "bb.tsv")
    assert tuple(header) == ATTACK_COLUMNS and len(rows) == 20 == summary.count
    x, y = ds.x[:20], ds.y[:20]
    expected = trained(pgd(source, x, y)).argmax(1)  # the white-box attack on the source, transferred
    assert [int(r[2]) for r in rows] == expected.tolist()
    assert [int(r[4]) for r in rows] == trained(x).argmax(1).tolist()
    assert [int(r[3]) for r in rows] == (expected == y).long().tolist()


# -- certificate check --------------------------------------------------------------------
def test_certificate_check_passes_proper_log_and_flags_planted_false_certificates(tmp_path):
    """Linear two-class model f(x) = [w.(x - 1/2) > 0] with ||w|| = 1: g = f and the exact
    robust radius at x is |w.(x - 1/2)|. Inputs at distance 0.3..0.6 are certified with CERTIFY;
    three inputs at distance 0.03 get a planted radius of 2."""
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    w /= w.norm()
    model = linear_model(-w / 2, w / 2, b=-(w.sum() * 0.5).item()).eval()  # logit gap w.(x - 1/2)
    dist = torch.tensor([0.3, -0.4, 0.5, -0.6, 0.35, -0.45, 0.55, 0.03, -0.03, 0.03])
    x = 0.5 + dist.view(-1, 1, 1, 1) * w
    assert x.min() >= 0 and x.max() <= 1
    y = (dist > 0).long()
    ds = TensorImageDataset(x, y, name="line", num_classes=2, mean=(0.0,), std=(1.0,), default_arch="")
    smooth = Smooth(model, 2, SIGMA)
    pred, radius = smooth.certify_batch(x[:7], 50, 2000, 0.001, 2000, torch.Generator().manual_seed(0))
    assert (pred == y[:7]).all() and (radius <= dist[:7].abs()).all()
    proper = tmp_path / "proper.tsv"
    with TSVLog(proper, CERTIFY_COLUMNS) as log:
        for i in range(7):
            log.write([i, int(y[i]), int(pred[i]), round(float(radius[i]), 4), 1, 0.1])
        log.write([9, int(y[9]), -1, 0.0, 0, 0.1])  # an abstention: nothing to check
    kw = dict(n=1000, alpha=0.001, num_noise_vec=8, steps=10, batch_size=256, seed=0)
    ok = check_certificates(model, ds, proper, SIGMA, tmp_path / "ok.tsv", **kw)
    assert ok.checked == 7 and ok.violations == 0 and not ok.significant
    planted = tmp_path / "planted.tsv"
    with TSVLog(planted, CERTIFY_COLUMNS) as log:
        for row in read_tsv(proper)[1][:7]:
            log.write(row)
        for i in (7, 8, 9):  # g(x) = y there, but the true radius is 0.03
            log.write([i, int(y[i]), int(y[i]), 2.0, 1, 0.1])
    bad = check_certificates(model, ds, planted, SIGMA, tmp_path / "bad.tsv", **kw)
    assert bad.checked == 10 and bad.violations == 3 and bad.significant
    header, rows = read_tsv(tmp_path / "bad.tsv")
    assert tuple(header) == CHECK_COLUMNS
    assert sorted(int(r[0]) for r in rows if r[header.index("violation")] == "1") == [7, 8, 9]
    assert all(float(r[header.index("delta_norm")]) <= float(r[header.index("eps")]) + 1e-5 for r in rows)


@pytest.mark.parametrize("settings", [{"noise": "laplace", "norm": "l1"}, {"noise": "gaussian", "norm": "linf"},
                                      {"noise": "uniform"}])
def test_certificate_check_refuses_logs_of_other_noises_or_norms(tmp_path, settings):
    """check-certificates attacks the Gaussian soft smoothed classifier in L2: a log whose metadata
    records another noise or norm is refused before any work (its radii mean something else)."""
    log = tmp_path / "cert.tsv"
    with TSVLog(log, CERTIFY_COLUMNS) as f:
        f.write([0, 0, 0, 0.5, 1, 0.1])
    Path(str(log) + ".meta.json").write_text(json.dumps({"certify": {"sigma": SIGMA, **settings}}))
    ds = TensorImageDataset(torch.rand(1, 1, 4, 4), torch.zeros(1, dtype=torch.long), name="t", num_classes=2,
                            mean=(0.0,), std=(1.0,), default_arch="")
    model = linear_model(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).eval()
    with pytest.raises(ArgumentError, match="^log: .*Gaussian L2") as e:
        check_certificates(model, ds, log, SIGMA, tmp_path / "out.tsv")
    assert e.value.arg == "log" and not (tmp_path / "out.tsv").exists()


def test_violation_pvalue_is_the_binomial_tail():
    from scipy.stats import binom
    assert violation_pvalue(0, 50, 0.002) == 1.0
    assert violation_pvalue(2, 50, 0.002) == pytest.approx(binom.sf(1, 50, 0.002))
    assert violation_pvalue(1, 10, 0.002) > 0.01  # one violation in ten is within what alpha allows


# -- CLI ----------------------------------------------------------------------------------
def rows_without_time(path: Path) -> list[list[str]]:
    header, rows = read_tsv(path)
    return [r[:-1] for r in rows]


@pytest.mark.parametrize("args", [["--attack", "fgsm"], ["--attack", "pgd", "--norm", "l2", "--eps", "1.0"],
                                  ["--attack", "pgd", "--eps", "0.2", "--random-start"]])
def test_cli_white_box(trained_run, runner, tmp_path, args):
    out = tmp_path / "a.tsv"
    r = runner.invoke(main, ["attack", str(trained_run), "--max", "30", "--seed", "0", "--quiet", "--out", str(out),
                             *args])
    assert r.exit_code == 0, r.output
    header, rows = read_tsv(out)
    assert tuple(header) == ATTACK_COLUMNS and len(rows) == 30
    eps = float(args[args.index("--eps") + 1]) if "--eps" in args else 4 / 255
    for idx, label, pred, correct, clean, dn, _ in rows:
        assert int(correct) == int(pred == label) and float(dn) <= eps * (1 + 1e-4)
    clean = sum(r[4] == r[1] for r in rows) / 30
    robust = sum(int(r[3]) for r in rows) / 30
    assert robust <= clean
    assert f"clean accuracy {clean:.4f}, robust accuracy {robust:.4f}" in r.output


def test_cli_black_box_smoothed_and_sanity(trained_run, runner, tmp_path):
    other = write_run(tmp_path / "other", seed=3)
    r = runner.invoke(main, ["attack", str(trained_run), "--source", str(other), "--max", "10", "--quiet",
                             "--out", str(tmp_path / "bb.tsv")])
    assert r.exit_code == 0 and "black-box" in r.output, r.output
    r = runner.invoke(main, ["attack", str(trained_run), "--smoothed", "--norm", "l2", "--eps", "0.5", "--N", "100",
                             "--num-noise-vec", "4", "--max", "4", "--seed", "1", "--quiet",
                             "--out", str(tmp_path / "sm.tsv")])
    assert r.exit_code == 0 and "smoothed" in r.output, r.output
    assert all(int(row[2]) in range(-1, 10) for row in read_tsv(tmp_path / "sm.tsv")[1])
    r = runner.invoke(main, ["attack", str(trained_run), "--sanity", "--max", "10", "--quiet",
                             "--out", str(tmp_path / "s.tsv")])
    assert r.exit_code == 0 and "robust accuracy 0.0000" in r.output and "warning" not in r.output, r.output


def test_cli_resume_equals_uninterrupted(trained_run, runner, tmp_path):
    args = ["attack", str(trained_run), "--random-start", "--max", "12", "--batch", "4", "--seed", "7", "--quiet"]
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    assert runner.invoke(main, [*args, "--out", str(full)]).exit_code == 0
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:6]) + lines[6][:5])  # killed while writing row 6
    Path(str(part) + ".meta.json").write_text(Path(str(full) + ".meta.json").read_text())
    assert runner.invoke(main, [*args, "--out", str(part)]).exit_code == 0
    assert rows_without_time(part) == rows_without_time(full)
    r = runner.invoke(main, [*args, "--eps", "0.1", "--out", str(part)])
    assert r.exit_code == 2 and "other settings" in r.output


def test_cli_check_certificates(trained_run, runner, tmp_path):
    smooth = Smooth(load_model(trained_run)[0], 10, SIGMA)
    ds = get_dataset("digits", "test")
    pred, radius = smooth.certify_batch(ds.x[:10], 20, 500, 0.001, 1000, torch.Generator().manual_seed(0))
    log = tmp_path / "cert.tsv"
    with TSVLog(log, CERTIFY_COLUMNS) as f:
        for i in range(10):
            f.write([i, int(ds.y[i]), int(pred[i]), round(float(radius[i]), 4), int(int(pred[i]) == ds.y[i]), 0.1])
    def check(certify_log: Path, out: str) -> "click.testing.Result":
        return runner.invoke(main, ["check-certificates", str(trained_run), str(certify_log), "--N", "300",
                                    "--seed", "0", "--quiet", "--out", str(tmp_path / out)])

    r = check(log, "ok.tsv")
    assert r.exit_code == 0 and "10 certificates checked" in r.output and " 0 violations" in r.output, r.output
    assert len(read_tsv(tmp_path / "ok.tsv")[1]) == 10
    # the first release's spelling (attack --check-certificates) was removed in the third
    old = runner.invoke(main, ["attack", str(trained_run), "--check-certificates", str(log), "--quiet"])
    assert old.exit_code == 2 and "--check-certificates" in old.output, old.output
    planted = tmp_path / "planted.tsv"  # every certificate claims radius 3 (the 8x8 cube's diagonal is 8)
    with TSVLog(planted, CERTIFY_COLUMNS) as f:
        for row in read_tsv(log)[1]:
            f.write(row[:3] + ["3.0"] + row[4:])
    r = check(planted, "bad.tsv")
    assert r.exit_code == 1 and "SIGNIFICANT" in r.output, r.output


@pytest.mark.parametrize("args,needle", [
    (["--eps", "0"], "--eps"),
    (["--eps", "-0.1"], "--eps"),
    (["--steps", "0"], "--steps"),
    (["--norm", "l3"], "--norm"),
    (["--attack", "cw"], "--attack"),
    (["--attack", "fgsm", "--random-start"], "--random-start"),
    (["--attack", "fgsm", "--steps", "5"], "--steps"),
    (["--sigma", "0.5"], "--sigma"),
    (["--smoothed", "--num-noise-vec", "0"], "--num-noise-vec"),
    (["--sanity", "--eps", "0.1"], "--eps"),
    (["--dataset", "synthetic"], "classes"),
])
def test_cli_errors_exit_2_one_line(trained_run, runner, tmp_path, args, needle):
    r = runner.invoke(main, ["attack", str(trained_run), "--out", str(tmp_path / "o.tsv"), *args])
    assert r.exit_code == 2, r.output
    err = [l for l in r.output.splitlines() if l.startswith("Error")]
    assert len(err) == 1 and needle in err[0], r.output
    assert "Traceback" not in r.output


def test_cli_attack_without_out_prints_the_summary_only(trained_run, runner, tmp_path, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    args = ["attack", str(trained_run), "--max", "8", "--quiet"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0 and "8 inputs" in r.output and "robust accuracy" in r.output, r.output
    assert list(here.iterdir()) == []  # nothing written
    logged = runner.invoke(main, [*args, "--out", "a.tsv"])
    assert logged.output == r.output and len(read_tsv(here / "a.tsv")[1]) == 8  # the same numbers


def test_cli_check_certificates_errors(trained_run, runner, tmp_path):
    log = tmp_path / "cert.tsv"
    with TSVLog(log, CERTIFY_COLUMNS) as f:
        f.write([0, 0, 0, 0.5, 1, 0.1])
    for args, needle in ((["--radius-scale", "1.5"], "--radius-scale"), (["--cert-alpha", "0"], "--cert-alpha"),
                         (["--level", "1"], "--level"), (["--N", "0"], "--N"), (["--alpha", "2"], "--alpha"),
                         (["--out", str(tmp_path)], "--out")):
        r = runner.invoke(main, ["check-certificates", str(trained_run), str(log), *args])
        err = [l for l in r.output.splitlines() if l.startswith("Error")]
        assert r.exit_code == 2 and len(err) == 1 and needle in err[0], (args, r.output)
    r = runner.invoke(main, ["attack", str(trained_run), "--level", "0.1"])  # check-certificates' option only
    assert r.exit_code == 2 and "No such option '--level'" in r.output


def test_cli_source_for_another_dataset_exits_2(trained_run, runner, tmp_path):
    synthetic = write_run(tmp_path / "syn", dataset="synthetic", num_classes=4)
    mnist = write_run(tmp_path / "mnist", arch="lenet", dataset="mnist", input_shape=(1, 28, 28))
    for src, needle in ((synthetic, "classes"), (mnist, "shape")):
        r = runner.invoke(main, ["attack", str(trained_run), "--source", str(src), "--out", str(tmp_path / "o.tsv")])
        assert r.exit_code == 2 and "--source" in r.output and needle in r.output, r.output
        assert "Traceback" not in r.output


# -- the run's noise (issue 23, item 5) ------------------------------------------------------
def excess_kurtosis(d: torch.Tensor) -> float:
    d = d.double().flatten()
    d = d - d.mean()
    return float((d ** 4).mean() / (d ** 2).mean() ** 2 - 3)


@pytest.mark.parametrize("noise,kurtosis", [("gaussian", 0.0), ("laplace", 3.0), ("uniform", -1.2)])
def test_soft_smoothed_draws_its_noise(noise, kurtosis):
    """SoftSmoothed draws the noise it is given: Laplace draws have excess kurtosis 3 and mean
    |d| = lam = sigma / sqrt(2), uniform ones -1.2 and |d| <= sigma sqrt(3), Gaussian ones 0."""
    from smoothcert.noise import get_noise

    model = create_model("digits_cnn", 10, 1, 8).eval()
    for soft in (SoftSmoothed(model, 0.5, 4, noise, generator=torch.Generator().manual_seed(0)),
                 SoftSmoothed(model, None, 4, get_noise(noise, 0.5), generator=torch.Generator().manual_seed(0))):
        assert soft.noise_dist.name == noise and soft.sigma == 0.5
        d = soft.draw_noise(torch.zeros(1000, 1, 8, 8))  # 256 000 draws
        assert d.shape == (4, 1000, 1, 8, 8)
        assert abs(excess_kurtosis(d) - kurtosis) < 0.6
        assert abs(d.std().item() - 0.5) < 0.005
        if noise == "laplace":
            assert abs(d.abs().mean().item() - 0.5 / math.sqrt(2)) < 0.005
        if noise == "uniform":
            assert d.abs().max().item() <= 0.5 * math.sqrt(3)
    with pytest.raises(ArgumentError, match="fixed_noise"):
        SoftSmoothed(model, 0.5, 2, noise=torch.zeros(2, 1, 1, 8, 8))
    with pytest.raises(ArgumentError, match="noise must be one of"):
        SoftSmoothed(model, 0.5, 2, noise="cauchy")


def laplace_run(path: Path) -> Path:
    """A run directory whose config records Laplace training noise (sigma 0.25)."""
    run = write_run(path)
    config = json.loads((run / "config.json").read_text())
    config["method_params"] = {"sigma": SIGMA, "noise": "laplace"}
    (run / "config.json").write_text(json.dumps(config))
    ckpt = safe_torch_load(run / "checkpoint.pt")
    ckpt["config"] = config
    atomic_torch_save(ckpt, run / "checkpoint.pt")
    return run


def test_cli_smoothed_attack_uses_the_runs_noise_and_noise_overrides(runner, tmp_path, monkeypatch):
    """attack --smoothed on a Laplace run attacks (SoftSmoothed) and evaluates (PREDICT) the
    Laplace-smoothed classifier; --noise overrides as in certify; the log records the noise."""
    import smoothcert.attacks.evaluate as evaluate

    soft, smooth = [], []

    class SpySoft(SoftSmoothed):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            soft.append(self)

    class SpySmooth(Smooth):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            smooth.append(self)

    monkeypatch.setattr(evaluate, "SoftSmoothed", SpySoft)
    monkeypatch.setattr(evaluate, "Smooth", SpySmooth)
    run = laplace_run(tmp_path / "lap")
    args = ["attack", str(run), "--smoothed", "--norm", "l2", "--eps", "0.25", "--steps", "1", "--N", "20",
            "--num-noise-vec", "2", "--max", "2", "--quiet"]
    for extra, noise, kurtosis in (([], "laplace", 3.0), (["--noise", "uniform"], "uniform", -1.2),
                                   (["--noise", "GAUSSIAN"], "gaussian", 0.0)):
        soft.clear()
        smooth.clear()
        out = tmp_path / f"{noise}.tsv"
        r = runner.invoke(main, [*args, "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        assert f"smoothed ({noise} sigma=0.25)" in r.output
        assert soft and {(s.noise_dist.name, s.sigma) for s in soft} == {(noise, SIGMA)}
        assert [s.noise.name for s in smooth] == [noise]
        recorded = json.loads(Path(str(out) + ".meta.json").read_text())["attack"]["smoothed"]
        assert recorded.get("noise", "gaussian") == noise and ("noise" in recorded) == (noise != "gaussian")
        draws = soft[0].draw_noise(torch.zeros(1000, 1, 8, 8))  # what PGD attacked: the noise's distribution
        assert abs(excess_kurtosis(draws) - kurtosis) < 0.6 and abs(draws.std().item() - SIGMA) < 0.003
        if noise == "laplace":
            assert abs(draws.abs().mean().item() - SIGMA / math.sqrt(2)) < 0.003
    r = runner.invoke(main, [*args, "--out", str(tmp_path / "laplace.tsv")])  # resume, same (run's) noise
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, [*args, "--out", str(tmp_path / "laplace.tsv"), "--noise", "uniform"])
    assert r.exit_code == 2 and "other settings" in r.output, r.output  # a resume with another noise is refused
    r = runner.invoke(main, [*args, "--noise", "cauchy"])
    assert r.exit_code == 2 and "--noise: must be one of gaussian, laplace, uniform" in r.output, r.output
    r = runner.invoke(main, ["attack", str(run), "--noise", "laplace", "--max", "2", "--quiet"])
    assert r.exit_code == 2 and "--noise does not apply without --smoothed" in r.output, r.output


def test_cli_predict_batch_is_predicts_noise_block_only(trained_run, runner, tmp_path):
    """--batch is the attack's batch (rows per forward, each batch of inputs its own generator);
    --predict-batch is PREDICT's noise block: recorded (not checked), absent from the metadata
    when not given, refused without --smoothed; giving it as the default changes nothing."""
    base = ["attack", str(trained_run), "--smoothed", "--norm", "l2", "--eps", "0.5", "--N", "100",
            "--num-noise-vec", "4", "--max", "4", "--batch", "16", "--seed", "1", "--quiet"]
    logs = {}
    for name, extra in (("default", []), ("same", ["--predict-batch", "16"]), ("small", ["--predict-batch", "7"])):
        logs[name] = tmp_path / f"{name}.tsv"
        r = runner.invoke(main, [*base, *extra, "--out", str(logs[name])])
        assert r.exit_code == 0, r.output
    meta = {k: json.loads(Path(f"{p}.meta.json").read_text())["attack"] for k, p in logs.items()}
    assert "predict_batch" not in meta["default"] and meta["small"]["predict_batch"] == 7
    assert meta["default"]["batch_size"] == meta["small"]["batch_size"] == 16
    assert rows_without_time(logs["same"]) == rows_without_time(logs["default"])
    r = runner.invoke(main, ["attack", str(trained_run), "--predict-batch", "8", "--max", "2", "--quiet"])
    assert r.exit_code == 2 and "--predict-batch does not apply without --smoothed" in r.output, r.output
