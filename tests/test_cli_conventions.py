"""CLI conventions: one meaning per flag name across commands, the one mapping from library
argument errors to flags, and the first release's spellings kept one release with a warning."""
from __future__ import annotations

import json

import click
import pytest
import torch

from smoothcert.cli import main
from smoothcert.cli.common import amp_dtype, as_click_error, flag_for
from smoothcert.data import get_dataset
from smoothcert.logs import read_tsv
from smoothcert.validation import ArgumentError

FAST = ["--N0", "10", "--N", "100", "--batch", "100", "--quiet"]


def _option(command: click.Command, flag: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and flag in p.opts and not p.hidden), None)


def test_each_shared_flag_has_one_meaning_in_every_command():
    commands = main.commands
    assert {"train", "certify", "predict", "attack", "check-certificates", "evaluate", "analyze", "plot",
            "quickstart"} <= set(commands)
    for name, cmd in commands.items():
        seed, mx, cl, amp = (_option(cmd, f) for f in ("--seed", "--max", "--channels-last", "--amp"))
        assert seed is None or seed.default == 0, name
        assert mx is None or (mx.default is None and "--max-inputs" in mx.opts), name
        assert cl is None or (cl.default is True and "--no-channels-last" in cl.secondary_opts), name
        assert amp is None or (amp.default == "none" and amp.flag_value == "auto"), name
        assert _option(cmd, "--out") is not None, f"{name} has no --out"
        if name == "train":
            assert _option(cmd, "--batch") is None and _option(cmd, "--batch-size") is not None
            assert _option(cmd, "--norm") is None and _option(cmd, "--norm-layers") is not None
            assert _option(cmd, "--normalize") is None  # --normalize MEAN,STD is the input normalisation of --model
            assert not any(isinstance(p, click.Argument) and p.required for p in cmd.params)
        elif _option(cmd, "--batch") is not None:
            assert "forward pass" in _option(cmd, "--batch").help, name
    assert _option(commands["attack"], "--norm").type.choices == ("linf", "l2")
    for name in ("attack", "check-certificates", "evaluate", "analyze"):  # print, and write only when asked
        assert not _option(main.commands[name], "--out").required, name


@pytest.mark.parametrize("command, arg, flag", [
    ("certify", "n", "--N"), ("certify", "n0", "--N0"), ("certify", "batch_size", "--batch"),
    ("certify", "alpha", "--alpha"), ("certify", "max_count", "--max"), ("certify", "data_root", "--data-root"),
    ("train", "batch_size", "--batch-size"), ("train", "normalization", "--norm-layers"), ("train", "m", "--m"),
    ("train", "lr_step_size", "--lr-step-size"), ("train", "out_dir", "--out"), ("attack", "n", "--N"),
    ("attack", "step_size", "--step-size"), ("check-certificates", "cert_alpha", "--cert-alpha"),
    ("evaluate", "max_images", "--max"), ("plot", "max_radius", "--max-radius"),
    ("certify", "epochs", None), ("predict", "n0", None),
])
def test_library_arguments_map_to_their_flags(command, arg, flag):
    ctx = click.Context(main.commands[command])
    assert flag_for(ctx, arg) == flag
    err = as_click_error(ArgumentError(arg, f"{arg} must be >= 1, got 0"), ctx)
    if flag is None:  # no flag sets it: the library's message as it is
        assert isinstance(err, click.UsageError) and err.message == f"{arg} must be >= 1, got 0"
    else:
        assert isinstance(err, click.BadParameter) and err.param_hint == flag and err.message == "must be >= 1, got 0"


def test_amp_modes_resolve_per_device():
    cpu = torch.device("cpu")
    assert amp_dtype("none", cpu) is None and amp_dtype("auto", cpu) == torch.bfloat16
    assert amp_dtype("bf16", cpu) == torch.bfloat16 and amp_dtype("fp16", cpu) == torch.float16


def _rows(path):
    return [r[:-1] for r in read_tsv(path)[1]]


def test_certify_conventions(digits_run, runner, tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(a), *FAST])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(b), "--amp", "--no-channels-last",
                             *FAST])
    assert r.exit_code == 0, r.output
    assert len(_rows(a)) == 3 and json.loads((tmp_path / "a.tsv.meta.json").read_text())["seed"] == 0  # default seed
    # --max omitted is all (the first release's --max -1 was removed in the third)
    c = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--skip", "60", "--out", str(c), *FAST])
    every = -(-len(get_dataset("digits", "test")) // 60)
    assert r.exit_code == 0 and len(_rows(c)) == every, r.output
    for args, needle in ((["--max", "0"], "--max"), (["--max", "-1"], "--max"), (["--amp", "fp32"], "--amp"),
                         (["--out", str(tmp_path)], "is a folder")):
        r = runner.invoke(main, ["certify", str(digits_run), *FAST, "--out", str(tmp_path / "o.tsv"), *args])
        err = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert r.exit_code == 2 and len(err) == 1 and needle in err[0], (args, r.output)


def test_train_old_spellings_warn_and_mean_the_same(runner, tmp_path):
    common = ["--dataset", "synthetic", "--sigma", "0.25", "--epochs", "1", "--max-train-samples", "64",
              "--max-test-samples", "32", "--quiet"]
    new = runner.invoke(main, ["train", "--out", str(tmp_path / "new"), "--batch-size", "32", "--norm-layers", "bn",
                               *common])
    assert new.exit_code == 0 and "deprecated" not in new.output, new.output
    second = runner.invoke(main, ["train", "--out", str(tmp_path / "second"), "--batch-size", "32", "--normalize",
                                  "bn", *common])  # the second release's spelling of --norm-layers
    assert second.exit_code == 0 and "warning: --normalize is deprecated" in second.output, second.output
    configs = [json.loads((tmp_path / d / "config.json").read_text()) for d in ("new", "second")]
    assert configs[0]["batch_size"] == configs[1]["batch_size"] == 32
    assert configs[0]["model_kwargs"] == configs[1]["model_kwargs"] == {"norm": "bn"}
    for args, needle in ((["--out", str(tmp_path / "x"), "--normalize", "bn", "--norm-layers", "bn"], "not both"),
                         # the first release's spellings were removed in the third: usage errors now
                         ([str(tmp_path / "x")], "unexpected extra argument"),
                         (["--out", str(tmp_path / "x"), "--batch", "32"], "--batch"),
                         (["--out", str(tmp_path / "x"), "--norm", "bn"], "--norm"),
                         ([], "Missing option '--out'"),
                         (["--out", str(tmp_path / "x"), "--amp", "bf16"], "--amp")):
        r = runner.invoke(main, ["train", *args, *common])
        err = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert r.exit_code == 2 and len(err) == 1 and needle in err[0], (args, r.output)


def test_file_system_errors_are_one_line_usage_errors():
    err = as_click_error(PermissionError(13, "Permission denied", "/ro/log.tsv"))
    assert isinstance(err, click.UsageError) and err.message == "/ro/log.tsv: Permission denied"
