"""The command line for several noises: train --noise, certify --noise/--norm/--bound, predict
--noise; the run's noise is the default; bad choices exit 2 with one line before any work."""
import json
from pathlib import Path

import pytest

from smoothcert.cli import main
from smoothcert.logs import read_tsv
from smoothcert.noise import config_noise
from smoothcert.runs import load_model

FAST = ["--N0", "10", "--N", "100", "--batch", "64", "--seed", "3", "--quiet", "--max", "3"]


def meta_of(out: Path) -> dict:
    return json.loads(Path(str(out) + ".meta.json").read_text())


@pytest.mark.parametrize("args,noise,norm,bound", [
    ([], "gaussian", "l2", "one-sided"),
    (["--noise", "laplace"], "laplace", "l1", "one-sided"),
    (["--noise", "uniform", "--norm", "linf", "--bound", "two-sided"], "uniform", "linf", "two-sided"),
    (["--norm", "L1", "--bound", "two-sided"], "gaussian", "l1", "two-sided"),
])
def test_certify_records_noise_norm_and_bound(digits_run, runner, tmp_path, args, noise, norm, bound):
    out = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--out", str(out), *FAST, *args])
    assert r.exit_code == 0, r.output
    assert len(read_tsv(out)[1]) == 3
    c = meta_of(out)["certify"]
    assert (c["noise"], c["norm"], c["bound"]) == (noise, norm, bound)


@pytest.mark.parametrize("args,needle", [
    (["--noise", "cauchy"], "--noise: must be one of gaussian, laplace, uniform"),
    (["--norm", "l3"], "--norm: must be one of l1, l2, linf"),
    (["--noise", "laplace", "--norm", "l2"], "--norm: l2 cannot be certified with laplace noise"),
    (["--noise", "uniform", "--norm", "l2"], "--norm: l2 cannot be certified with uniform noise"),
    (["--bound", "sideways"], "--bound: must be one of one-sided, two-sided"),
])
def test_bad_noise_norm_bound_exit_2_with_one_line_before_any_work(digits_run, runner, tmp_path, args, needle):
    out = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--out", str(out), *FAST, *args])
    assert r.exit_code == 2, r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and needle in err[0], r.output
    assert "Traceback" not in r.output and not out.exists()


def test_predict_takes_noise(digits_run, runner, tmp_path):
    out = tmp_path / "p.tsv"
    r = runner.invoke(main, ["predict", str(digits_run), "--out", str(out), "--N", "50", "--seed", "1", "--quiet",
                             "--max", "2", "--noise", "uniform"])
    assert r.exit_code == 0, r.output
    assert meta_of(out)["predict"]["noise"] == "uniform"
    r = runner.invoke(main, ["predict", str(digits_run), "--out", str(out), "--N", "50", "--noise", "x"])
    assert r.exit_code == 2 and "--noise: must be one of" in r.output


def test_train_with_laplace_noise_is_certified_with_it_by_default(tmp_path, runner):
    run = tmp_path / "lap"
    r = runner.invoke(main, ["train", "--out", str(run), "--dataset", "synthetic", "--method", "gauss", "--sigma",
                             "0.25", "--noise", "laplace", "--epochs", "1", "--batch-size", "32", "--max-train-samples", "64",
                             "--max-test-samples", "32", "--quiet"])
    assert r.exit_code == 0, r.output
    _, config = load_model(run)
    assert config["method_params"] == {"sigma": 0.25, "noise": "laplace"} and config_noise(config) == "laplace"
    out = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(run), "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    assert meta_of(out)["certify"]["noise"] == "laplace" and meta_of(out)["certify"]["norm"] == "l1"


@pytest.mark.parametrize("args,needle", [
    (["--method", "gauss", "--sigma", "0.25", "--noise", "cauchy"], "--noise"),
    (["--method", "gauss", "--sigma", "0", "--noise", "laplace"], "needs sigma > 0"),
    (["--method", "maxup", "--augment", "gaussian", "--m", "2", "--sigma", "0.25", "--noise", "uniform"],
     "conflicts with noise uniform"),
])
def test_train_bad_noise_exits_2(tmp_path, runner, args, needle):
    r = runner.invoke(main, ["train", "--out", str(tmp_path / "x"), "--dataset", "synthetic", "--quiet", *args])
    assert r.exit_code == 2, r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and needle in err[0], r.output


def test_old_configs_read_as_gaussian():
    assert config_noise({"method_params": {"sigma": 0.25}}) == "gaussian"
    assert config_noise({}) == "gaussian"


def test_the_epoch_test_accuracy_draws_the_runs_noise(tmp_path, monkeypatch):
    """train() passes the run's noise (config_noise) to Trainer.fit, whose evaluate draws it."""
    import smoothcert.trainer
    from smoothcert.train import train

    seen = []
    real = smoothcert.trainer.add_noise

    def spy(x, sigma, noise="gaussian", generator=None):
        seen.append(noise)
        return real(x, sigma, noise, generator)

    monkeypatch.setattr(smoothcert.trainer, "add_noise", spy)
    train(tmp_path / "lap", dataset="synthetic", method="gauss", method_params={"sigma": 0.25, "noise": "laplace"},
          epochs=1, batch_size=32, max_train_samples=64, max_test_samples=32, quiet=True)
    assert seen and set(seen) == {"laplace"}


def test_resume_with_another_noise_or_norm_is_refused(digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    base = ["certify", str(digits_run), "--out", str(out), "--N0", "10", "--N", "100", "--batch", "64", "--seed", "3",
            "--quiet"]
    assert runner.invoke(main, [*base, "--max", "2"]).exit_code == 0
    assert meta_of(out)["certify"]["norm"] == "l2"  # the default norm, recorded as the norm certified
    for args, flag in ((["--noise", "laplace"], "--noise"), (["--norm", "l1"], "--norm"),
                       (["--bound", "two-sided"], "--bound")):
        r = runner.invoke(main, [*base, "--max", "3", *args])
        err = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert r.exit_code == 2 and len(err) == 1 and flag in err[0] and "other settings" in err[0], r.output
        assert len(read_tsv(out)[1]) == 2
    r = runner.invoke(main, [*base, "--max", "3", "--norm", "L2"])  # the same certificate, spelled out
    assert r.exit_code == 0, r.output
    assert len(read_tsv(out)[1]) == 3
