"""Faults of the training side (issue 23): what a run directory, a seed, a read-only folder, a
full disk or a checkpoint that is a folder do to ``train`` / ``smoothcert train``.

What must hold: a folder with content is never overwritten without ``overwrite``, and a
refusal names what is there; every seed in [0, 2**63 - 1] works, the first releases' derived
seeds are unchanged, the default seed is 0 in the library as on the CLI; a write that fails
is one line naming the path (exit 2 on the CLI), keeps the last good checkpoint, and a resume
after it finishes exactly like an uninterrupted run.
"""
from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from smoothcert import Selection, Smooth, certify_dataset, load_model
from smoothcert.cli import main
from smoothcert.corruptions import corruption_seed
from smoothcert.data import get_dataset
from smoothcert.logs import OutputError, read_tsv
from smoothcert.runner import derived_seed, meta_path
from smoothcert.seeding import SEED_MAX, check_seed, derive_seed
from smoothcert.train import TrainConfig, configure, epoch_seed, train
from smoothcert.validation import ArgumentError

QUICK = dict(dataset="synthetic", batch_size=32, max_train_samples=64, max_test_samples=64, quiet=True,
             method="gauss", method_params={"sigma": 0.25})
CLI_QUICK = ["--dataset", "synthetic", "--sigma", "0.25", "--batch-size", "32", "--max-train-samples", "64",
             "--max-test-samples", "64", "--quiet"]


def state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def rows_without_seconds(run: Path) -> list[list[str]]:
    return [r[:1] + r[2:] for r in read_tsv(run / "train_log.tsv")[1]]


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error")]


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = state(a)["state_dict"], state(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- 1. a folder with content is never overwritten ---------------------------------------------------
def test_a_log_whose_checkpoint_was_moved_away_is_never_overwritten(tmp_path):
    run = train(tmp_path / "r", epochs=3, **QUICK)
    shutil.move(run / "checkpoint.pt", tmp_path / "moved.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for kw in ({}, {"resume": True}):
        with pytest.raises(ArgumentError, match=r"^out_dir: .*\(config.json, train_log.tsv\).*no checkpoint.pt"):
            train(run, epochs=1, **QUICK, **kw)
    with pytest.raises(ArgumentError, match="^overwrite: .*not both"):
        train(run, epochs=1, resume=True, overwrite=True, **QUICK)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    for flags in ([], ["--resume"]):
        r = CliRunner().invoke(main, ["train", "--out", str(run), "--epochs", "1", *CLI_QUICK, *flags])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert len(error_lines(r)) == 1 and "config.json, train_log.tsv" in error_lines(r)[0], r.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # an explicit --overwrite starts afresh (the run's files only; others stay)
    (run / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["train", "--out", str(run), "--epochs", "1", "--overwrite", *CLI_QUICK])
    assert r.exit_code == 0, r.output
    assert state(run)["epoch"] == 1 and len(rows_without_seconds(run)) == 1 and (run / "notes.txt").exists()


def test_a_folder_with_other_content_is_refused_naming_it_and_an_empty_one_starts_fresh(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "certify.tsv").write_text("idx\n")
    with pytest.raises(ArgumentError, match=r"not empty \(certify.tsv\)"):
        train(busy, epochs=1, **QUICK)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".checkpoint.pt.x1y2.tmp").write_bytes(b"partial")  # a killed atomic write is not content
    train(empty, epochs=1, **QUICK)
    assert state(empty)["epoch"] == 1 and not list(empty.glob(".*.tmp"))
    train(tmp_path / "absent", epochs=1, resume=True, **QUICK)  # resume of nothing: a fresh run
    assert state(tmp_path / "absent")["epoch"] == 1


def test_overwrite_replaces_a_finished_run(tmp_path):
    run = train(tmp_path / "r", epochs=2, **QUICK)
    with pytest.raises(ArgumentError, match=r"already holds a run \(checkpoint.pt, config.json, train_log.tsv\)"):
        train(run, epochs=1, **QUICK)
    train(run, epochs=1, overwrite=True, **QUICK)
    assert state(run)["epoch"] == 1 and len(rows_without_seconds(run)) == 1


# -- 9. seeds --------------------------------------------------------------------------------------
def test_derived_seeds_keep_the_first_releases_values_and_never_overflow():
    for seed in (0, 1, 5, 12345, 2**31 - 1, 2**32 - 1):
        for i in (0, 7, 89, 49_999):
            assert derived_seed(seed, i) == seed * 1_000_003 + i
            for rank in (0, 1, 7):
                assert epoch_seed(seed, i, rank) == (seed * 1_000_003 + i) * 4099 + rank
    for seed in (0, 3, 2**40, SEED_MAX):  # the corruption rule was a hash all along: unchanged
        for name, sev in (("gaussian_noise", 1), ("fog", 5)):
            old = int.from_bytes(hashlib.sha256(f"{seed}:{name}:{sev}".encode()).digest()[:8], "little") >> 1
            assert corruption_seed(seed, name, sev) == old
    big = [4_500_000_000, 5 * 10**9, 2**40, 10**13, 2**62, SEED_MAX]
    seeds = {epoch_seed(s, e, r) for s in big for e in (0, 1) for r in (0, 1)}
    assert len(seeds) == len(big) * 4  # distinct
    for s in seeds | {derived_seed(s, 10**6) for s in big}:
        torch.manual_seed(s)
        torch.Generator().manual_seed(s)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "3", True])
def test_a_seed_out_of_range_is_a_value_error_naming_seed(seed):
    with pytest.raises(ArgumentError, match=r"^seed must be an integer in \[0, 2\*\*63 - 1\]") as e:
        check_seed(seed)
    assert e.value.arg == "seed"
    with pytest.raises(ArgumentError, match="^seed "):
        configure(dataset="synthetic", method_params={"sigma": 0.25}, seed=seed)
    with pytest.raises(ArgumentError, match="^seed "):
        derive_seed(seed, 1)


def test_the_largest_seed_trains_and_the_cli_refuses_one_beyond(tmp_path):
    run = train(tmp_path / "big", epochs=2, seed=SEED_MAX, **QUICK)
    assert state(run)["config"]["seed"] == SEED_MAX and state(run)["epoch"] == 2
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x"), "--seed", str(2**63), *CLI_QUICK])
    assert r.exit_code == 2 and len(error_lines(r)) == 1 and "--seed" in error_lines(r)[0], r.output
    assert not (tmp_path / "x").exists()


def test_the_default_seed_is_0_in_the_library_as_on_the_cli(digits_run, tmp_path):
    # train() and configure() take their settings as a TrainConfig (or its fields as keywords)
    assert inspect.signature(TrainConfig).parameters["seed"].default == 0 and TrainConfig().seed == 0
    assert configure(dataset="synthetic", method_params={"sigma": 0.25}).config["seed"] == 0
    model, config = load_model(digits_run)
    smooth = Smooth(model, config["num_classes"], config["sigma"])
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, get_dataset("digits", "test"), out, n0=10, n=100, batch_size=100,
                    selection=Selection(1, 2))  # no seed given: 0, as `smoothcert certify` without --seed
    assert json.loads(meta_path(out).read_text())["seed"] == 0


# -- 11. a read-only output folder -------------------------------------------------------------------
def read_only(monkeypatch, root: Path) -> None:
    """Make ``root`` behave like a read-only file system (EROFS) for mkdir and writing opens (we
    run as root, which permission bits do not stop)."""
    real_mkdir, real_open = os.mkdir, os.open
    inside = lambda p: str(os.path.abspath(os.fsdecode(p))).startswith(str(root) + os.sep)  # noqa: E731

    def mkdir(path, *a, **k):
        if inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_mkdir(path, *a, **k)

    def open_(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def test_a_read_only_output_folder_is_one_line_naming_it(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    (ro / "existing").mkdir(parents=True)
    read_only(monkeypatch, ro)
    for out in (ro / "new", ro / "existing"):
        with pytest.raises(OutputError, match=rf"^out_dir: cannot write '{out}': Read-only file system$") as e:
            train(out, epochs=1, **QUICK)
        assert e.value.arg == "out_dir" and e.value.errno == errno.EROFS and e.value.path == str(out)
        r = CliRunner().invoke(main, ["train", "--out", str(out), "--epochs", "1", *CLI_QUICK])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert len(error_lines(r)) == 1 and str(out) in error_lines(r)[0] and "--out" in error_lines(r)[0]
    assert list((ro / "existing").iterdir()) == []  # refused before any training wrote anything


def test_a_file_where_the_run_folder_should_go_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="^out_dir: cannot write .*file/run'"):
        train(tmp_path / "file" / "run", epochs=1, **QUICK)


# -- 12. a full disk ---------------------------------------------------------------------------------
def disk_full_at_checkpoint(monkeypatch, write: int) -> None:
    """``fsync`` fails with ENOSPC (as on a full disk) at the ``write``-th atomic checkpoint write."""
    real_fsync, count = os.fsync, [0]

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".checkpoint.pt."):
            count[0] += 1
            if count[0] == write:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_a_resume_finishes_identically(tmp_path, monkeypatch):
    whole = train(tmp_path / "whole", epochs=3, **QUICK)
    run = tmp_path / "full"
    with monkeypatch.context() as m:
        disk_full_at_checkpoint(m, write=2)
        with pytest.raises(OutputError, match=rf"^out_dir: cannot write '{run / 'checkpoint.pt'}': No space left on "
                                              r"device; .*keeps the checkpoint of epoch 1") as e:
            train(run, epochs=3, **QUICK)
    assert e.value.errno == errno.ENOSPC and len(str(e.value).splitlines()) == 1
    assert state(run)["epoch"] == 1 and not list(run.glob(".*.tmp"))  # the epoch-1 checkpoint, no temp file
    assert rows_without_seconds(run)[0] == rows_without_seconds(whole)[0]  # epoch 1's row intact
    train(run, epochs=3, resume=True, **QUICK)  # space freed
    assert state(run)["epoch"] == 3 and same_weights(run, whole)
    assert rows_without_seconds(run) == rows_without_seconds(whole)
    # the CLI: exit 2, one line naming the path
    cli_run = tmp_path / "cli"
    with monkeypatch.context() as m:
        disk_full_at_checkpoint(m, write=2)
        r = CliRunner().invoke(main, ["train", "--out", str(cli_run), "--epochs", "3", *CLI_QUICK])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(error_lines(r)) == 1 and str(cli_run / "checkpoint.pt") in error_lines(r)[0]
    assert "No space left on device" in error_lines(r)[0] and state(cli_run)["epoch"] == 1
    r = CliRunner().invoke(main, ["train", "--out", str(cli_run), "--epochs", "3", "--resume", *CLI_QUICK])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "cli_whole"), "--epochs", "3", *CLI_QUICK])
    assert r.exit_code == 0 and same_weights(cli_run, tmp_path / "cli_whole"), r.output


# -- 13. a checkpoint.pt that is a folder --------------------------------------------------------------
def test_a_checkpoint_that_is_a_directory_is_called_one(tmp_path, runner):
    run = train(tmp_path / "r", epochs=1, **QUICK)
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.pt").mkdir()
    for kw in ({"resume": True}, {}, {"overwrite": True}):
        with pytest.raises(ArgumentError, match="checkpoint.pt' is a directory, not a checkpoint file"):
            train(run, epochs=2, **QUICK, **kw)
    for path in (run, run / "checkpoint.pt"):
        with pytest.raises(ArgumentError, match="^model: .*checkpoint.pt' is a directory, not a checkpoint file"):
            load_model(path)
    r = runner.invoke(main, ["train", "--out", str(run), "--epochs", "2", "--resume", *CLI_QUICK])
    assert r.exit_code == 2 and "is a directory, not a checkpoint file" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["certify", str(run), "--max", "1", "--N0", "10", "--N", "100", "--batch", "100",
                             "--out", str(tmp_path / "c.tsv"), "--quiet"])
    assert r.exit_code == 2 and "is a directory, not a checkpoint file" in r.output, r.output
