"""Certify or predict a whole dataset split with a smoothed classifier, into a resumable TSV log.

``certify_dataset`` / ``predict_dataset`` are the library calls behind ``smoothcert certify`` and
``smoothcert predict``. Guarantees:

* One flushed line per input (``idx label predict radius correct time``, Cohen et al.'s format);
  rerunning with the same ``out`` skips indices already logged, so a run killed at any moment
  loses at most the inputs in flight.
* With a ``seed``, the noise for input ``idx`` comes from a generator seeded by (seed, idx)
  alone, so a resumed or split run writes exactly what an uninterrupted one does. With
  ``pack`` > 1, ``pack`` consecutive inputs share one call (their samples share forward
  batches) and one generator seeded by (seed, first idx of the pack): reruns and resumes are
  still identical, but results then depend on the packing (and on the number of ranks).
* Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r takes every WORLD_SIZE-th selected input into
  its own shard ``out.rank{r}``; rank 0 merges the shards into ``out`` (sorted by idx,
  atomically) once every rank is done.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .data import ImageDataset
from .logs import CERTIFY_COLUMNS, PREDICT_COLUMNS, TSVLog, atomic_write_bytes, atomic_write_json, read_tsv
from .smoothing import Smooth
from .validation import check_float, check_int

_SEED_STRIDE = 1_000_003  # seed * stride + idx: distinct generator seeds per (seed, idx)


@dataclass(frozen=True)
class Selection:
    """Which inputs to process: every ``skip``-th index from 0, the first ``max_count`` of those
    (``max_count`` counts inputs, not dataset indices; -1 means all)."""

    skip: int = 1
    max_count: int = -1

    def indices(self, length: int) -> list[int]:
        if self.skip < 1:
            raise ValueError(f"skip must be >= 1, got {self.skip}")
        if self.max_count < -1 or self.max_count == 0:
            raise ValueError(f"max must be -1 (all) or >= 1, got {self.max_count}")
        idx = list(range(0, length, self.skip))
        return idx if self.max_count == -1 else idx[: self.max_count]


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _generator(device: torch.device, seed: int, idx: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * _SEED_STRIDE + idx)


def _run(
    smooth: Smooth,
    dataset: ImageDataset,
    out: str | os.PathLike,
    columns: Sequence[str],
    step,  # (xs, generator, labels) -> one row tail per input (the columns between label and time)
    samples_per_input: int,
    selection: Selection,
    seed: int | None,
    pack: int,
    meta: dict[str, Any] | None,
    progress: bool,
) -> Path:
    out = Path(out)
    if pack < 1:
        raise ValueError(f"pack must be >= 1, got {pack}")
    rank, world = _dist_info()
    seed = secrets.randbits(31) if seed is None else int(seed)
    selected = selection.indices(len(dataset))
    main_log = TSVLog(out, columns, kind=columns_kind(columns)) if rank == 0 else None
    done = set(main_log.done) if main_log else set(_done_in(out, columns))
    if world > 1:
        if main_log:
            main_log.close()
        shard = out.with_name(out.name + f".rank{rank}")
        log = TSVLog(shard, columns, kind=columns_kind(columns))
        done |= log.done
        mine = selected[rank::world]
    else:
        log, mine = main_log, selected
    if rank == 0 and meta is not None:
        atomic_write_json({**meta, "seed": seed, "selection": {"skip": selection.skip, "max": selection.max_count}},
                          str(out) + ".meta.json")
    packs = [mine[k : k + pack] for k in range(0, len(mine), pack)]
    packs = [p for p in packs if not all(i in done for i in p)]
    device = smooth.device
    bar = tqdm(total=sum(len(p) for p in packs), disable=not progress, unit="input", dynamic_ncols=True, desc=out.name)
    try:
        for chunk in packs:
            xs = torch.stack([dataset[i][0] for i in chunk]).to(device)
            labels = [int(dataset[i][1]) for i in chunk]
            t0 = time.perf_counter()
            tails = step(xs, _generator(device, seed, chunk[0]), labels)
            dt = (time.perf_counter() - t0) / len(chunk)
            for i, label, tail in zip(chunk, labels, tails):
                if i not in done:  # a pack cut short by a kill is recomputed whole, logged once
                    log.write([i, label, *tail, round(dt, 4)])
            bar.update(len(chunk))
            bar.set_postfix_str(f"{samples_per_input / max(dt, 1e-9):,.0f} samples/s")
    finally:
        bar.close()
        log.close()
    if world > 1:
        _merge_shards(out, columns, world)
    return out


def columns_kind(columns: Sequence[str]) -> str:
    return "certify" if tuple(columns) == CERTIFY_COLUMNS else "predict"


def _done_in(path: Path, columns: Sequence[str]) -> set[int]:
    if not path.exists() or path.stat().st_size == 0:
        return set()
    header, rows = read_tsv(path)
    if tuple(header) != tuple(columns):
        raise ValueError(f"{str(path)!r} is not a {columns_kind(columns)} log")
    return {int(r[0]) for r in rows}


def _merge_shards(out: Path, columns: Sequence[str], world: int) -> None:
    """Barrier, then rank 0 merges ``out`` and every ``out.rank{r}`` into ``out`` sorted by idx."""
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
        created = True
    try:
        dist.barrier()
        if dist.get_rank() == 0:
            rows: dict[int, list[str]] = {}
            shards = [out.with_name(out.name + f".rank{r}") for r in range(world)]
            for p in [out, *shards]:
                if p.exists() and p.stat().st_size > 0:
                    header, body = read_tsv(p)
                    for r in body:
                        rows.setdefault(int(r[0]), r)
            text = "\t".join(columns) + "\n" + "".join("\t".join(rows[i]) + "\n" for i in sorted(rows))
            atomic_write_bytes(out, text.encode())
            for p in shards:
                p.unlink(missing_ok=True)
        dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()


def _check_sampling(alpha: float, **counts: int) -> None:
    """Fail before any file is touched: counts must be integers >= 1, alpha in (0, 1)."""
    for name, v in counts.items():
        check_int(name, v, 1)
    check_float("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)


def certify_dataset(
    smooth: Smooth,
    dataset: ImageDataset,
    out: str | os.PathLike,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    selection: Selection = Selection(),
    seed: int | None = None,
    pack: int = 1,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
    **options: Any,
) -> Path:
    """CERTIFY (Cohen et al., 2019) every selected input of ``dataset`` into the TSV log ``out``
    (columns ``idx label predict radius correct time``, time in seconds per input). ``pack``
    inputs share each call to ``Smooth.certify_batch`` (their samples share forward batches),
    which keeps a large device busy when the model is small and ``n`` is small. ``options``
    (``norm``, ``bound``) go to ``Smooth.certify_batch``."""
    _check_sampling(n0=n0, n=n, batch_size=batch_size, alpha=alpha)
    smooth.check_options(**options)

    def step(xs: torch.Tensor, gen: torch.Generator, labels: list[int]) -> list[list[Any]]:
        pred, radius = smooth.certify_batch(xs, n0, n, alpha, batch_size, gen, **options)
        return [[int(p), round(float(r), 4), int(int(p) == y)] for p, r, y in zip(pred, radius, labels)]

    return _run(smooth, dataset, out, CERTIFY_COLUMNS, step, n0 + n, selection, seed, pack, meta, progress)


def predict_dataset(
    smooth: Smooth,
    dataset: ImageDataset,
    out: str | os.PathLike,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    selection: Selection = Selection(),
    seed: int | None = None,
    pack: int = 1,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """PREDICT (Cohen et al., 2019) every selected input into ``out`` (``idx label predict
    correct time``)."""
    _check_sampling(n=n, batch_size=batch_size, alpha=alpha)

    def step(xs: torch.Tensor, gen: torch.Generator, labels: list[int]) -> list[list[Any]]:
        pred = smooth.predict_batch(xs, n, alpha, batch_size, gen)
        return [[int(p), int(int(p) == y)] for p, y in zip(pred, labels)]

    return _run(smooth, dataset, out, PREDICT_COLUMNS, step, n, selection, seed, pack, meta, progress)
