"""The job configs (smoothcert.configs): TrainConfig and CertifyConfig are checked when built
(ArgumentError naming the field), carry every setting once, and are written to and read from
where the job records them (config.json, the certify log's metadata) without changing what is
written; the keyword forms of train() and certify_dataset() build the same configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smoothcert import CertifyConfig, RunDir, Selection, Smooth, TrainConfig, certify_dataset, load_model, train
from smoothcert.data import get_dataset
from smoothcert.runs import meta_path
from smoothcert.trainer import Trainer
from smoothcert.validation import ArgumentError

QUICK = dict(dataset="synthetic", method="gauss", method_params={"sigma": 0.25}, batch_size=32, max_train_samples=64,
             max_test_samples=64, epochs=1)
FAST = dict(n0=10, n=100, alpha=0.01, batch_size=50)


# -- TrainConfig -----------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 1.5), ("lr", 0.0), ("momentum", 1.0),
                                         ("weight_decay", -1.0), ("schedule", "linear"), ("lr_step_size", 0),
                                         ("lr_gamma", 0.0), ("seed", -1), ("max_train_samples", 0),
                                         ("max_test_samples", 0), ("num_workers", -1), ("method_params", [1]),
                                         ("model_kwargs", "bn"), ("dataset", ""), ("data_root", "/no/such/dir")])
def test_a_bad_training_setting_is_an_argument_error_naming_its_field(field, value):
    with pytest.raises(ArgumentError, match=f"^{field}") as e:
        TrainConfig(**{field: value})
    assert e.value.arg == field


def test_a_config_and_the_keyword_form_train_the_same_run(tmp_path):
    config = TrainConfig(**QUICK)
    a = train(tmp_path / "a", config, quiet=True)
    b = train(tmp_path / "b", quiet=True, **QUICK)
    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    sa, sb = (torch.load(p / "checkpoint.pt", weights_only=True)["state_dict"] for p in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    recorded = json.loads((a / "config.json").read_text())
    assert {k: recorded[k] for k in TrainConfig.RECORDED if k != "arch"} == \
        {k: v for k, v in config.to_json().items() if k != "arch"}
    assert recorded["arch"] == "digits_cnn" and config.arch is None  # the default, resolved when recorded


def test_a_config_read_from_config_json_resumes_the_run(tmp_path):
    run = train(tmp_path / "run", quiet=True, **QUICK)
    config = TrainConfig.from_json(RunDir(run).read_config(), epochs=2)
    assert config == TrainConfig(**{**QUICK, "arch": "digits_cnn", "epochs": 2, "method_params": {"sigma": 0.25}})
    train(run, config, resume=True, quiet=True)
    assert [int(r[0]) for r in RunDir(run).read_log()] == [1, 2]
    with pytest.raises(ArgumentError, match="^out_dir: .*lr"):  # another setting: refused, as with keywords
        train(run, config.replace(lr=0.05, epochs=3), resume=True, quiet=True)


def test_from_json_takes_the_defaults_for_keys_an_old_config_lacks():
    old = {"format": "smoothcert-1", "dataset": "mnist", "arch": "lenet", "method": "gauss",
           "method_params": {"sigma": 0.25}, "epochs": 90, "batch_size": 256, "lr": 0.01, "seed": 0,
           "num_classes": 10, "input_shape": [1, 28, 28], "sigma": 0.25}
    config = TrainConfig.from_json(old)
    assert (config.lr, config.schedule, config.channels_last, config.max_train_samples) == (0.01, "step", False, None)


def test_the_trainer_takes_the_config_or_its_fields():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    from smoothcert.methods import create_method

    meth = create_method("gauss", sigma=0.0)
    t = Trainer(model, meth, TrainConfig(epochs=3, lr=0.05, schedule="cosine"))
    assert (t.epochs, t.lr, type(t.scheduler).__name__) == (3, 0.05, "CosineAnnealingLR")
    assert Trainer(model, meth, epochs=3, lr=0.05, schedule="cosine").config == t.config
    with pytest.raises(ArgumentError, match="^schedule"):
        Trainer(model, meth, epochs=1, schedule="linear")


# -- CertifyConfig ---------------------------------------------------------------------------------
@pytest.fixture
def smooth(digits_run) -> Smooth:
    model, config = load_model(digits_run)
    return Smooth(model, config["num_classes"], config["sigma"])


@pytest.mark.parametrize("field,value", [("n0", 0), ("n", 1.5), ("alpha", 1.0), ("batch_size", 0), ("pack", 0),
                                         ("seed", 2**63), ("tol", 0.1), ("radii", [0.5]), ("selection", (1, 2)),
                                         ("sigma", -1.0), ("options", 3)])
def test_a_bad_certify_setting_is_an_argument_error_naming_its_field(field, value):
    with pytest.raises(ArgumentError, match=f"^{field}") as e:
        CertifyConfig(**{field: value})
    assert e.value.arg == field


def test_a_certify_config_and_the_keyword_forms_write_the_same_log(smooth, tmp_path):
    ds = get_dataset("digits", "test")
    config = CertifyConfig(**FAST, selection=Selection(1, 3), seed=4)
    certify_dataset(smooth, ds, tmp_path / "a.tsv", config)
    certify_dataset(smooth, ds, tmp_path / "b.tsv", config=config)
    certify_dataset(smooth, ds, tmp_path / "c.tsv", **FAST, selection=Selection(1, 3), seed=4)
    certify_dataset(smooth, ds, tmp_path / "d.tsv", 10, 100, 0.01, 50, selection=Selection(1, 3), seed=4)
    cut = lambda p: [(lambda c: c[:5] + c[6:])(r.split("\t")) for r in p.read_text().splitlines()]  # noqa: E731
    # (the time column, the 6th, differs)
    for name in "bcd":
        assert cut(tmp_path / f"{name}.tsv") == cut(tmp_path / "a.tsv")
        assert meta_path(tmp_path / f"{name}.tsv").read_text() == meta_path(tmp_path / "a.tsv").read_text()
    with pytest.raises(TypeError, match="multiple values"):
        certify_dataset(smooth, ds, tmp_path / "e.tsv", 10, n0=10)


def test_a_config_read_from_the_metadata_resumes_and_extends_the_log(smooth, tmp_path):
    ds = get_dataset("digits", "test")
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, ds, out, **FAST, selection=Selection(2, 2), seed=5, bound="two-sided")
    config = CertifyConfig.from_log(out)
    assert config == CertifyConfig(**FAST, selection=Selection(2, 2), seed=5, norm="l2", bound="two-sided",
                                   noise="gaussian", sigma=smooth.sigma)
    certify_dataset(smooth, ds, out, config.replace(selection=Selection(2, 4)))
    assert [int(r.split("\t")[0]) for r in out.read_text().splitlines()[1:]] == [0, 2, 4, 6]
    with pytest.raises(ArgumentError, match="^n: "):
        certify_dataset(smooth, ds, out, config.replace(n=200))
    with pytest.raises(ArgumentError, match="^noise: .*laplace"):
        certify_dataset(smooth, ds, tmp_path / "x.tsv", config.replace(noise="laplace"))
    assert not (tmp_path / "x.tsv").exists()


def test_a_first_release_meta_reads_as_gaussian_l2_one_sided(tmp_path):
    meta = {"kind": "certify", "certify": {"sigma": 0.25, "N0": 100, "N": 100000, "alpha": 0.001, "batch": 1000},
            "seed": 0, "selection": {"skip": 1, "max": -1}}
    out = tmp_path / "old.tsv"
    meta_path(out).write_text(json.dumps(meta))
    config = CertifyConfig.from_log(Path(out))
    assert (config.noise, config.norm, config.bound, config.sequential, config.n) == \
        ("gaussian", "l2", "one-sided", False, 100000)


def test_the_normalization_layers_are_recorded_under_the_key_of_every_release():
    assert TrainConfig(model_kwargs={"normalization": "dubin"}).model_kwargs == {"norm": "dubin"}
    assert TrainConfig(model_kwargs={"norm": "dubin"}) == TrainConfig(model_kwargs={"normalization": "dubin"})
    with pytest.raises(ArgumentError, match="^model_kwargs: .*once"):
        TrainConfig(model_kwargs={"norm": "dubin", "normalization": "dubn"})
