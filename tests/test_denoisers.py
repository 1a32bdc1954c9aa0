"""Denoised smoothing (issue 25): the composition, the denoisers, denoiser and DDPM training, one-shot
diffusion denoising, loading and the CLI.

What must hold: ``Denoised(D, F)`` is ``F(D(x))`` and, under ``Smooth``, the denoiser sees x + noise;
the classifier a denoiser is trained for is frozen (its state_dict, BatchNorm statistics included,
is bit-identical after training); the stability objective's label is the classifier's clean
prediction; the timestep matching is the closed form sqrt((1 - abar_t) / abar_t) ~ 2 sigma, and a
model that predicts the true epsilon gives back the clean image exactly; an oracle denoiser
certifies what the classifier certifies at sigma -> 0; shape and num_classes mismatches are one-line
errors naming the argument; a denoiser run records its classifier and certifies the composition.
Tiny models on 8x8 images: seconds each.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothcert import Smooth, train
from smoothcert.cli import main
from smoothcert.data import get_dataset
from smoothcert.denoisers import (DENOISERS, Denoised, DnCNN, EpsUNet, OneShotDenoiser, PackedEps, UNet,
                                  create_denoiser, ddpm_loss, linear_schedule, match_timestep, noise_levels,
                                  num_parameters)
from smoothcert.denoisers.diffusion import with_timestep
from smoothcert.denoisers.loading import load_denoiser, through_denoiser
from smoothcert.methods import TrainContext, create_method
from smoothcert.methods.denoiser import Frozen
from smoothcert.models import MODELS, create_model
from smoothcert.noise import add_noise
from smoothcert.runs import load_model, model_fingerprint
from smoothcert.train import Batches, Trainer
from smoothcert.validation import ArgumentError

QUICK = dict(dataset="synthetic", batch_size=32, max_train_samples=64, max_test_samples=64, quiet=True)
SMALL_DNCNN = {"depth": 3, "width": 4}


def tiny_bn(num_classes: int = 4, in_channels: int = 1, input_size: int = 8) -> nn.Module:
    """A classifier with BatchNorm, whose running statistics a training-mode forward would move."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * input_size * input_size, num_classes))


@pytest.fixture(scope="module")
def bn_arch():
    MODELS.add("tiny_bn", tiny_bn)
    yield "tiny_bn"
    MODELS.remove("tiny_bn")


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory, bn_arch) -> Path:
    """A BatchNorm classifier trained on clean synthetic data (sigma 0)."""
    return train(tmp_path_factory.mktemp("clf") / "clf", arch=bn_arch, method="gauss", method_params={"sigma": 0.0},
                 epochs=2, lr=0.05, **QUICK)


def one_line(e: pytest.ExceptionInfo, arg: str) -> None:
    assert isinstance(e.value, ArgumentError) and e.value.arg == arg
    assert "\n" not in str(e.value) and str(e.value).startswith(arg)


# -- the composition -----------------------------------------------------------------------------
def test_composition_is_the_manual_pipeline_and_smooth_treats_it_as_a_model():
    torch.manual_seed(0)
    den = DnCNN(1, **SMALL_DNCNN).eval()
    clf = create_model("digits_cnn", 4, 1, 8).eval()
    model = Denoised(den, clf)
    assert not model.training  # eval parts: an eval whole (Smooth folds its BatchNorm)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), clf(den(x)))
    xs = torch.rand(3, 1, 8, 8)
    counts = [Smooth(m, 4, 0.25, seed=0).sample_counts(xs, 300, 100, torch.Generator().manual_seed(7))
              for m in (model, nn.Sequential(den, clf))]
    assert torch.equal(counts[0], counts[1]) and int(counts[0].sum()) == 900
    assert set(model.state_dict()) == {f"denoiser.{k}" for k in den.state_dict()} | \
        {f"classifier.{k}" for k in clf.state_dict()}


_SEEN: list[torch.Tensor] = []


class Recorder(nn.Module):
    """The identity, recording its inputs (in a module-level list, which Smooth's copy shares)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _SEEN.append(z.detach().clone())
        return z


def test_under_smooth_the_denoiser_sees_the_noisy_input():
    x = torch.rand(1, 8, 8)
    smooth = Smooth(Denoised(Recorder(), nn.Sequential(nn.Flatten(), nn.Linear(64, 3))), 3, 0.5, fold_bn=False,
                    chunk_size=500, seed=0)  # a fixed chunk: no probing forwards
    _SEEN.clear()
    smooth.certify(x, 50, 2000, 0.001, 500)
    seen = torch.cat(_SEEN)
    assert seen.shape[0] == 2050
    d = seen - x
    assert abs(d.mean().item()) < 0.01 and d.std().item() == pytest.approx(0.5, rel=0.02)


class Oracle(nn.Module):
    """Knows the clean image and ignores the noise."""

    def __init__(self, clean: torch.Tensor):
        super().__init__()
        self.register_buffer("clean", clean)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.clean.expand_as(z)


def test_an_oracle_denoiser_certifies_what_the_classifier_certifies_at_small_sigma():
    torch.manual_seed(1)
    clf = create_model("digits_cnn", 4, 1, 8).eval()
    xs = get_dataset("synthetic", "test").x[:4]
    for x in xs:
        with torch.no_grad():
            want = int(clf(x[None]).argmax(1))
        bare = Smooth(clf, 4, 1e-4, seed=0).certify(x, 50, 500, 0.001, 250)
        denoised = Smooth(Denoised(Oracle(x[None]), clf), 4, 1e-4, seed=0).certify(x, 50, 500, 0.001, 250)
        assert bare[0] == denoised[0] == want
        assert denoised[1] == pytest.approx(bare[1])
        # at a large sigma the classifier alone is lost, the oracle still wins every vote: the largest radius
        label, radius = Smooth(Denoised(Oracle(x[None]), clf), 4, 0.5, seed=0).certify(x, 50, 500, 0.001, 250)
        assert label == want and radius == pytest.approx(0.5 * 2.2051, abs=1e-3)  # sigma Phi^-1(0.001^(1/500))


def test_shape_and_num_classes_mismatches_are_one_line_errors():
    clf = create_model("digits_cnn", 4, 1, 8).eval()
    with pytest.raises(ArgumentError) as e:
        Denoised(nn.Conv2d(1, 1, 3), clf, input_shape=(1, 8, 8))  # no padding: 8x8 -> 6x6
    one_line(e, "denoiser")
    assert "(1, 1, 6, 6)" in str(e.value)
    with pytest.raises(ArgumentError) as e:
        Denoised(DnCNN(1, **SMALL_DNCNN), clf, input_shape=(1, 8, 8), num_classes=10)
    one_line(e, "num_classes")
    with pytest.raises(ArgumentError) as e:  # at certification time too
        Smooth(Denoised(nn.Conv2d(1, 1, 3), clf), 4, 0.25, seed=0).certify(torch.rand(1, 8, 8), 10, 10, 0.01, 10)
    one_line(e, "denoiser")
    with pytest.raises(ArgumentError) as e:
        Denoised(lambda z: z, clf)
    one_line(e, "denoiser")
    bn = tiny_bn().train()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    Denoised(nn.Identity(), bn, input_shape=(1, 8, 8), num_classes=4)  # the check leaves the modules as they were
    assert bn.training and all(torch.equal(v, before[k]) for k, v in bn.state_dict().items())


# -- the denoisers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DENOISERS.names())
@pytest.mark.parametrize("side", [8, 7, 28])
def test_every_registered_denoiser_keeps_the_shape(name, side):
    for c in (1, 3):
        den = create_denoiser(name, c).eval()
        x = torch.rand(2, c, side, side)
        with torch.no_grad():
            out = den(x)
        assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
        model = create_model(name, 10, c, side, mean=[0.5] * c, std=[0.25] * c)  # also an arch: no normalisation
        assert torch.equal(model[0].mean, torch.zeros(1, 1, 1, 1)) and torch.equal(model[0].std, torch.ones(1, 1, 1, 1))
    with pytest.raises(ArgumentError) as e:
        create_denoiser("nope")
    one_line(e, "denoiser")


def test_default_sizes_have_the_documented_parameter_counts():
    assert num_parameters(DnCNN()) == 56_288 and num_parameters(DnCNN(depth=17, width=64)) == 556_096
    assert num_parameters(UNet()) == 117_073
    assert num_parameters(EpsUNet()) == 455_809
    for doc, n in ((DnCNN.__doc__, "56,288"), (UNet.__doc__, "117,073"), (EpsUNet.__doc__, "455,809")):
        assert n in " ".join(doc.split())


def test_dncnn_is_residual_and_folds_into_smooth():
    den = DnCNN(1, **SMALL_DNCNN).eval()
    with torch.no_grad():
        den.dncnn[-1].weight.zero_()  # predicted noise 0: the identity
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(den(x), x)
    from smoothcert.inference import prepare_model

    _, info = prepare_model(Denoised(DnCNN(1, **SMALL_DNCNN).eval(), tiny_bn().eval()))
    assert info["folded_bn"] == 2  # DnCNN's one middle BN and the classifier's


# -- diffusion: the timestep matching and the one-step estimate ----------------------------------------
def exact_schedule(T: int = 40) -> torch.Tensor:
    """abar_t = 1 / (1 + (0.1 t)^2): noise level sqrt((1 - abar_t) / abar_t) = 0.1 t exactly."""
    t = torch.arange(T, dtype=torch.float64)
    return 1.0 / (1.0 + (0.1 * t) ** 2)


def test_timestep_matching_is_the_closed_form():
    a = exact_schedule()
    assert torch.allclose(noise_levels(a), 0.1 * torch.arange(40, dtype=torch.float64))
    for sigma, t in ((0.25, 5), (0.5, 10), (1.0, 20), (0.12, 2), (0.13, 3), (0.0, 0), (5.0, 39)):
        assert match_timestep(a, sigma) == t  # 2 sigma / 0.1, rounded: the [-1, 1] range doubles sigma
    lin = linear_schedule()
    levels = torch.sqrt((1 - lin) / lin)
    for sigma in (0.12, 0.25, 0.5, 1.0):
        t = match_timestep(lin, sigma)
        gap = (levels - 2 * sigma).abs()
        assert gap[t] <= gap[t - 1] and gap[t] <= gap[t + 1] and levels[t - 1] < 2 * sigma < levels[t + 1]
    assert (match_timestep(lin, 0.25), match_timestep(lin, 0.5), match_timestep(lin, 1.0)) == (144, 258, 396)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(lin, torch.cumprod(1 - betas, 0))


class TrueEps(nn.Module):
    """An epsilon model that returns the noise that was really added (set before each call)."""

    def __init__(self):
        super().__init__()
        self.eps: torch.Tensor | None = None
        self.calls: list[torch.Tensor] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(t)
        return self.eps


def test_one_step_estimate_with_the_true_epsilon_returns_the_clean_image_exactly():
    g = torch.Generator().manual_seed(0)
    x = 0.1 + 0.8 * torch.rand(6, 1, 8, 8, generator=g)
    for sigma, t in ((0.25, 5), (0.5, 10)):
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64).float()
        model = TrueEps()
        model.eps = eps
        one = OneShotDenoiser(model, exact_schedule(), sigma)
        assert one.timestep == t
        out = one(x + sigma * eps)  # our pixel noise d = sigma eps is the model's 2 sigma eps in [-1, 1]
        assert torch.allclose(out, x, atol=1e-5)
        assert torch.equal(model.calls[-1], torch.full((6,), t, dtype=torch.long))
        off = OneShotDenoiser(model, exact_schedule(), sigma, t=t + 2)  # a mismatched timestep is not exact
        assert (off(x + sigma * eps) - x).abs().max() > 0.05
    # clipping to [0, 1]
    model.eps = torch.zeros_like(x)
    assert OneShotDenoiser(model, exact_schedule(), 0.25)(x + 2.0).max() == 1.0


def test_ddpm_loss_is_zero_for_the_true_epsilon_and_packs_the_timestep():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 1, 8, 8, generator=g)
    abar = linear_schedule(100).float()
    t = torch.tensor([0, 10, 50, 99, 3])
    eps = torch.randn(x.shape, generator=g)

    def oracle(x_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:  # solves x_t = sqrt(a) x0 + sqrt(1 - a) eps
        a = abar[tt].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * (2 * x - 1)) / (1 - a).sqrt()

    assert ddpm_loss(oracle, x, abar, t, eps).item() == pytest.approx(0.0, abs=1e-8)
    assert ddpm_loss(lambda x_t, tt: torch.zeros_like(x_t), x, abar, t, eps).item() == pytest.approx(
        (eps ** 2).mean().item())
    packed = with_timestep(x, t)
    assert packed.shape == (5, 2, 8, 8) and torch.equal(packed[:, 1, 3, 4], t.float())
    net = create_model("ddpm_unet", 10, 1, 8, width=8).eval()
    with torch.no_grad():
        out = PackedEps(net)(x, t)
    assert out.shape == x.shape
    with torch.no_grad():  # the timestep reaches the network: another t, another prediction
        assert not torch.allclose(out, PackedEps(net)(x, t + 1))


def test_diffusers_unet_with_its_scheduler(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 8), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    from smoothcert.denoisers import diffusers_denoiser

    one = diffusers_denoiser(unet, scheduler, 0.25)
    assert one.timestep == match_timestep(scheduler.alphas_cumprod, 0.25) == 144
    z = torch.rand(2, 1, 8, 8)
    a = scheduler.alphas_cumprod[144]
    with torch.no_grad():
        x_t = a.sqrt() * (2 * z - 1)
        want = (((x_t - (1 - a).sqrt() * unet(x_t, torch.tensor([144, 144])).sample) / a.sqrt() + 1) / 2).clamp(0, 1)
        assert torch.allclose(one(z), want, atol=1e-5)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(tmp_path / "pipe"))
    loaded, config = load_denoiser(tmp_path / "pipe", 0.25)
    assert config is None and loaded.timestep == 144
    with torch.no_grad():
        assert torch.allclose(loaded(z), want, atol=1e-5)


# -- denoiser training -------------------------------------------------------------------------------
def test_stability_label_is_the_classifiers_clean_prediction():
    torch.manual_seed(2)
    clf = create_model("digits_cnn", 4, 1, 8).eval()
    method = create_method("denoiser", classifier=clf, sigma=0.25, objective="stability")
    den = DnCNN(1, **SMALL_DNCNN).train()
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        clean = clf(x).argmax(1)
    y = (clean + 1) % 4  # true labels that the classifier never predicts
    torch.manual_seed(5)
    loss = method.loss(den, x, y)
    torch.manual_seed(5)
    d = method.noise.perturb(x)
    logits = clf(den(d))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, clean).item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-3)
    loss.backward()
    assert all(p.grad is not None for p in den.parameters())
    assert all(p.grad is None for p in clf.parameters())  # frozen: no gradient into the classifier
    mse = create_method("denoiser", classifier=clf, sigma=0.25)
    torch.manual_seed(5)
    assert mse.loss(den, x, y).item() == pytest.approx(F.mse_loss(den(d), x).item(), rel=1e-6)


def test_surrogate_is_for_stability_and_carries_the_loss(clf_run):
    torch.manual_seed(3)
    surrogate = create_model("digits_cnn", 4, 1, 8).eval()
    method = create_method("denoiser", classifier=str(clf_run), sigma=0.25, objective="stability",
                           surrogate=surrogate)
    assert method.trained_through.module is surrogate and method.params()["classifier"] == str(clf_run)
    x = torch.rand(6, 1, 8, 8)
    den = DnCNN(1, **SMALL_DNCNN)
    torch.manual_seed(1)
    loss = method.loss(den, x, torch.zeros(6, dtype=torch.long))
    torch.manual_seed(1)
    with torch.no_grad():
        want = F.cross_entropy(surrogate(den(method.noise.perturb(x))), surrogate(x).argmax(1))
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ArgumentError) as e:
        create_method("denoiser", classifier=str(clf_run), sigma=0.25, surrogate=surrogate)
    one_line(e, "surrogate")


def test_the_frozen_classifier_is_bit_identical_after_denoiser_training(clf_run):
    for objective in ("stability", "mse"):
        method = create_method("denoiser", classifier=str(clf_run), sigma=0.25, objective=objective)
        clf = method.classifier.module
        before = {k: v.clone() for k, v in clf.state_dict().items()}
        assert any("running_mean" in k for k in before) and any("num_batches_tracked" in k for k in before)
        train_set, test_set = get_dataset("synthetic", "train"), get_dataset("synthetic", "test")
        torch.manual_seed(0)
        trainer = Trainer(create_model("dncnn", 4, 1, 8, **SMALL_DNCNN), method, epochs=2, lr=0.05)
        method.setup(TrainContext(train_set, 4, torch.device("cpu")))
        trainer.fit(Batches(train_set, 32, train=True, limit=64), Batches(test_set, 32, train=False, limit=64),
                    sigma=0.25)
        after = clf.state_dict()
        assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
        assert not clf.training and not any(p.requires_grad for p in clf.parameters())
        assert model_fingerprint(clf) == method.classifier_fingerprint == model_fingerprint(load_model(clf_run)[0])
        assert any(not torch.equal(v, create_model("dncnn", 4, 1, 8, **SMALL_DNCNN).state_dict()[k])
                   for k, v in trainer.model.state_dict().items())  # the denoiser did train


def test_frozen_ignores_train_mode():
    bn = tiny_bn()
    f = Frozen(bn)
    f.train()
    assert not f.training and not bn.training and not any(p.requires_grad for p in bn.parameters())


def test_denoiser_run_records_its_classifier_logs_the_composition_and_certifies_it(clf_run, tmp_path):
    run = train(tmp_path / "den", method="denoiser", method_params={"classifier": str(clf_run), "sigma": 0.25,
                                                                    "objective": "stability"},
                epochs=1, lr=0.05, seed=4, model_kwargs=SMALL_DNCNN, **QUICK)
    config = json.loads((run / "config.json").read_text())
    clf, _ = load_model(clf_run)
    assert config["arch"] == "dncnn" and config["sigma"] == 0.25  # the method's default arch
    assert config["method_params"]["classifier"] == str(clf_run)
    assert config["method_params"]["classifier_fingerprint"] == model_fingerprint(clf)
    model, loaded = load_model(run)
    assert isinstance(model, Denoised) and loaded == config
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in model.classifier.state_dict().items())
    # the logged noisy test accuracy is the composition's (a denoiser's output is an image, not logits)
    test = get_dataset("synthetic", "test")
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        pred = torch.cat([model(add_noise(xb, 0.25, "gaussian", gen)).argmax(1) for xb in test.x[:64].split(32)])
    row = (run / "train_log.tsv").read_text().splitlines()[-1].split("\t")
    assert float(row[5]) == pytest.approx((pred == test.y[:64]).double().mean().item(), abs=1e-6)
    # num_classes / arch mismatches when training: one line, naming the argument
    with pytest.raises(ArgumentError) as e:
        train(tmp_path / "bad", dataset="digits", method="denoiser", method_params={"classifier": str(clf_run),
                                                                                  "sigma": 0.25},
              epochs=1, batch_size=32, max_train_samples=64, max_test_samples=32, quiet=True)
    one_line(e, "classifier")
    with pytest.raises(ArgumentError) as e:
        train(tmp_path / "bad2", arch="digits_cnn", method="denoiser", method_params={"classifier": str(clf_run),
                                                                                      "sigma": 0.25}, epochs=1,
              **QUICK)
    one_line(e, "arch")


def test_cli_train_certify_and_certify_through_a_denoiser(clf_run, tmp_path, runner):
    out = tmp_path / "den"
    r = runner.invoke(main, ["train", "--out", str(out), "--dataset", "synthetic", "--method", "denoiser",
                             "--arch", "unet", "-p", f"classifier={clf_run}", "--sigma", "0.25", "-p",
                             "objective=mse", "--epochs", "1", "--batch-size", "32", "--max-train-samples", "64",
                             "--max-test-samples", "32", "--quiet"])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "unet" and config["method_params"]["classifier"] == str(clf_run)
    assert config["method_params"]["classifier_fingerprint"] == model_fingerprint(load_model(clf_run)[0])
    log = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(out), "--N", "100", "--max", "3", "--batch", "100", "--out", str(log),
                             "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(log.read_text().splitlines()) == 4
    meta = json.loads(Path(str(log) + ".meta.json").read_text())
    assert meta["config"]["method"] == "denoiser"
    # the same denoiser in front of the classifier, from the classifier's side: the same log
    log2 = tmp_path / "c2.tsv"
    r = runner.invoke(main, ["certify", str(clf_run), "--denoiser", str(out), "--N", "100", "--max", "3", "--batch",
                             "100", "--out", str(log2), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = lambda p: [line.split("\t")[:5] for line in p.read_text().splitlines()]  # noqa: E731
    assert rows(log2) == rows(log)
    meta2 = json.loads(Path(str(log2) + ".meta.json").read_text())
    assert meta2["denoiser"] == str(out) and meta2["denoiser_config"]["arch"] == "unet"
    # a classifier run is no denoiser; a bad one is one line with status 2
    r = runner.invoke(main, ["certify", str(clf_run), "--denoiser", str(clf_run), "--sigma", "0.25", "--N", "10",
                             "--max", "1", "--out", str(tmp_path / "c3.tsv"), "--quiet"])
    assert r.exit_code == 2 and "--denoiser" in r.output and "not a denoiser" in r.output


def test_ddpm_method_trains_and_certifies_through_one_shot(clf_run, tmp_path, runner):
    run = train(tmp_path / "ddpm", method="ddpm", method_params={"num_steps": 100, "classifier": str(clf_run),
                                                                 "sigma": 0.25},
                epochs=1, lr=0.01, model_kwargs={"width": 8}, **QUICK)
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == "ddpm_unet" and config["method_params"]["num_steps"] == 100
    row = (run / "train_log.tsv").read_text().splitlines()[-1].split("\t")
    assert 0.0 <= float(row[5]) <= 1.0 and math.isfinite(float(row[3]))
    den, _ = load_denoiser(run)  # the run's sigma
    assert isinstance(den, OneShotDenoiser) and den.timestep == match_timestep(linear_schedule(100), 0.25)
    clf, cconfig = load_model(clf_run)
    model, sigma = through_denoiser(clf, cconfig, run, None)
    assert sigma == 0.25 and isinstance(model, Denoised)
    with pytest.raises(ArgumentError) as e:  # a DDPM is no classifier
        load_model(run)
    one_line(e, "model")
    log = tmp_path / "d.tsv"
    r = runner.invoke(main, ["certify", str(clf_run), "--denoiser", str(run), "--N", "50", "--max", "2", "--batch",
                             "50", "--out", str(log), "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(log.read_text().splitlines()) == 3
    # without a classifier the logged accuracy is nan (nothing to measure), not a number from image outputs
    bare = train(tmp_path / "bare", method="ddpm", method_params={"num_steps": 100}, epochs=1, lr=0.01,
                 model_kwargs={"width": 8}, **QUICK)
    assert math.isnan(float((bare / "train_log.tsv").read_text().splitlines()[-1].split("\t")[5]))


def test_a_changed_classifier_is_refused_when_certifying_the_denoiser_run(clf_run, tmp_path):
    import shutil

    clf = tmp_path / "clf"
    shutil.copytree(clf_run, clf)
    run = train(tmp_path / "den", method="denoiser", method_params={"classifier": str(clf), "sigma": 0.25},
                epochs=1, lr=0.05, model_kwargs=SMALL_DNCNN, **QUICK)
    ckpt = torch.load(clf / "checkpoint.pt", weights_only=True)
    ckpt["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, clf / "checkpoint.pt")
    with pytest.raises(ArgumentError) as e:
        load_model(run)
    one_line(e, "model")
    assert "fingerprint" in str(e.value)
