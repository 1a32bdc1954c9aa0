"""The one logged runner (smoothcert.runner) behind certify, predict, attack and the certificate
check: settings check on resume, recorded seed, packed resume after a kill, the lock, metadata
written by the library, radii rounded down, malformed logs."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothcert import Selection, Smooth, certify_dataset, load_model, predict_dataset
from smoothcert.cli import main
from smoothcert.data import get_dataset
from smoothcert.logs import CERTIFY_COLUMNS, LogLock, floor_decimal, read_tsv
from smoothcert.runner import SEED_STRIDE, derived_seed, meta_path
from smoothcert.validation import ArgumentError

FAST = dict(n0=10, n=200, alpha=0.001, batch_size=64)
CLI_FAST = ["--N0", "10", "--N", "200", "--batch", "64", "--seed", "3", "--quiet"]


def rows_without_time(path: Path) -> list[list[str]]:
    header, rows = read_tsv(path)
    t = header.index("time")
    return [r[:t] + r[t + 1:] for r in rows]


@pytest.fixture
def smooth(digits_run) -> Smooth:
    model, config = load_model(digits_run)
    return Smooth(model, config["num_classes"], config["sigma"])


@pytest.fixture
def noisy(digits_run) -> Smooth:
    """A linear model whose smoothed votes vary with the noise draw (pA well inside (1/2, 1)),
    so that rows depend on the generator seeds."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(4)
    return Smooth(model.eval(), 10, 0.25)


@pytest.fixture
def digits():
    return get_dataset("digits", "test")


# -- settings check and seed ---------------------------------------------------------------------
def test_resume_with_other_settings_is_refused_naming_the_setting(smooth, digits, tmp_path):
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 2), seed=1)
    before = out.read_bytes(), meta_path(out).read_bytes()
    for change, arg in [(dict(FAST, n=100_000), "n"), (dict(FAST, n0=11), "n0"), (dict(FAST, alpha=0.01), "alpha")]:
        with pytest.raises(ArgumentError) as e:
            certify_dataset(smooth, digits, out, **change, selection=Selection(1, 4), seed=1)
        assert e.value.arg == arg and str(e.value).startswith(f"{arg}: ") and "\n" not in str(e.value)
    with pytest.raises(ArgumentError, match="pack=1, this run has pack=2"):
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 4), seed=1, pack=2)
    other = Smooth(smooth.base_classifier, 10, 0.5)
    with pytest.raises(ArgumentError, match="^sigma: .*sigma=0.25, this run has sigma=0.5"):
        certify_dataset(other, digits, out, **FAST, selection=Selection(1, 4), seed=1)
    assert (out.read_bytes(), meta_path(out).read_bytes()) == before  # nothing appended, metadata intact
    # the batch size only changes speed: a resume may change it
    certify_dataset(smooth, digits, out, **dict(FAST, batch_size=32), selection=Selection(1, 3), seed=1)
    assert len(read_tsv(out)[1]) == 3


def test_cli_resume_with_another_N_exits_2_naming_it(digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    base = ["certify", str(digits_run), "--max", "2", "--out", str(out), "--N0", "10", "--batch", "64", "--quiet"]
    assert runner.invoke(main, [*base, "--N", "200"]).exit_code == 0
    r = runner.invoke(main, [*base, "--N", "100000"])
    assert r.exit_code == 2 and "N=200" in r.output and "N=100000" in r.output and "Traceback" not in r.output
    assert len(read_tsv(out)[1]) == 2


def test_resume_reuses_the_recorded_seed(noisy, digits, tmp_path):
    smooth = noisy
    part, whole = tmp_path / "part.tsv", tmp_path / "whole.tsv"
    certify_dataset(smooth, digits, part, **FAST, selection=Selection(1, 2))  # no seed: one is drawn and recorded
    seed = json.loads(meta_path(part).read_text())["seed"]
    certify_dataset(smooth, digits, part, **FAST, selection=Selection(1, 5))  # resumed without a seed
    assert json.loads(meta_path(part).read_text())["seed"] == seed
    certify_dataset(smooth, digits, whole, **FAST, selection=Selection(1, 5), seed=seed)
    assert rows_without_time(part) == rows_without_time(whole)
    with pytest.raises(ArgumentError, match=f"^seed: .*seed {seed}"):
        certify_dataset(smooth, digits, part, **FAST, selection=Selection(1, 6), seed=seed + 1)


def test_one_seed_stride():
    from smoothcert import trainer

    assert derived_seed(5, 7) == 5 * SEED_STRIDE + 7
    assert trainer.epoch_seed(5, 7, 1) == derived_seed(5, 7) * 4099 + 1


# -- resume after a kill, packed -------------------------------------------------------------------
class Interrupt(Exception):
    pass


class KilledAfter:
    """A Smooth whose certify_batch raises after ``calls`` calls (a kill between packs)."""

    def __init__(self, smooth: Smooth, calls: int):
        self.smooth, self.calls = smooth, calls

    def __getattr__(self, name):
        return getattr(self.smooth, name)

    def certify_batch(self, *args, **kwargs):
        if self.calls == 0:
            raise Interrupt
        self.calls -= 1
        return self.smooth.certify_batch(*args, **kwargs)

    def certify_counts_batch(self, *args, **kwargs):  # the counted form the runner calls (nA, n columns)
        if self.calls == 0:
            raise Interrupt
        self.calls -= 1
        return self.smooth.certify_counts_batch(*args, **kwargs)


def test_packed_resume_after_a_kill_neither_duplicates_nor_loses_rows(noisy, digits, tmp_path):
    smooth = noisy
    whole, other_seed = tmp_path / "whole.tsv", tmp_path / "other.tsv"
    sel = Selection(2, 10)
    certify_dataset(smooth, digits, whole, **FAST, selection=sel, seed=4, pack=3)
    expected = rows_without_time(whole)
    assert [int(r[0]) for r in expected] == list(range(0, 20, 2))
    certify_dataset(smooth, digits, other_seed, **FAST, selection=sel, seed=5, pack=3)
    differ = [a != b for a, b in zip(expected, rows_without_time(other_seed))]
    assert differ[7] and differ[8]  # rows 14, 16 depend on the seeds: a wrongly seeded resume would show

    killed = tmp_path / "killed.tsv"  # killed between packs
    with pytest.raises(Interrupt):
        certify_dataset(KilledAfter(smooth, 2), digits, killed, **FAST, selection=sel, seed=4, pack=3)
    assert len(read_tsv(killed)[1]) == 6
    certify_dataset(smooth, digits, killed, **FAST, selection=sel, seed=4, pack=3)
    assert rows_without_time(killed) == expected

    torn = tmp_path / "torn.tsv"  # killed in the middle of a pack, in the middle of a line
    lines = whole.read_text().splitlines(keepends=True)
    torn.write_text("".join(lines[:8]) + lines[8][:4])  # header, rows 0..12 (pack [12, 14, 16] cut after 12), torn
    meta_path(torn).write_text(meta_path(whole).read_text())
    report = certify_dataset(smooth, digits, torn, **FAST, selection=sel, seed=4, pack=3)
    assert rows_without_time(torn) == expected and report.written == 3 and report.rows == 10
    again = certify_dataset(smooth, digits, torn, **FAST, selection=sel, seed=4, pack=3)
    assert again.written == 0 and rows_without_time(torn) == expected


def test_malformed_line_inside_a_log_is_refused_with_its_line(smooth, digits, tmp_path):
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 3), seed=1)
    lines = out.read_text().splitlines(keepends=True)
    lines[2] = "1\t3\t3\n"  # a wrong-width row in the middle
    out.write_text("".join(lines))
    with pytest.raises(ArgumentError, match="^out: .* line 3 is malformed"):
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 4), seed=1)


# -- the lock ------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(smooth, digits, digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from smoothcert.logs import LogLock; "
         "l = LogLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ArgumentError, match=f"^out: .*another process \\(pid {holder.pid}\\)"):
            certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 2), seed=1)
        r = runner.invoke(main, ["certify", str(digits_run), "--max", "2", "--out", str(out), *CLI_FAST])
        errors = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert r.exit_code == 2 and len(errors) == 1 and f"pid {holder.pid}" in errors[0]
        assert not out.exists() or out.stat().st_size == 0 or len(read_tsv(out)[1]) == 0
    finally:
        holder.kill()
        holder.wait()
    # the holder died: the kernel dropped its lock, the next run proceeds and removes the lock file
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 2), seed=1)
    assert len(read_tsv(out)[1]) == 2 and not Path(str(out) + ".lock").exists()


def test_under_torchrun_a_held_lock_stops_every_rank(digits_run, tmp_path):
    out = tmp_path / "c.tsv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from smoothcert.logs import LogLock; "
         "l = LogLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                            "29531", "-m", "smoothcert.cli", "certify", str(digits_run), "--max-inputs", "4",
                            "--out", str(out), *CLI_FAST], env=env, capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error") and "--out" in line]
    assert r.returncode != 0 and len(errors) == 2 and all(f"pid {holder.pid}" in e for e in errors)  # both ranks
    assert not list(tmp_path.glob("c.tsv.rank*")) and (not out.exists() or out.stat().st_size == 0)


RANK_SCRIPT = """
import os, sys, torch
from smoothcert import Smooth, certify_dataset
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
class Data:
    name, split = "toy", "test"
    def __len__(self):
        return 6
    def __getitem__(self, i):
        x = torch.full((1, 2, 2), i / 10)
        if i == int(sys.argv[2]):
            x[0, 0, 0] = float("nan")
        return x, i % 3
def say(line):  # one write(2) per line: the ranks share stdout and must not interleave within a line
    os.write(1, (line + "\\n").encode())
try:
    report = certify_dataset(Smooth(net, 3, 0.25), Data(), sys.argv[1], n0=10, n=50, alpha=0.01, batch_size=50,
                             seed=1)
    say(f"rank {os.environ.get('RANK', '0')} ok: {report.written} written")
except Exception as e:
    say(f"rank {os.environ.get('RANK', '0')} error: {e}")
    sys.exit(1)
"""


def test_under_torchrun_a_failing_rank_stops_every_rank_and_loses_no_row(tmp_path):
    """Rank 1 meets a NaN input (idx 3) while rank 0 has finished its shard: rank 0 must not wait
    for a merge that never comes; both ranks end with the error naming the input and the rank,
    and the next run merges rank 0's finished rows instead of recomputing them."""
    script, out = tmp_path / "run.py", tmp_path / "c.tsv"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29547", str(script), str(out), "3"], env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in r.stdout.splitlines() if line.startswith("rank ")]
    assert r.returncode != 0 and sorted(line[:13] for line in lines) == ["rank 0 error:", "rank 1 error:"], r.stdout
    assert all("idx 3" in line for line in lines) and any("on rank 1" in line for line in lines)
    assert sorted(p.name for p in tmp_path.glob("c.tsv.rank*")) == ["c.tsv.rank0", "c.tsv.rank1"]
    r = subprocess.run([sys.executable, str(script), str(out), "-1"], env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.stdout.strip() == "rank 0 ok: 2 written", r.stdout + r.stderr  # idx 0, 1, 2, 4 were kept
    assert sorted(int(row[0]) for row in read_tsv(out)[1]) == [0, 1, 2, 3, 4, 5]
    assert not list(tmp_path.glob("c.tsv.rank*"))


def test_the_lock_is_held_during_the_run(smooth, digits, tmp_path):
    out = tmp_path / "c.tsv"
    seen = []

    class Probe:
        def __getattr__(self, name):
            return getattr(smooth, name)

        def certify_batch(self, *args, **kwargs):
            with pytest.raises(ArgumentError, match=f"pid {os.getpid()}"):
                LogLock(out).acquire()
            seen.append(1)
            return smooth.certify_batch(*args, **kwargs)

    certify_dataset(Probe(), digits, out, **FAST, selection=Selection(1, 2), seed=1)
    assert seen == [1, 1]


# -- metadata ------------------------------------------------------------------------------------
def test_library_and_cli_leave_the_same_metadata(digits_run, runner, tmp_path):
    cli_out, lib_out = tmp_path / "cli.tsv", tmp_path / "lib.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(cli_out), *CLI_FAST])
    assert r.exit_code == 0, r.output
    model, config = load_model(digits_run)
    certify_dataset(Smooth(model, 10, config["sigma"]), get_dataset("digits", "test"), lib_out, n0=10, n=200,
                    alpha=0.001, batch_size=64, selection=Selection(1, 3), seed=3)
    cli_meta, lib_meta = (json.loads(meta_path(p).read_text()) for p in (cli_out, lib_out))
    assert cli_meta == lib_meta
    assert lib_meta["config"] == config and lib_meta["model"] == str(digits_run)
    assert lib_meta["certify"]["N"] == 200 and lib_meta["certify"]["alpha"] == 0.001
    assert lib_meta["certify"]["sigma"] == 0.25 and lib_meta["seed"] == 3
    assert (lib_meta["dataset"], lib_meta["split"]) == ("digits", "test")
    assert rows_without_time(cli_out) == rows_without_time(lib_out)


def test_cli_prints_one_summary_line_unless_quiet(digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    args = ["certify", str(digits_run), "--max", "3", "--out", str(out), "--N0", "10", "--N", "200", "--seed", "1"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    header, rows = read_tsv(out)
    acc = sum(int(x[4]) for x in rows) / 3
    acr = sum(float(x[3]) * int(x[4]) for x in rows) / 3
    assert len(lines) == 1 and lines[0].startswith("3 inputs") and str(out) in lines[0]
    assert f"certified accuracy at r = 0: {acc:.4f}" in lines[0] and f"ACR {acr:.4f}" in lines[0]
    assert "samples/s" in lines[0]
    assert runner.invoke(main, [*args, "--quiet", "--max", "4"]).output == ""


def test_predict_settings_check_too(smooth, digits, tmp_path):
    out = tmp_path / "p.tsv"
    predict_dataset(smooth, digits, out, n=100, alpha=0.001, batch_size=64, selection=Selection(1, 2), seed=1)
    with pytest.raises(ArgumentError, match="^alpha: "):
        predict_dataset(smooth, digits, out, n=100, alpha=0.01, batch_size=64, selection=Selection(1, 3), seed=1)


def test_resume_with_another_model_is_refused(smooth, digits, tmp_path):
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 2), seed=1)
    other = Smooth(copy.deepcopy(smooth.base_classifier), 10, 0.25)
    with torch.no_grad():
        next(other.base_classifier.parameters()).add_(1.0)
    with pytest.raises(ArgumentError, match="^model: .*model_sha256"):
        certify_dataset(other, digits, out, **FAST, selection=Selection(1, 3), seed=1)


# -- radii rounded down --------------------------------------------------------------------------
def test_floor_decimal_never_rounds_up():
    rng = np.random.default_rng(0)
    for x in [0.12349, 0.99999, 1.0, 0.0, 2.5e-5, 0.1235, 0.12350000000000001, *rng.uniform(0, 4, 2000)]:
        s = floor_decimal(float(x), 4)
        assert Decimal(s) <= Decimal(float(x)) < Decimal(s) + Decimal("0.0001")
    assert floor_decimal(0.12349) == "0.1234" and floor_decimal(1.99999) == "1.9999"


class FixedRadius:
    """A Smooth that certifies every input as its first class with the given radius."""

    def __init__(self, smooth: Smooth, radius: float):
        self.smooth, self.radius = smooth, radius

    def __getattr__(self, name):
        return getattr(self.smooth, name)

    def certify_batch(self, xs, n0, n, alpha, batch_size, generator=None):
        return torch.zeros(len(xs), dtype=torch.long), torch.full((len(xs),), self.radius, dtype=torch.float64)


@pytest.mark.parametrize("radius,logged", [(0.12349, "0.1234"), (1.99996, "1.9999"), (0.5, "0.5000")])
def test_logged_radii_are_rounded_down(smooth, digits, tmp_path, radius, logged):
    out = tmp_path / "c.tsv"
    certify_dataset(FixedRadius(smooth, radius), digits, out, **FAST, selection=Selection(1, 2), seed=1)
    assert [r[3] for r in read_tsv(out)[1]] == [logged, logged]


def test_options_reach_certify_batch_and_the_metadata(smooth, digits, tmp_path):
    got = []

    class WithOptions(FixedRadius):
        def certify_batch(self, xs, n0, n, alpha, batch_size, generator=None, *, norm=None):
            got.append(norm)
            return super().certify_batch(xs, n0, n, alpha, batch_size, generator)

    out = tmp_path / "c.tsv"
    certify_dataset(WithOptions(smooth, 0.3), digits, out, **FAST, selection=Selection(1, 2), seed=1, norm="l2")
    assert got == ["l2", "l2"] and json.loads(meta_path(out).read_text())["certify"]["norm"] == "l2"
    with pytest.raises(ArgumentError, match="^norm: "):
        certify_dataset(WithOptions(smooth, 0.3), digits, out, **FAST, selection=Selection(1, 3), seed=1, norm="l1")


def test_temp_files_of_killed_writes_are_removed(smooth, digits, tmp_path):
    out = tmp_path / "c.tsv"
    for name in (".c.tsv.meta.json.x1_b2c3d.tmp", ".c.tsv.k2abc9xy.tmp"):
        (tmp_path / name).write_text("partial")
    for name in (".other.tsv.k3abc9xy.tmp", ".c.tsv.gz.k3abc9xy.tmp"):  # another log's
        (tmp_path / name).write_text("not ours")
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 1), seed=1)
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [".c.tsv.gz.k3abc9xy.tmp", ".other.tsv.k3abc9xy.tmp"]


def test_out_naming_a_folder_is_an_argument_error(smooth, digits, tmp_path):
    with pytest.raises(ArgumentError, match="^out: .* is a folder"):
        certify_dataset(smooth, digits, tmp_path, **FAST, selection=Selection(1, 2), seed=1)


def test_a_first_release_log_resumes_only_with_gaussian_l2_one_sided(smooth, digits, tmp_path):
    """First-release metadata records no noise, norm or bound: they were Gaussian, L2, one-sided,
    so a resume asking for L1 radii is refused instead of mixing L2 and L1 rows in one log."""
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 2), seed=1)
    meta = json.loads(meta_path(out).read_text())
    for k in ("noise", "norm", "bound"):
        meta["certify"].pop(k, None)
    meta_path(out).write_text(json.dumps(meta))
    with pytest.raises(ArgumentError, match=r"^norm: .*norm='l2'.*norm='l1'") as e:
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 4), seed=1, norm="l1")
    assert e.value.arg == "norm"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 4), seed=1, norm="l2")
    assert [int(r[0]) for r in read_tsv(out)[1]] == [0, 1, 2, 3]


# -- the job object ------------------------------------------------------------------------------
def test_a_job_and_the_keyword_form_write_the_same_log_and_metadata(digits, tmp_path):
    """``run_job(LoggedJob(...))`` and the second release's ``run_logged(**keywords)`` are one
    runner: same rows, same metadata; a trailing count that disagrees with the columns is refused."""
    from smoothcert.runs import LoggedJob, run_job, run_logged

    def work(idx, xs, ys, gen):
        return [[int(y), int(torch.randint(10, (), generator=gen, device=xs.device))] for y in ys.tolist()]

    columns = ("idx", "label", "echo", "time", "draw")
    job = LoggedJob(key="echo", columns=columns, work=work, settings={"a": 1}, recorded={"b": 2},
                    selection=Selection(3, 5), per_batch=2, meta={"source": "test"})
    assert job.trailing == 1 and job.description == "echo"
    run_job(job, digits, tmp_path / "job.tsv", device=torch.device("cpu"), seed=7)
    run_logged(digits, tmp_path / "kw.tsv", columns, kind="echo", key="echo", indices=Selection(3, 5).indices(
        len(digits)), per_batch=2, step=work, device=torch.device("cpu"), seed=7, settings={"a": 1},
        recorded={"b": 2}, meta={"source": "test"}, selection=Selection(3, 5), trailing=1)
    assert rows_without_time(tmp_path / "job.tsv") == rows_without_time(tmp_path / "kw.tsv")
    assert [r[0] for r in rows_without_time(tmp_path / "job.tsv")] == ["0", "3", "6", "9", "12"]
    assert json.loads(meta_path(tmp_path / "job.tsv").read_text()) == json.loads(meta_path(tmp_path / "kw.tsv")
                                                                                  .read_text())
    with pytest.raises(ValueError, match="trailing"):
        run_logged(digits, tmp_path / "bad.tsv", columns, kind="echo", key="echo", indices=[0], per_batch=1,
                   step=work, device=torch.device("cpu"), seed=0, settings={}, trailing=0)
