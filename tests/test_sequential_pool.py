"""Sequential certification packed across inputs (issue 26): a pool of active inputs whose samples
fill each forward batch (``procedures.certify_sequential_packed``, ``certify_dataset(...,
sequential=True, pool=P)``, ``certify --sequential --pool P``).

Every input draws from its own generator seeded by (seed, idx) in the blocks the unpooled run
draws, so the pooled log is the unpooled (pack 1) log, whatever the pool, the batch grouping
and the resumes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothcert.data import TensorImageDataset
from smoothcert.procedures import certify_sequential_packed
from smoothcert.sampling import NoiseStream, draw_counts
from smoothcert.smoothing import Smooth
from smoothcert.validation import ArgumentError


READS = {"inputs": 0}  # inputs read from a Counted dataset (global: the sampler runs a copy of the model)


class Halfspace(torch.nn.Module):
    """f(x) = 1 if x_1 > 0 else 0, as two logits; records (size, inputs read so far) of each forward batch."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.reads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        self.reads.append(READS["inputs"])
        v = x.flatten(1)[:, 0]
        return torch.stack([-v, v], 1)


def dataset(count: int = 24, seed: int = 0) -> TensorImageDataset:
    """Inputs (1, 1, 2) at x_1 spread over [-0.6, 1.2]: some abstain, some stop at once, some run long."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(count, 1, 1, 2)
    x[:, 0, 0, 0] = torch.rand(count, generator=g) * 1.8 - 0.6
    x[:, 0, 0, 1] = torch.rand(count, generator=g)
    y = (x[:, 0, 0, 0] > 0).long()
    return Counted(x, y, name="halfspace", num_classes=2, mean=(0.5,), std=(0.5,), default_arch="lenet")


class Counted(TensorImageDataset):
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        READS["inputs"] += 1
        return super().__getitem__(i)


def _smooth(batch: int) -> Smooth:
    return Smooth(Halfspace(), 2, 0.5, chunk_size=batch)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    from smoothcert.logs import read_tsv
    header, rows = read_tsv(path)
    t = header.index("time")
    return header, [r[:t] + r[t + 1:] for r in rows]


SETTINGS = dict(n0=20, n=3000, alpha=0.01, batch_size=64, seed=5, sequential=True)


def test_noise_stream_is_the_single_input_draw_whatever_the_cuts():
    """The rows a NoiseStream gives for a round of num rows, cut anyhow, are draw_counts' rows for
    that input alone (blocks of batch_size rows from its generator)."""
    from smoothcert.noise import GaussianNoise
    noise = GaussianNoise(1.0)
    ref_gen = torch.Generator().manual_seed(3)
    ref = torch.cat([noise.sample_(torch.empty(r, 3), ref_gen) for r in (8, 8, 8, 6, 8, 8, 4)])  # rounds 30, 20
    stream = NoiseStream(noise, (3,), torch.device("cpu"), torch.float32, 8, torch.Generator().manual_seed(3))
    got = []
    stream.start(30)
    for k in (5, 11, 1, 13):
        out = torch.empty(k, 3)
        stream.take(out)
        got.append(out)
    stream.start(20)
    for k in (20,):
        out = torch.empty(k, 3)
        stream.take(out)
        got.append(out)
    assert torch.equal(torch.cat(got), ref)


def test_packed_procedure_matches_certify_sequential_per_input():
    """Each input's decision and samples are those of certify_sequential on it alone with its generator."""
    ds = dataset(12)
    smooth = _smooth(64)
    args = (20, 3000, 0.01, 64)
    for radii in (None, [0.0, 0.25, 0.5, 1.0]):
        packed = {r.key: r for r in certify_sequential_packed(
            smooth.sampler, ((i, ds[i][0], torch.Generator().manual_seed(100 + i)) for i in range(len(ds))),
            *args, radii, pool=5)}
        assert sorted(packed) == list(range(len(ds)))
        for i in range(len(ds)):
            p, r, u = smooth.certify_sequential_batch(ds[i][0][None], *args, radii,
                                                      generator=torch.Generator().manual_seed(100 + i))
            assert (packed[i].pred, packed[i].radius, packed[i].n_used) == (int(p), float(r), int(u))


def test_pooled_log_is_the_unpooled_log_and_batches_are_full(tmp_path):
    from smoothcert import certify_dataset
    from smoothcert.logs import CERTIFY_COLUMNS
    ds = dataset(24)
    plain, pooled = tmp_path / "plain.tsv", tmp_path / "pooled.tsv"
    certify_dataset(_smooth(64), ds, plain, radii=[0.0, 0.25, 0.5, 1.0], **SETTINGS)
    smooth = _smooth(64)
    READS["inputs"] = 0
    report = certify_dataset(smooth, ds, pooled, radii=[0.0, 0.25, 0.5, 1.0], pool=16, **SETTINGS)
    header, rows = _rows(pooled)
    assert tuple(header) == CERTIFY_COLUMNS + ("n_used",)
    assert _rows(plain) == (header, rows)  # same rows, in idx order
    assert [int(r[0]) for r in rows] == list(range(24))
    assert report.samples == sum(20 + int(r[-1]) for r in rows)
    meta = json.loads(Path(str(pooled) + ".meta.json").read_text())
    assert meta["certify"]["pool"] == 16 and "pool" not in json.loads(Path(str(plain) + ".meta.json").read_text())["certify"]
    # every forward batch is full while inputs are still waiting to join; only the tail (the last
    # inputs running out) is short
    sizes, reads = smooth.model.sizes, smooth.model.reads
    assert sum(sizes) == report.samples
    waiting = [s for s, r in zip(sizes, reads) if r < len(ds)]
    assert len(waiting) >= 20 and set(waiting) == {64}, list(zip(sizes, reads))
    assert sizes[:len(waiting)] == waiting  # reads only grow


def test_pooled_run_resumes_after_an_interruption_mid_pool(tmp_path):
    """A run killed with inputs in the pool and finished rows buffered resumes from the first
    unlogged idx, with another pool size too, and writes the uninterrupted log."""
    from smoothcert import certify_dataset
    ds = dataset(20)
    full, part = tmp_path / "full.tsv", tmp_path / "part.tsv"
    certify_dataset(_smooth(64), ds, full, tol=0.05, pool=8, **SETTINGS)

    class Killed(RuntimeError):
        pass

    smooth = _smooth(64)
    model = smooth.model
    forward = model.forward

    def dying(x):
        if len(model.sizes) >= 25:
            raise Killed
        return forward(x)

    model.forward = dying
    with pytest.raises(Killed):
        certify_dataset(smooth, ds, part, tol=0.05, pool=8, **SETTINGS)
    done = _rows(part)[1]
    assert 0 < len(done) < 20 and [int(r[0]) for r in done] == list(range(len(done)))
    certify_dataset(_smooth(64), ds, part, tol=0.05, pool=3, **SETTINGS)  # resume, another pool: speed only
    assert _rows(part) == _rows(full)
    unpooled = tmp_path / "plain.tsv"
    certify_dataset(_smooth(64), ds, unpooled, tol=0.05, **SETTINGS)
    assert _rows(unpooled) == _rows(full)


def test_every_radius_is_certified_in_a_pool():
    """Soundness in a pool: halfspace inputs at a known distance from the boundary, many copies;
    no certified radius beyond the true distance more often than alpha allows."""
    x = torch.zeros(60, 1, 1, 2)
    x[:, 0, 0, 0] = 0.3
    alpha = 0.05
    smooth = _smooth(128)
    results = list(certify_sequential_packed(
        smooth.sampler, ((i, x[i], torch.Generator().manual_seed(i)) for i in range(60)), 10, 2000, alpha, 128,
        [0.0, 0.1, 0.2, 0.3, 0.4], pool=32))
    assert len(results) == 60
    wrong = sum(r.pred == 0 or (r.pred == 1 and r.radius > 0.3) for r in results if r.pred != -1)
    assert wrong <= 60 * alpha + 3


def test_pool_errors_name_the_argument(tmp_path):
    from smoothcert import certify_dataset
    ds = dataset(4)
    for kwargs in (dict(pool=4), dict(pool=0, sequential=True), dict(pool=4, sequential=True, pack=2)):
        with pytest.raises(ArgumentError) as err:
            certify_dataset(_smooth(64), ds, tmp_path / "x.tsv", 10, 200, 0.01, 64, **kwargs)
        assert err.value.arg == "pool"
    assert not (tmp_path / "x.tsv").exists()


def test_draw_counts_unchanged_for_the_fixed_path():
    """The fixed-N sampler's noise stream is untouched by the pool's (same counts for a seed)."""
    from smoothcert.noise import GaussianNoise
    xs = dataset(3).x
    model = Halfspace()
    a = draw_counts(model, xs, 100, GaussianNoise(0.5), 2, 64, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    noise = torch.cat([GaussianNoise(0.5).sample_(torch.empty(r, 1, 1, 2), g) for r in (64, 64, 64, 64, 44)])
    v = (noise + xs.repeat_interleave(100, 0)).flatten(1)[:, 0]
    ref = torch.stack([torch.bincount((v[i * 100:(i + 1) * 100] > 0).long(), minlength=2) for i in range(3)])
    assert torch.equal(a, ref)


def test_cli_sequential_pool(tmp_path, runner, digits_run):
    from smoothcert.cli import main
    args = ["certify", str(digits_run), "--N0", "10", "--N", "2000", "--batch", "200", "--seed", "3", "--quiet",
            "--sequential", "--radii", "0:1:0.25", "--max", "6"]
    plain, pooled = tmp_path / "plain.tsv", tmp_path / "pooled.tsv"
    assert runner.invoke(main, [*args, "--out", str(plain)]).exit_code == 0
    r = runner.invoke(main, [*args, "--pool", "4", "--out", str(pooled)])
    assert r.exit_code == 0, r.output
    assert _rows(plain) == _rows(pooled)
    for extra, needle in ((["--pool", "0"], "--pool"), (["--pool", "4", "--pack", "2"], "--pool")):
        r = runner.invoke(main, [*args, *extra, "--out", str(tmp_path / "bad.tsv")])
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(main, ["certify", str(digits_run), "--pool", "4", "--out", str(tmp_path / "bad.tsv")])
    assert r.exit_code == 2 and "--pool" in r.output, r.output
