"""smoothcert certify / predict: output format, resume, reproducibility, errors, torchrun split,
reference checkpoints."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smoothcert.cli import main
from smoothcert.logs import CERTIFY_COLUMNS, atomic_torch_save, read_tsv
from smoothcert.models.cifar_resnet import CifarResNet
from smoothcert.runs import load_model

FAST = ["--N0", "10", "--N", "200", "--batch", "64", "--seed", "3", "--quiet"]


def rows_without_time(path: Path) -> list[list[str]]:
    header, rows = read_tsv(path)
    t = header.index("time")
    return [r[:t] + r[t + 1:] for r in rows]


def test_certify_writes_cohen_format_and_meta(digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "4", "--skip", "3", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    header, rows = read_tsv(out)
    assert tuple(header) == CERTIFY_COLUMNS + ("nA", "n")  # Cohen's columns, then the counts of pA
    assert [int(x[0]) for x in rows] == [0, 3, 6, 9]  # --max counts inputs, --skip strides indices
    for idx, label, pred, radius, correct, _, n_a, n in rows:
        assert int(correct) == int(int(pred) == int(label)) and int(n) == 200 and 0 <= int(n_a) <= 200
        assert (float(radius) == 0.0) if int(pred) == -1 else float(radius) > 0
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert meta["certify"]["N"] == 200 and meta["config"]["arch"] == "digits_cnn" and meta["seed"] == 3


def test_resume_equals_uninterrupted_and_never_duplicates(digits_run, runner, tmp_path):
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    assert runner.invoke(main, ["certify", str(digits_run), "--max", "6", "--out", str(full), *FAST]).exit_code == 0
    assert runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(part), *FAST]).exit_code == 0
    with open(part, "a") as f:  # killed in the middle of writing a line
        f.write("3\t4\t")
    assert runner.invoke(main, ["certify", str(digits_run), "--max", "6", "--out", str(part), *FAST]).exit_code == 0
    assert rows_without_time(part) == rows_without_time(full)
    assert runner.invoke(main, ["certify", str(digits_run), "--max", "6", "--out", str(part), *FAST]).exit_code == 0
    assert len(read_tsv(part)[1]) == 6


def test_seed_reproducible_and_predict_format(digits_run, runner, tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    for out in (a, b):
        r = runner.invoke(main, ["predict", str(digits_run), "--max", "5", "--out", str(out), "--N", "100",
                                 "--seed", "9", "--quiet"])
        assert r.exit_code == 0, r.output
    assert read_tsv(a)[0] == ["idx", "label", "predict", "correct", "time"]
    assert rows_without_time(a) == rows_without_time(b)


def test_pack_is_reproducible(digits_run, runner, tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    for out in (a, b):
        r = runner.invoke(main, ["certify", str(digits_run), "--max", "5", "--pack", "2", "--out", str(out), *FAST])
        assert r.exit_code == 0, r.output
    assert rows_without_time(a) == rows_without_time(b) and len(rows_without_time(a)) == 5


@pytest.mark.parametrize("args,needle", [
    (["--sigma", "0"], "--sigma"),
    (["--sigma", "-0.5"], "--sigma"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "1.5"], "--alpha"),
    (["--N0", "0"], "--N0"),
    (["--N", "0"], "--N"),
    (["--batch", "0"], "--batch"),
    (["--dataset", "nosuch"], "unknown dataset"),
    (["--dataset", "synthetic"], "classes"),
])
def test_cli_errors_exit_2_one_line(digits_run, runner, tmp_path, args, needle):
    r = runner.invoke(main, ["certify", str(digits_run), "--out", str(tmp_path / "o.tsv"), *args])
    assert r.exit_code == 2
    err = [l for l in r.output.splitlines() if l.startswith("Error")]
    assert len(err) == 1 and needle in err[0]
    assert "Traceback" not in r.output


def test_cli_errors_on_files(digits_run, runner, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "hook": os.system}, evil)  # a pickled callable: must be refused
    notlog = tmp_path / "other.tsv"
    notlog.write_text("a\tb\n1\t2\n")
    mnist_shaped = tmp_path / "mnist_run"
    from conftest import write_run
    write_run(mnist_shaped, arch="lenet", dataset="mnist", input_shape=(1, 28, 28))
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(bad)], "cannot load checkpoint"),
        ([str(evil)], "weights_only"),
        ([str(digits_run), "--out", str(notlog)], "not a certify log"),
        ([str(digits_run), "--out", str(tmp_path / "nodir" / "x.tsv")], "does not exist"),
        ([str(mnist_shaped), "--dataset", "digits"], "input"),
    ]
    for args, needle in cases:
        if "--out" not in args:
            args = args + ["--out", str(tmp_path / "o.tsv")]
        r = runner.invoke(main, ["certify", *args])
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output, (needle, r.output)
    assert notlog.read_text() == "a\tb\n1\t2\n"  # nothing lost


def _reference_checkpoint(path: Path, data_parallel: bool = False) -> CifarResNet:
    """What Cohen et al.'s train.py saves: Sequential(NormalizeLayer without buffers, net)."""
    torch.manual_seed(0)
    net = CifarResNet(20, 10)
    net.eval()
    prefix = "1.module." if data_parallel else "1."
    sd = {prefix + k: v for k, v in net.state_dict().items()}
    atomic_torch_save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": sd, "optimizer": {"state": {}}}, path)
    return net


@pytest.mark.parametrize("dp", [False, True])
def test_reference_checkpoint_loads(tmp_path, dp):
    net = _reference_checkpoint(tmp_path / "checkpoint.pth.tar", dp)
    model, config = load_model(tmp_path / "checkpoint.pth.tar")
    assert config["dataset"] == "cifar10" and config["num_classes"] == 10
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)


def test_mismatched_state_dict_is_an_error(tmp_path):
    torch.manual_seed(0)
    net = CifarResNet(20, 10)
    sd = {"1." + k: v for k, v in net.state_dict().items() if "layer3" not in k}
    atomic_torch_save({"arch": "cifar_resnet20", "state_dict": sd}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="does not match"):
        load_model(tmp_path / "c.pt")


def test_torchrun_two_processes_merge(digits_run, tmp_path):
    single, split = tmp_path / "single.tsv", tmp_path / "split.tsv"
    args = ["certify", str(digits_run), "--max-inputs", "6", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "smoothcert.cli", *args, "--out", str(single)], check=True, env=env)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    "-m", "smoothcert.cli", *args, "--out", str(split)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert rows_without_time(split) == rows_without_time(single)
    assert not list(tmp_path.glob("split.tsv.rank*"))
