"""The Trainer, ``smoothcert.train.train`` and ``smoothcert train``.

What must hold: the run directory is what ``runs.load_model``/``certify`` read; the log's lr follows
the schedule's closed form and its test accuracy is the noisy accuracy of the saved model; a
resume reproduces an uninterrupted run bit for bit; a NaN stops training with the last good
checkpoint kept; 2 DDP processes compute what one process computes; crop/flip batches are crops;
user errors are one-line exits with status 2; no method flag is ever silently ignored.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from smoothcert import data as data_mod
from smoothcert import methods as methods_mod
from smoothcert.cli import main
from smoothcert.cli.train import METHOD_FLAGS, method_params
from smoothcert.data import DatasetEntry, get_dataset
from smoothcert.data.synthetic import make_synthetic
from smoothcert.logs import read_tsv
from smoothcert.methods import Method, list_methods
from smoothcert.models import create_model, list_models
from smoothcert.noise import add_gaussian_noise
from smoothcert.runs import load_model
from smoothcert.train import TRAIN_COLUMNS, Batches, NonFiniteLoss, train

QUICK = dict(dataset="synthetic", batch_size=32, max_train_samples=64, max_test_samples=64, quiet=True)


def state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def log_rows(run: Path) -> list[list[str]]:
    header, rows = read_tsv(run / "train_log.tsv")
    assert header == list(TRAIN_COLUMNS)
    return rows


# -- the run directory -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gauss_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("runs") / "gauss", method="gauss", method_params={"sigma": 0.25}, epochs=2,
                 lr_step_size=1, lr_gamma=0.5, seed=3, **QUICK)


def test_run_directory_has_what_certify_needs(gauss_run):
    config = json.loads((gauss_run / "config.json").read_text())
    assert {k: config[k] for k in ("dataset", "arch", "num_classes", "input_shape", "sigma", "method", "method_params")} \
        == {"dataset": "synthetic", "arch": "digits_cnn", "num_classes": 4, "input_shape": [1, 8, 8], "sigma": 0.25,
            "method": "gauss", "method_params": {"sigma": 0.25}}
    assert config["epochs"] == 2 and config["lr"] == 0.1 and config["weight_decay"] == 1e-4 and config["seed"] == 3
    ckpt = state(gauss_run)
    assert ckpt["format"] == "smoothcert-1" and ckpt["arch"] == "digits_cnn" and ckpt["epoch"] == 2
    assert ckpt["config"] == config and {"optimizer", "scheduler"} <= set(ckpt)
    model, loaded = load_model(gauss_run)
    assert loaded == config
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in model.state_dict().items())


def test_log_lr_follows_the_step_schedule_and_test_accuracy_is_the_noisy_accuracy(gauss_run):
    rows = log_rows(gauss_run)
    assert [int(r[0]) for r in rows] == [1, 2]
    assert [float(r[2]) for r in rows] == pytest.approx([0.1, 0.05])  # x lr_gamma every lr_step_size epochs
    # test_acc_noisy: the saved model's accuracy on test inputs + N(0, sigma^2), generator seeded by the seed
    model, config = load_model(gauss_run)
    test = get_dataset("synthetic", "test")
    x, y = test.x[:64], test.y[:64]
    gen = torch.Generator().manual_seed(config["seed"])
    with torch.no_grad():
        pred = torch.cat([model(add_gaussian_noise(xb, 0.25, gen)).argmax(1) for xb in x.split(32)])
    assert float(rows[-1][5]) == pytest.approx((pred == y).double().mean().item(), abs=1e-6)


def test_cosine_schedule_in_the_log(tmp_path):
    run = train(tmp_path / "cos", method="gauss", method_params={"sigma": 0.1}, epochs=4, schedule="cosine", lr=0.2,
                **QUICK)
    lrs = [float(r[2]) for r in log_rows(run)]
    assert lrs == pytest.approx([0.2 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)], rel=1e-5)


def test_training_learns_the_synthetic_task(tmp_path):
    run = train(tmp_path / "learn", method="gauss", method_params={"sigma": 0.1}, epochs=3,
                **{**QUICK, "max_train_samples": 256})
    assert float(log_rows(run)[-1][5]) > 0.9  # 4 well-separated classes


# -- resume ----------------------------------------------------------------------------------------
RESUMABLE = dict(arch="cifar_resnet20", method="maxup-gauss", method_params={"sigma": 0.25, "m": 2, "warmup_epochs": 1},
                 lr_step_size=2, seed=1, **QUICK)


def test_resume_continues_bit_for_bit(tmp_path):
    whole = train(tmp_path / "whole", epochs=3, **RESUMABLE)
    part = train(tmp_path / "part", epochs=2, **RESUMABLE)
    assert state(part)["epoch"] == 2
    train(part, epochs=3, resume=True, **RESUMABLE)
    a, b = state(whole), state(part)
    assert b["epoch"] == 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])  # incl. BN statistics
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    drop_seconds = lambda rows: [r[:1] + r[2:] for r in rows]  # noqa: E731
    assert drop_seconds(log_rows(whole)) == drop_seconds(log_rows(part))


def test_channels_last_is_a_layout_choice_that_a_resume_may_change(tmp_path):
    """NHWC weights and batches compute what NCHW computes (to float rounding), the checkpoint loads
    into a plain model, and a run started in one layout resumes in the other. (gauss, not
    maxup-gauss: MaxUp's argmax over copies can flip on a rounding difference, and then the two
    runs diverge by design, so the layout comparison would depend on the CPU's kernels.)"""
    smooth_run = {**RESUMABLE, "method": "gauss", "method_params": {"sigma": 0.25}}
    plain = train(tmp_path / "plain", epochs=2, **smooth_run)
    nhwc = train(tmp_path / "nhwc", epochs=1, channels_last=True, **smooth_run)
    assert state(nhwc)["config"]["channels_last"] is True
    train(nhwc, epochs=2, channels_last=False, resume=True, **smooth_run)
    a, b = state(plain)["state_dict"], state(nhwc)["state_dict"]
    # float rounding only: two epochs of SGD on an AMD EPYC moved conv1's weights (max 0.36) by up to
    # 1.3e-4 between layouts; a layout bug (permuted or transposed weights) moves them by O(0.1)
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-3) for k in a)
    assert [float(r[3]) for r in log_rows(plain)] == pytest.approx([float(r[3]) for r in log_rows(nhwc)], rel=1e-4)
    model, config = load_model(nhwc, "cpu")
    assert model(torch.rand(2, *config["input_shape"])).shape == (2, 4)


def test_resume_refuses_another_config_and_a_run_is_never_overwritten(tmp_path):
    run = train(tmp_path / "r", method="gauss", method_params={"sigma": 0.25}, epochs=1, **QUICK)
    with pytest.raises(ValueError, match="already holds a run"):
        train(run, method="gauss", method_params={"sigma": 0.25}, epochs=1, **QUICK)
    with pytest.raises(ValueError, match=r"another config \(method_params"):
        train(run, method="gauss", method_params={"sigma": 0.5}, epochs=2, resume=True, **QUICK)
    with pytest.raises(ValueError, match=r"another config \(lr"):
        train(run, method="gauss", method_params={"sigma": 0.25}, epochs=2, lr=0.05, resume=True, **QUICK)
    assert state(run)["epoch"] == 1
    cos = train(tmp_path / "c", method="gauss", method_params={"sigma": 0.25}, epochs=1, schedule="cosine", **QUICK)
    with pytest.raises(ValueError, match="cosine"):
        train(cos, method="gauss", method_params={"sigma": 0.25}, epochs=2, schedule="cosine", resume=True, **QUICK)
    result = CliRunner().invoke(main, ["train", "--out", str(run), "--dataset", "synthetic", "--sigma", "0.5",
                                       "--epochs", "2", "--resume", "--quiet", "--max-train-samples", "64",
                                       "--max-test-samples", "64", "--batch-size", "32"])
    assert result.exit_code == 2 and "another config" in result.output and "Traceback" not in result.output


def test_resume_trims_log_lines_of_an_epoch_that_was_not_checkpointed(tmp_path):
    run = train(tmp_path / "t", method="gauss", method_params={"sigma": 0.25}, epochs=1, **QUICK)
    with open(run / "train_log.tsv", "a") as f:  # a crash between the log line and the checkpoint
        f.write("2\t12345.678\t0.1\t0.5\t0.5\t0.5\n")  # a marker no real epoch writes
    train(run, method="gauss", method_params={"sigma": 0.25}, epochs=2, resume=True, **QUICK)
    assert [int(r[0]) for r in log_rows(run)] == [1, 2] and log_rows(run)[1][1] != "12345.678"


# -- NaN -------------------------------------------------------------------------------------------
class NaNFromEpoch2(Method):
    """Cross-entropy, times NaN from the second epoch on."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.epoch = epoch

    def loss(self, model, x, y):
        logits = model(x)
        self._record_accuracy(logits, y)
        return F.cross_entropy(logits, y) * (float("nan") if self.epoch >= 1 else 1.0)

    def params(self):
        return {}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, request):
    methods_mod.METHODS.add("nan-test", NaNFromEpoch2)
    request.addfinalizer(lambda: methods_mod.METHODS.remove("nan-test"))
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLoss, match="epoch 2.*keeps the checkpoint of epoch 1"):
        train(run, method="nan-test", epochs=3, **QUICK)
    ckpt = state(run)
    assert ckpt["epoch"] == 1 and len(log_rows(run)) == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "nan_cli"), "--method", "nan-test", "--dataset",
                                       "synthetic", "--epochs", "3", "--quiet", "--max-train-samples", "64"])
    assert result.exit_code == 1 and "non-finite" in result.output and "Traceback" not in result.output


# -- batches ---------------------------------------------------------------------------------------
def test_global_batches_split_over_processes_and_cover_the_epoch():
    ds = make_synthetic(n=100, seed=0)
    ds.y = torch.arange(100)  # label = index, to see which inputs a batch holds
    single = [y for _, y in Batches(ds, 32, train=True, seed=5).epoch(1)]
    shards = [[y for _, y in Batches(ds, 32, train=True, seed=5, rank=r, world=2).epoch(1)] for r in (0, 1)]
    assert [len(y) for y in single] == [32, 32, 32, 4]  # the last batch is kept (>= 2 inputs per process)
    for k, y in enumerate(single):
        assert sorted(torch.cat([shards[0][k], shards[1][k]]).tolist()) == sorted(y.tolist())
        assert len(shards[0][k]) == len(shards[1][k])
    assert sorted(torch.cat(single).tolist()) == list(range(100))
    other = torch.cat([y for _, y in Batches(ds, 32, train=True, seed=5).epoch(2)])
    assert not torch.equal(other, torch.cat(single))  # a new order each epoch
    assert len(Batches(make_synthetic(n=97), 32, train=True, world=2)) == 3  # last batch: 1 input per process: dropped
    test = [y for _, y in Batches(ds, 32, train=False, rank=1, world=2).epoch()]
    assert torch.cat(test).tolist() == list(range(1, 100, 2))


def test_crop_flip_datasets_train_on_crops_of_their_images(tmp_path, request):
    ds = make_synthetic(n=64, seed=0)
    ds.train_augment = "crop-flip"
    xs = torch.cat([x for x, _ in Batches(ds, 16, train=True).epoch(0)])
    padded = F.pad(ds.x, (1, 1, 1, 1))  # 8x8 images: padding 8 // 8 = 1
    crops = torch.stack([padded[:, :, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)], 1)  # (N, 9, ...)
    crops = torch.cat([crops, crops.flip(-1)], 1).flatten(0, 1)
    dist = torch.cdist(xs.flatten(1), crops.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    assert (dist.min(1).values == 0).all()  # each training input is a crop (maybe flipped) of a training image
    assert not any(torch.equal(a, b) for a, b in zip(xs, ds.x))  # and not simply the images
    data_mod.DATASETS.add("synthetic-crop", DatasetEntry(lambda split, root, download: ds, False, ""))
    request.addfinalizer(lambda: data_mod.DATASETS.remove("synthetic-crop"))
    run = train(tmp_path / "crop", dataset="synthetic-crop",
                method="gauss", method_params={"sigma": 0.0}, epochs=1, batch_size=16, quiet=True)
    assert json.loads((run / "config.json").read_text())["train_augment"] == "crop-flip"


# -- DDP -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_two_processes_train_like_one(tmp_path):
    """gloo, 2 CPU processes: with deterministic training (sigma 0, no BatchNorm) the global
    batch split over 2 processes gives the same weights as one process."""
    args = ["train", "--dataset", "synthetic", "--sigma", "0", "--epochs", "2", "--batch-size", "32",
            "--max-train-samples", "128", "--max-test-samples", "64", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(29500 + os.getpid() % 1000), "-m", "smoothcert.cli", args[0], "--out",
                           str(tmp_path / "ddp"), *args[1:]], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = train(tmp_path / "single", method="gauss", method_params={"sigma": 0.0}, epochs=2, batch_size=32,
                   dataset="synthetic", max_train_samples=128, max_test_samples=64, quiet=True)
    a, b = state(tmp_path / "ddp"), state(single)
    assert a["config"]["world_size"] == 2 and a["epoch"] == 2
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-5, atol=1e-6)
    for ra, rb in zip(log_rows(tmp_path / "ddp"), log_rows(single)):
        assert [float(v) for v in ra[2:]] == pytest.approx([float(v) for v in rb[2:]], rel=1e-5)
    assert not list((tmp_path / "ddp").glob("*.tmp"))
    # MaxUp's no-grad selection passes on the unwrapped module, BatchNorm, a dual-BN branch that
    # gauss noise never routes to (DDP must allow unused parameters); --num-copies: --m under torchrun
    args = ["train", "--out", str(tmp_path / "ddp_bn"), "--dataset", "synthetic", "--arch", "cifar_resnet20",
            "--norm-layers", "dubn", "--method", "maxup-gauss", "--num-copies", "2", "--sigma", "0.25",
            "--warmup-epochs", "0", "--epochs", "1",
            "--batch-size", "32", "--max-train-samples", "64", "--max-test-samples", "32", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(29500 + (os.getpid() + 1) % 1000), "-m", "smoothcert.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, config = load_model(tmp_path / "ddp_bn")
    assert config["method_params"]["m"] == 2 and config["world_size"] == 2 and len(log_rows(tmp_path / "ddp_bn")) == 1


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_trains_a_run_that_loads(tmp_path, runner):
    run = tmp_path / "cli"
    result = runner.invoke(main, ["train", "--out", str(run), "--dataset", "synthetic", "--method", "maxup-gauss",
                                  "--m", "2", "--sigma", "0.25", "--warmup-epochs", "0", "--epochs", "1",
                                  "--batch-size", "32", "--max-train-samples", "64", "--channels-last", "--quiet"])
    assert result.exit_code == 0, result.output
    model, config = load_model(run)
    assert config["method_params"] == {"sigma": 0.25, "m": 2, "warmup_epochs": 0}
    assert config["model_kwargs"] == {"norm": "bn"} and config["batch_size"] == 32 and config["channels_last"]


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "choose from alps, "),
    (["--sigma", "0.25", "--arch", "nope"], "choose from cifar_resnet110"),
    (["--sigma", "0.25", "--dataset", "nope"], "choose from cifar10"),
    (["--method", "maxup-gauss", "--sigma", "0.25", "--m", "0"], "--m"),
    (["--sigma", "-0.5"], "--sigma"),
    (["--sigma", "0.25", "--epochs", "0"], "--epochs"),
    (["--method", "alps", "--alps-eps", "1.5"], "--alps-eps"),
    (["--method", "alps", "--alps-eps", "0"], "--alps-eps"),
    (["--method", "alps", "--m", "4"], "--m is not used by method alps"),
    (["--method", "gauss", "--sigma", "0.25", "--augment", "cutmix"], "--augment is not used by method gauss"),
    (["--method", "maxup-gauss", "--sigma", "0.25"], "needs --m"),
    (["--sigma", "0.25", "--dataset", "mnist"], "--data-root: dataset 'mnist' needs"),
    (["--sigma", "0.25", "--dataset", "mnist", "--data-root", "/no/such/folder"], "does not exist"),
    (["--sigma", "0.25", "--dataset", "cifar10", "--data-root", "."], "files not found"),
    (["--sigma", "0.25", "--amp", "--device", "cpu"], "amp needs a CUDA device"),
    (["--sigma", "0.25", "--norm-layers", "dubin"], "--norm-layers: dubin needs a model with residual blocks"),
    (["--sigma", "0.25", "--lr", "0"], "--lr"),
    (["--sigma", "0.25", "--batch-size", "0"], "--batch-size"),
])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, runner, args, message):
    result = runner.invoke(main, ["train", "--out", str(tmp_path / "x"), "--quiet", *args])
    assert result.exit_code == 2, result.output
    error_lines = [l for l in result.output.splitlines() if l.startswith("Error")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x" / "config.json").exists()


def test_every_method_flag_reaches_exactly_the_methods_that_take_it():
    values = {"sigma": 0.25, "m": 2, "warmup_epochs": 1, "augment": "cutout", "select_resolution": 4, "alps_alpha": 4.0,
              "alps_beta": 2.0, "alps_eps": 0.5, "epsilon": 0.25, "num_steps": 2, "num_noise_vec": 2, "warmup": 1,
              "js_lambda": 1.0, "augmax_steps": 2, "augmax_step_size": 0.1, "noise": "laplace",
              "classifier": "run"}
    flags = {f[2:].replace("-", "_") for f, _, _ in METHOD_FLAGS}
    assert flags == set(values)
    taken = set()
    for name in list_methods():
        cls = methods_mod.METHODS.get(name)
        sig = inspect.signature(cls.__init__).parameters
        if not {p for p in sig if p != "self" and sig[p].default is inspect.Parameter.empty} <= set(values):
            continue  # a required hyperparameter with no flag (catrs's prior run): tests/test_methods_sota.py
        for flag in flags:
            if flag in sig:
                taken.add(flag)
                required = {p for p in sig if p != "self" and sig[p].default is inspect.Parameter.empty}
                assert method_params(name, {flag: values[flag], **{p: values[p] for p in required}})[flag] == values[flag]
            else:
                with pytest.raises(Exception, match=f"is not used by method {name}"):
                    method_params(name, {flag: values[flag]})
    core = {"sigma", "m", "warmup_epochs", "augment", "select_resolution", "alps_alpha", "alps_beta", "alps_eps"}
    assert core <= taken  # (the others belong to smoothadv/augmix/augmax, listed where their modules exist)


# -- models ----------------------------------------------------------------------------------------
def test_imagenet_default_arch_is_registered_with_torchvision_names():
    assert "resnet50" in list_models()
    model = create_model("resnet50", num_classes=1000, in_channels=3, input_size=224)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's resnet50
    keys = set(model.state_dict())
    assert {"1.conv1.weight", "1.layer1.0.downsample.0.weight", "1.layer4.2.bn3.running_var", "1.fc.bias"} <= keys
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


# -- the optimiser and fine-tuning (--optimizer, --init) -------------------------------------------
def test_adam_is_adam_and_resumes_bit_for_bit(tmp_path):
    """optimizer="adam" steps with Adam (its exp_avg / exp_avg_sq state, not SGD's momentum buffer):
    one Adam step from the same start moves a weight by about lr whatever its gradient's size,
    so the two optimisers give other weights; a resume restores Adam's state."""
    run = {**QUICK, "method": "gauss", "method_params": {"sigma": 0.25}, "lr": 1e-3}
    adam = train(tmp_path / "adam", epochs=2, optimizer="adam", **run)
    sgd = train(tmp_path / "sgd", epochs=2, **run)
    assert state(adam)["config"]["optimizer"] == "adam" and state(sgd)["config"]["optimizer"] == "sgd"
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(state(adam)["optimizer"]["state"].values())))
    assert "momentum_buffer" in next(iter(state(sgd)["optimizer"]["state"].values()))
    a, s = state(adam)["state_dict"], state(sgd)["state_dict"]
    assert not all(torch.equal(a[k], s[k]) for k in a)
    part = train(tmp_path / "part", epochs=1, optimizer="adam", **run)
    train(part, epochs=2, optimizer="adam", resume=True, **run)
    assert all(torch.equal(a[k], state(part)["state_dict"][k]) for k in a)
    with pytest.raises(ValueError, match=r"another config \(optimizer"):
        train(part, epochs=3, optimizer="sgd", resume=True, **run)
    with pytest.raises(ValueError, match="^optimizer must be one of sgd, adam"):
        train(tmp_path / "bad", epochs=1, optimizer="rmsprop", **run)
    assert not (tmp_path / "bad").exists()


def test_a_run_without_the_optimizer_key_resumes_as_sgd(tmp_path):
    """Runs trained before ``optimizer`` was recorded were SGD runs: they resume with sgd and
    are refused with adam."""
    run = {**QUICK, "method": "gauss", "method_params": {"sigma": 0.25}}
    r = train(tmp_path / "old", epochs=1, **run)
    for name in ("config.json",):
        cfg = json.loads((r / name).read_text())
        del cfg["optimizer"], cfg["init"]
        (r / name).write_text(json.dumps(cfg))
    ckpt = state(r)
    del ckpt["config"]["optimizer"], ckpt["config"]["init"]
    torch.save(ckpt, r / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"another config \(optimizer is 'sgd' there, 'adam' here"):
        train(r, epochs=2, optimizer="adam", resume=True, **run)
    train(r, epochs=2, resume=True, **run)
    assert state(r)["epoch"] == 2


def test_init_starts_from_the_given_weights_and_records_them(tmp_path):
    """A run with init starts from the init run's weights (with a vanishing lr it ends on them,
    BatchNorm statistics aside, which the forward passes update); without init it starts from
    its seed's initialisation. config.json records the path and the weights' fingerprint; an
    init of another arch is one line naming init, and nothing is written."""
    from smoothcert.runs.loading import model_fingerprint

    run = {**QUICK, "method": "gauss", "method_params": {"sigma": 0.25}}
    base = train(tmp_path / "base", epochs=1, seed=1, **run)
    fine = train(tmp_path / "fine", epochs=1, init=str(base), lr=1e-12, momentum=0.0, weight_decay=0.0, **run)
    fresh = train(tmp_path / "fresh", epochs=1, lr=1e-12, momentum=0.0, weight_decay=0.0, **run)
    b, f, n = state(base)["state_dict"], state(fine)["state_dict"], state(fresh)["state_dict"]
    weights = [k for k in b if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(b[k], f[k], atol=1e-9) for k in weights)
    assert not all(torch.allclose(b[k], n[k], atol=1e-3) for k in weights)
    cfg = json.loads((fine / "config.json").read_text())
    assert cfg["init"] == str(base)
    assert cfg["init_fingerprint"] == model_fingerprint(load_model(base, "cpu")[0])
    assert "init_fingerprint" not in json.loads((fresh / "config.json").read_text())
    train(tmp_path / "ckpt", epochs=1, init=str(base / "checkpoint.pt"), **run)  # a checkpoint file works too
    with pytest.raises(ValueError, match="^init: .* does not match arch"):
        train(tmp_path / "other", epochs=1, init=str(base), arch="cifar_resnet20", **run)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
    with pytest.raises(ValueError, match="^init .* does not exist"):
        train(tmp_path / "none", epochs=1, init=str(tmp_path / "missing"), **run)
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "cli"), "--dataset", "synthetic",
                                       "--sigma", "0.25", "--epochs", "1", "--quiet", "--max-train-samples", "64",
                                       "--max-test-samples", "64", "--batch-size", "32", "--optimizer", "adam",
                                       "--lr", "0.001", "--init", str(base)])
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert cfg["optimizer"] == "adam" and cfg["init"] == str(base)


def test_cli_model_kwargs_size_the_arch(tmp_path):
    """train --model-kwargs JSON: the arch's constructor arguments (a DnCNN's depth and width),
    recorded and used; a key the arch does not take is one line, exit 2, and nothing written."""
    clf = train(tmp_path / "clf", method="gauss", method_params={"sigma": 0.0}, epochs=1, **QUICK)
    args = ["train", "--dataset", "synthetic", "--method", "denoiser", "-p", f"classifier={clf}", "--sigma", "0.25",
            "--epochs", "1", "--quiet", "--max-train-samples", "64", "--max-test-samples", "64", "--batch-size", "32"]
    ok = CliRunner().invoke(main, args + ["--out", str(tmp_path / "d"), "--model-kwargs", '{"depth": 3, "width": 8}'])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "d" / "config.json").read_text())["model_kwargs"] == {"depth": 3, "width": 8,
                                                                                        "norm": "bn"}
    convs = [m for m in load_model(tmp_path / "d", "cpu")[0].denoiser.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and convs[0].out_channels == 8
    bad = CliRunner().invoke(main, args + ["--out", str(tmp_path / "e"), "--model-kwargs", '{"widht": 8}'])
    assert bad.exit_code == 2 and "widht" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
