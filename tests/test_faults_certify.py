"""Issue 23, the certify/predict log side: a resume with another selection, a damaged or
duplicated row, a bad option, a full disk, a corrupt metadata file, progress without a terminal."""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
from pathlib import Path

import pytest
import torch

from smoothcert import Selection, Smooth, certify_dataset, load_model, predict_dataset
from smoothcert import logs, progress
from smoothcert.cli import main
from smoothcert.data import get_dataset
from smoothcert.logs import read_tsv
from smoothcert.progress import Progress
from smoothcert.runner import meta_path
from smoothcert.validation import ArgumentError

FAST = dict(n0=10, n=200, alpha=0.001, batch_size=64)
CLI_FAST = ["--N0", "10", "--N", "200", "--batch", "64", "--seed", "3"]


def rows_without_time(path: Path) -> list[list[str]]:
    header, rows = read_tsv(path)
    t = header.index("time")
    return [r[:t] + r[t + 1:] for r in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.fixture
def smooth(digits_run) -> Smooth:
    model, config = load_model(digits_run)
    return Smooth(model, config["num_classes"], config["sigma"])


@pytest.fixture
def noisy() -> Smooth:
    """A linear model whose smoothed votes vary with the noise draw: rows depend on the seeds."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(4)
    return Smooth(model.eval(), 10, 0.25)


@pytest.fixture
def digits():
    return get_dataset("digits", "test")


class Counting:
    """A Smooth that counts the batches it certifies or predicts (work done)."""

    def __init__(self, smooth: Smooth):
        self.smooth, self.calls = smooth, 0

    def __getattr__(self, name):
        return getattr(self.smooth, name)

    def certify_batch(self, *args, **kwargs):
        self.calls += 1
        return self.smooth.certify_batch(*args, **kwargs)

    def certify_counts_batch(self, *args, **kwargs):  # the counted form the runner calls (nA, n columns)
        self.calls += 1
        return self.smooth.certify_counts_batch(*args, **kwargs)


# -- 2: the selection is part of what a resume must match ------------------------------------------
def test_resume_with_another_skip_is_refused_naming_both_values(smooth, digits, digits_run, runner, tmp_path):
    out, pred = tmp_path / "c.tsv", tmp_path / "p.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 3), seed=3)
    predict_dataset(smooth, digits, pred, n=100, alpha=0.001, batch_size=64, selection=Selection(1, 3), seed=3)
    before = snapshot(tmp_path)
    with pytest.raises(ArgumentError, match=r"^skip: .*skip=1, this run has skip=7") as e:
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(7, 3), seed=3)
    assert e.value.arg == "skip" and "\n" not in str(e.value)
    with pytest.raises(ArgumentError, match=r"^skip: .*skip=1, this run has skip=7"):
        predict_dataset(smooth, digits, pred, n=100, alpha=0.001, batch_size=64, selection=Selection(7, 3), seed=3)
    r = runner.invoke(main, ["certify", str(digits_run), "--skip", "7", "--max", "3", "--out", str(out), *CLI_FAST,
                             "--quiet"])
    errors = error_lines(r.output)
    assert r.exit_code == 2 and len(errors) == 1, r.output
    assert "--skip" in errors[0] and "skip=1" in errors[0] and "skip=7" in errors[0]
    assert snapshot(tmp_path) == before  # nothing appended, metadata intact


def test_a_larger_max_extends_the_log_a_smaller_one_that_drops_rows_is_refused(smooth, digits, tmp_path):
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(2, 4), seed=1)
    before = snapshot(tmp_path)
    with pytest.raises(ArgumentError, match=r"^max_count: .* line 4 holds idx 4.*max=4, this run has max=2") as e:
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(2, 2), seed=1)
    assert e.value.arg == "max_count"
    assert snapshot(tmp_path) == before
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(2, 6), seed=1)  # extends: one selection
    assert [int(r[0]) for r in read_tsv(out)[1]] == [0, 2, 4, 6, 8, 10]
    assert json.loads(meta_path(out).read_text())["selection"] == {"skip": 2, "max": 6}


# -- 3: the whole log is checked before any work -----------------------------------------------------
def _damaged(smooth, digits, tmp_path, last_line: str, seed: int = 1) -> Path:
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 3), seed=seed)
    with open(out, "a") as f:
        f.write(last_line)
    return out


@pytest.mark.parametrize("line,why", [
    ("10\t3\t3\tgarbage\t1\t0.2\t90\t100\n", r"line 5 is malformed \(radius 'garbage' is not a number\)"),
    ("10\t3\tx\t0.5\t1\t0.2\t90\t100\n", r"line 5 is malformed \(predict 'x' is not an integer\)"),
    ("10\t3\t3\tnan\t1\t0.2\t90\t100\n", r"line 5 is malformed \(radius 'nan' is not a finite number\)"),
    ("10\t3\t3\t0.5\t1\t0.2\tx\t100\n", r"line 5 is malformed \(nA 'x' is not an integer\)"),
    ("1\t3\t3\t0.5\t1\t0.2\t90\t100\n", r"line 5 repeats idx 1 of line 3"),
    ("50\t3\t3\t0.5\t1\t0.2\t90\t100\n", r"line 5 holds idx 50, which this run's selection leaves out"),
])
def test_a_damaged_log_is_refused_before_any_work_naming_file_and_line(smooth, digits, tmp_path, line, why):
    out = _damaged(smooth, digits, tmp_path, line)
    before = snapshot(tmp_path)
    counting = Counting(smooth)
    with pytest.raises(ArgumentError, match=f"{re.escape(repr(str(out)))} {why}") as e:
        certify_dataset(counting, digits, out, **FAST, selection=Selection(1, 20), seed=1)
    assert counting.calls == 0 and "\n" not in str(e.value)
    assert snapshot(tmp_path) == before


def test_cli_a_damaged_row_exits_2_with_one_line(smooth, digits, digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(out), *CLI_FAST, "--quiet"])
    assert r.exit_code == 0, r.output
    with open(out, "a") as f:
        f.write("10\t3\t3\tgarbage\t1\t0.2\t90\t100\n")
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "20", "--out", str(out), *CLI_FAST, "--quiet"])
    errors = error_lines(r.output)
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert str(out) in errors[0] and "line 5" in errors[0] and "garbage" in errors[0]
    assert len(read_tsv(out)[1]) == 4  # no work was added


def test_a_torn_last_line_from_a_kill_still_resumes(noisy, digits, tmp_path):
    whole = tmp_path / "whole.tsv"
    certify_dataset(noisy, digits, whole, **FAST, selection=Selection(1, 5), seed=2)
    out = _damaged(noisy, digits, tmp_path, "3\t3\t3\tgarb", seed=2)  # killed mid-line: no newline
    certify_dataset(noisy, digits, out, **FAST, selection=Selection(1, 5), seed=2)
    assert rows_without_time(out) == rows_without_time(whole)


# -- 7: every option is checked before anything is written ----------------------------------------
@pytest.mark.parametrize("bad", [
    dict(norm="l2"),  # PREDICT has no options
    dict(seed=-1),
    dict(seed="x"),
    dict(selection=(1, 3)),
    dict(meta=["not", "a", "dict"]),
    dict(n=0),
    dict(pack=0),
])
def test_predict_with_a_bad_option_writes_nothing(smooth, digits, tmp_path, bad):
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    fresh.mkdir()
    old.mkdir()
    args = dict(n=100, alpha=0.001, batch_size=64, selection=Selection(1, 2), seed=1)
    predict_dataset(smooth, digits, old / "p.tsv", **args)
    before = snapshot(old)
    for folder in (fresh, old):
        with pytest.raises(ValueError):
            predict_dataset(smooth, digits, folder / "p.tsv", **{**args, **bad})
    assert snapshot(fresh) == {} and snapshot(old) == before


def test_certify_with_an_option_certify_batch_does_not_take_writes_nothing(smooth, digits, tmp_path):
    with pytest.raises(ArgumentError, match="^dim: not an option of certify") as e:
        certify_dataset(smooth, digits, tmp_path / "c.tsv", **FAST, selection=Selection(1, 2), seed=1, dim=5)
    assert e.value.arg == "dim" and snapshot(tmp_path) == {}


# -- 12: a full disk -----------------------------------------------------------------------------------
class FullDisk:
    """Stands in for ``open`` in smoothcert.logs: the log ``path`` takes ``rows`` more rows, then
    its disk is full: the next row is cut halfway, and writing, flushing or closing what is left
    raises OSError(ENOSPC), as a buffered file on a full disk does."""

    def __init__(self, path: Path, rows: int):
        self.path, self.rows = Path(path), rows

    def __call__(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return _Filling(f, self) if Path(file) == self.path and mode[0] in "aw" else f


class _Filling:
    def __init__(self, f, disk: FullDisk):
        self._f, self._disk, self._pending = f, disk, ""

    def __getattr__(self, name):
        return getattr(self._f, name)

    def _full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(self, text):
        if self._pending:
            self._pending += text
            self._full()
        if re.match(r"\d+\t", text):
            if self._disk.rows == 0:
                half = len(text) // 2
                self._f.write(text[:half])
                self._f.flush()
                self._pending = text[half:]
                self._full()
            self._disk.rows -= 1
        return self._f.write(text)

    def flush(self):
        if self._pending:
            self._full()
        self._f.flush()

    def close(self):
        self._f.close()
        if self._pending:
            self._full()


def test_a_full_disk_while_appending_rows_is_one_line_frees_the_lock_and_resumes_exactly(noisy, digits, tmp_path,
                                                                                        monkeypatch):
    whole, out = tmp_path / "whole.tsv", tmp_path / "c.tsv"
    sel = Selection(1, 6)
    certify_dataset(noisy, digits, whole, **FAST, selection=sel, seed=4)
    with monkeypatch.context() as m:
        m.setattr(logs, "open", FullDisk(out, rows=3), raising=False)
        with pytest.raises(ValueError) as e:
            certify_dataset(noisy, digits, out, **FAST, selection=sel, seed=4)
    msg = str(e.value)
    assert "\n" not in msg and repr(str(out)) in msg and "No space left on device" in msg
    assert not Path(str(out) + ".lock").exists()
    assert len(logs.read_rows(out, logs.CERTIFY_COLUMNS + logs.COUNT_COLUMNS)) == 3 and not out.read_text().endswith("\n")  # torn 4th
    certify_dataset(noisy, digits, out, **FAST, selection=sel, seed=4)  # space freed: the same process resumes
    assert rows_without_time(out) == rows_without_time(whole)


def test_cli_a_full_disk_exits_2_naming_the_file_and_the_rerun_matches(digits_run, runner, tmp_path, monkeypatch):
    whole, out = tmp_path / "whole.tsv", tmp_path / "c.tsv"
    args = ["certify", str(digits_run), "--max", "5", *CLI_FAST, "--quiet"]
    assert runner.invoke(main, [*args, "--out", str(whole)]).exit_code == 0
    with monkeypatch.context() as m:
        m.setattr(logs, "open", FullDisk(out, rows=2), raising=False)
        r = runner.invoke(main, [*args, "--out", str(out)])
    errors = error_lines(r.output)
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert str(out) in errors[0] and "No space left on device" in errors[0]
    assert not Path(str(out) + ".lock").exists()
    r = runner.invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert rows_without_time(out) == rows_without_time(whole)


class _NoSpaceToSync:
    """``os`` for smoothcert.logs, except that fsync (the metadata's atomic rewrite) finds the disk full."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_in_the_metadata_rewrite_is_one_line_and_changes_nothing(noisy, digits, tmp_path, monkeypatch):
    whole, out = tmp_path / "whole.tsv", tmp_path / "c.tsv"
    certify_dataset(noisy, digits, whole, **FAST, selection=Selection(1, 4), seed=4)
    certify_dataset(noisy, digits, out, **FAST, selection=Selection(1, 2), seed=4)
    before = snapshot(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(logs, "os", _NoSpaceToSync())
        with pytest.raises(ValueError) as e:
            certify_dataset(noisy, digits, out, **FAST, selection=Selection(1, 4), seed=4)
    msg = str(e.value)
    assert "\n" not in msg and repr(str(meta_path(out))) in msg and "No space left on device" in msg
    assert snapshot(tmp_path) == before  # no lock, no temp file, log and metadata as they were
    certify_dataset(noisy, digits, out, **FAST, selection=Selection(1, 4), seed=4)
    assert rows_without_time(out) == rows_without_time(whole)


# -- 13: a corrupt metadata file ------------------------------------------------------------------------
def test_a_corrupt_meta_json_is_one_line_naming_the_file(smooth, digits, digits_run, runner, tmp_path):
    out = tmp_path / "c.tsv"
    certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 2), seed=1)
    meta_path(out).write_text('{"certify": {,}')
    before = snapshot(tmp_path)
    with pytest.raises(ArgumentError, match=f"^out: {re.escape(repr(str(meta_path(out))))} is not valid JSON") as e:
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 3), seed=1)
    assert "\n" not in str(e.value)
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(out), *CLI_FAST, "--quiet"])
    errors = error_lines(r.output)
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert str(meta_path(out)) in errors[0] and "not valid JSON" in errors[0]
    meta_path(out).write_text("[1, 2]")
    with pytest.raises(ArgumentError, match="is not a JSON object"):
        certify_dataset(smooth, digits, out, **FAST, selection=Selection(1, 3), seed=1)
    meta_path(out).write_text(before["c.tsv.meta.json"].decode())
    assert snapshot(tmp_path) == before


# -- 14: progress without a terminal --------------------------------------------------------------
PROGRESS_LINE = re.compile(r"^c\.tsv: \d+/3 inputs \(\d+%\), [\d.e+]+ inputs/s, ETA (\d+:\d\d:\d\d|\?)")


def test_progress_lines_without_a_terminal_none_when_quiet(smooth, digits, digits_run, runner, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    certify_dataset(smooth, digits, tmp_path / "c.tsv", **FAST, selection=Selection(1, 3), seed=1, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(PROGRESS_LINE.match(line) for line in lines), lines
    assert lines[-1].startswith("c.tsv: 3/3 inputs (100%)") and "samples/s" in lines[-1]
    certify_dataset(smooth, digits, tmp_path / "d.tsv", **FAST, selection=Selection(1, 3), seed=1, progress=False)
    assert capsys.readouterr().err == ""

    out = tmp_path / "cli" / "c.tsv"
    out.parent.mkdir()
    r = runner.invoke(main, ["certify", str(digits_run), "--max", "3", "--out", str(out), *CLI_FAST])
    assert r.exit_code == 0 and sum(bool(PROGRESS_LINE.match(x)) for x in r.stderr.splitlines()) == 3, r.output
    r = runner.invoke(main, ["predict", str(digits_run), "--max", "3", "--out", str(out.with_name("p.tsv")),
                             "--N", "100", "--quiet"])
    assert r.exit_code == 0 and r.output == ""


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_at_most_every_interval(monkeypatch):
    bar = Progress(4, "x", stream=_Terminal())
    assert bar.bar is not None  # tqdm draws it
    bar.close()
    now = [0.0]
    monkeypatch.setattr(progress, "_now", lambda: now[0])
    stream = io.StringIO()
    p = Progress(100, "x", stream=stream)  # the default interval
    assert p.interval == progress.INTERVAL == 30.0
    for _ in range(100):
        now[0] += 1.0
        p.update(1)
    lines = stream.getvalue().splitlines()
    assert lines == ["x: 30/100 inputs (30%), 1 inputs/s, ETA 0:01:10", "x: 60/100 inputs (60%), 1 inputs/s, "
                     "ETA 0:00:40", "x: 90/100 inputs (90%), 1 inputs/s, ETA 0:00:10"]
    quiet = io.StringIO()
    q = Progress(5, "x", enabled=False, stream=quiet, interval=0)
    q.update(5)
    q.write("hello")
    assert quiet.getvalue() == ""
