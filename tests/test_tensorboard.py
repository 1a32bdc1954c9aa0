"""train --tensorboard: per-epoch scalars through torch.utils.tensorboard, never a required dependency."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import smoothcert.tensorboard as tb
from smoothcert import train
from smoothcert.cli import main
from smoothcert.validation import ArgumentError

SMALL = dict(dataset="synthetic", method="gauss", method_params={"sigma": 0.25}, batch_size=32, lr=0.05,
             max_train_samples=64, max_test_samples=32, quiet=True)


class FakeWriter:
    """Records what SummaryWriter would write."""

    made: list["FakeWriter"] = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    FakeWriter.made = []
    monkeypatch.setattr(tb, "writer_class", lambda: FakeWriter)
    monkeypatch.setattr(sys.modules["smoothcert.train"], "writer_class", lambda: FakeWriter)  # the module
    return FakeWriter


def _log_rows(run: Path) -> list[list[str]]:
    return [line.split("\t") for line in (run / "train_log.tsv").read_text().splitlines()[1:]]


def test_each_epoch_s_scalars_are_the_train_log_s(tmp_path, fake):
    run = train(tmp_path / "run", epochs=2, tensorboard=True, **SMALL)
    (w,) = fake.made
    assert w.log_dir == str(run / "tensorboard") and w.purge_step == 1 and w.closed
    rows = _log_rows(run)
    by_tag = {tag: [(step, value) for t, value, step in w.scalars if t == tag] for tag, _ in tb.SCALARS}
    assert [s for s, _ in by_tag["train/loss"]] == [1, 2]
    for k, row in enumerate(rows):  # epoch seconds lr train_loss train_acc test_acc_noisy
        assert by_tag["train/loss"][k][1] == pytest.approx(float(row[3]), rel=1e-4)
        assert by_tag["test/accuracy_noisy"][k][1] == pytest.approx(float(row[5]), rel=1e-4)
        assert by_tag["lr"][k][1] == pytest.approx(float(row[2]), rel=1e-4)
    # a resume appends after its checkpoint, hiding later events of a crashed run (purge_step)
    train(tmp_path / "run", epochs=3, tensorboard=tmp_path / "elsewhere", resume=True, **SMALL)
    assert fake.made[-1].purge_step == 3 and fake.made[-1].log_dir == str(tmp_path / "elsewhere")
    assert [s for t, _, s in fake.made[-1].scalars if t == "lr"] == [3]


def test_without_tensorboard_nothing_is_written(tmp_path, fake):
    run = train(tmp_path / "run", epochs=1, **SMALL)
    assert fake.made == [] and not (run / "tensorboard").exists()
    with pytest.raises(ArgumentError, match="tensorboard must be True, False or a folder"):
        train(tmp_path / "run2", epochs=1, tensorboard=3, **SMALL)


def test_a_missing_tensorboard_package_is_one_line_before_any_training(tmp_path, runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ArgumentError) as e:
        train(tmp_path / "lib", epochs=1, tensorboard=True, **SMALL)
    assert e.value.arg == "tensorboard" and "needs the tensorboard package" in str(e.value)
    assert not (tmp_path / "lib").exists()
    r = runner.invoke(main, ["train", "--out", str(tmp_path / "cli"), "--dataset", "synthetic", "--sigma", "0.25",
                             "--epochs", "1", "--tensorboard", "--quiet"])
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 2 and len(err) == 1, r.output
    assert "--tensorboard" in err[0] and "pip install tensorboard" in err[0]
    assert not (tmp_path / "cli").exists()


def test_real_event_files_when_tensorboard_is_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tmp_path / "run", epochs=2, tensorboard=True, **SMALL)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert {tag for tag, _ in tb.SCALARS} <= set(acc.Tags()["scalars"])
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert losses == pytest.approx([float(r[3]) for r in _log_rows(run)], rel=1e-4)
