"""RunDir: the one class that writes and reads a run directory; checkpoint and config checks;
resumability (torn train log, temp files of killed writes, a run killed before its first
checkpoint); the committed first-release run directories still load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import smoothcert
from smoothcert import RunDir, load_model
from smoothcert.cli import main
from smoothcert.logs import atomic_torch_save, read_tsv
from smoothcert.models import create_model
from smoothcert.validation import ArgumentError

QUICK = dict(dataset="synthetic", method="gauss", method_params={"sigma": 0.25}, batch_size=32, max_train_samples=64,
             max_test_samples=64, quiet=True)
REPO = Path(__file__).resolve().parents[1]
OLD_RUN = REPO / "experiments/results/mnist/runs/full/gauss-sigma0.5"


def digits_config(**changes) -> dict:
    config = {"dataset": "digits", "arch": "digits_cnn", "num_classes": 10, "input_shape": [1, 8, 8], "mean": [0.0],
              "std": [1.0], "model_kwargs": {}, "sigma": 0.25, "method": "gauss", "method_params": {"sigma": 0.25}}
    config.update(changes)
    return config


def test_from_smoothcert_import_train_is_the_function():
    from smoothcert import train

    assert callable(train) and train.__name__ == "train" and train.__module__ == "smoothcert.train"
    assert smoothcert.train is train


def test_rundir_round_trip(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    config = digits_config(format="smoothcert-1", epochs=2, schedule="step")
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1, 8)
    run.write_config(config)
    run.write_checkpoint(config, 1, {"state_dict": model.state_dict(), "optimizer": {"state": {}, "param_groups": []}})
    assert run.read_config() == config and run.holds_run()
    loaded, loaded_config = run.load_model()
    assert loaded_config == config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    ckpt = run.resume_point(config, resume=True)
    assert ckpt is not None and ckpt["epoch"] == 1 and ckpt["arch"] == "digits_cnn"
    with pytest.raises(ArgumentError, match="^out_dir: .*already holds a run"):
        run.resume_point(config, resume=False)
    with pytest.raises(ArgumentError, match=r"^out_dir: .*another config \(sigma is 0.25 there, 0.5 here\)"):
        run.resume_point({**config, "sigma": 0.5}, resume=True)
    assert run.resume_point({**config, "epochs": 3}, resume=True) is not None  # epochs may grow (step schedule)
    with pytest.raises(ArgumentError, match="^model: .*has no config.json"):
        RunDir(tmp_path).read_config()


@pytest.mark.skipif(not OLD_RUN.is_dir(), reason="the committed MNIST run directory is not in this checkout")
def test_first_release_run_directory_still_loads():
    model, config = load_model(OLD_RUN)
    assert config["arch"] == "lenet" and config["sigma"] == 0.5 and config["num_classes"] == 10
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert RunDir(OLD_RUN).read_log()[-1][0] == str(config["epochs"])


# -- checkpoints and configs that do not fit -----------------------------------------------------------
def test_checkpoint_with_a_tensor_of_another_shape_is_one_line(digits_run, runner, tmp_path):
    ckpt = torch.load(digits_run / "checkpoint.pt", weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.dim() == 2)
    ckpt["state_dict"][key] = torch.zeros(3, 3)
    atomic_torch_save(ckpt, digits_run / "checkpoint.pt")
    with pytest.raises(ArgumentError, match=f"^model: .*{key} has shape \\(3, 3\\)") as e:
        load_model(digits_run)
    assert "\n" not in str(e.value)
    r = runner.invoke(main, ["certify", str(digits_run), "--out", str(tmp_path / "c.tsv"), "--quiet"])
    assert r.exit_code == 2 and "has shape (3, 3)" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("state_dict", [[1, 2], "weights", {"1.conv.weight": [0.0]}])
def test_state_dict_that_is_not_a_mapping_of_tensors_is_refused(digits_run, state_dict):
    ckpt = torch.load(digits_run / "checkpoint.pt", weights_only=True)
    ckpt["state_dict"] = state_dict
    atomic_torch_save(ckpt, digits_run / "checkpoint.pt")
    with pytest.raises(ArgumentError, match="^model: .*state_dict must be a mapping"):
        load_model(digits_run)


@pytest.mark.parametrize("edit,key", [
    (lambda c: c["model_kwargs"].update(nosuch=1), "model_kwargs"),
    (lambda c: c.update(sigma="0.25"), "sigma"),
    (lambda c: c.update(sigma=[0.25]), "sigma"),
    (lambda c: c.pop("arch"), "arch"),
    (lambda c: c.pop("num_classes"), "num_classes"),
    (lambda c: c.update(num_classes=-5), "num_classes"),
    (lambda c: c.update(input_shape=[1, 8]), "input_shape"),
    (lambda c: c.update(mean=[0.0, 0.0]), "mean"),
])
def test_damaged_config_is_refused_naming_the_key(digits_run, edit, key):
    config = json.loads((digits_run / "config.json").read_text())
    edit(config)
    (digits_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArgumentError, match=f"^model: .*config.json.*: {key} ") as e:
        load_model(digits_run)
    assert e.value.arg == "model" and "\n" not in str(e.value)


def test_config_that_is_a_list_is_refused(digits_run):
    (digits_run / "config.json").write_text("[1, 2]")
    with pytest.raises(ArgumentError, match="must hold a JSON object, got list"):
        load_model(digits_run)


# -- resumability ------------------------------------------------------------------------------------
def test_resume_after_a_torn_train_log_line_and_killed_writes(tmp_path):
    run = smoothcert.train(tmp_path / "t", epochs=1, **QUICK)
    with open(run / "train_log.tsv", "a") as f:  # killed while writing epoch 2's row
        f.write("2\t0.1")
    for leftover in (".checkpoint.pt.k1x2.tmp", ".config.json.abc.tmp"):  # killed atomic writes
        (run / leftover).write_bytes(b"partial")
    smoothcert.train(run, epochs=2, resume=True, **QUICK)
    header, rows = read_tsv(run / "train_log.tsv")
    assert [r[0] for r in rows] == ["1", "2"] and not list(run.glob(".*.tmp"))


def test_a_run_killed_before_its_first_checkpoint_is_rerun_with_overwrite(tmp_path):
    run = smoothcert.train(tmp_path / "k", epochs=1, **QUICK)
    (run / "checkpoint.pt").unlink()  # killed between config.json/train_log.tsv and the first checkpoint
    for resume in (False, True):  # a folder with content is never overwritten silently (issue 23)
        with pytest.raises(ArgumentError, match=r"not empty \(config.json, train_log.tsv\).*no checkpoint.pt"):
            smoothcert.train(run, epochs=1, resume=resume, **QUICK)
    smoothcert.train(run, epochs=1, overwrite=True, **QUICK)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert [r[0] for r in read_tsv(run / "train_log.tsv")[1]] == ["1"]
