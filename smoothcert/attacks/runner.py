"""The resumable TSV runner of ``attack_dataset`` and ``check_certificates`` (moved here as it was;
the one logged runner of ``smoothcert.logs``/``certification`` replaces it)."""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..data import ImageDataset
from ..logs import TSVLog, atomic_write_json

_SEED_STRIDE = 1_000_003  # generator seed of a batch: seed * stride + its first idx
# a batch's work in _run_logged: (idx, xs, ys, generator) -> the row tails between label and time
Step = Callable[[list[int], torch.Tensor, torch.Tensor, torch.Generator], list[list[Any]]]


def _run_logged(dataset: ImageDataset, out: str | Path, columns: Sequence[str], kind: str, indices: list[int],
                per_batch: int, step: Step,
                device: torch.device, seed: int | None, settings: dict[str, Any], meta: dict[str, Any] | None,
                progress: bool) -> Path:
    """Run ``step`` over ``indices`` in batches of ``per_batch`` into the resumable TSV ``out``
    (rows: idx, label, *step's tail, time per input). Each batch draws its randomness from a
    generator seeded by (seed, its first idx), so a resumed run writes what an uninterrupted one
    does. ``out.meta.json`` records ``settings`` and the seed; resuming with other settings is
    an error (rows of two attacks never mix in one log)."""
    out = Path(out)
    meta_path = Path(str(out) + ".meta.json")
    log = TSVLog(out, columns, kind=kind)
    try:
        settings = json.loads(json.dumps(settings))
        if log.done and meta_path.is_file():
            old = json.loads(meta_path.read_text())
            if old.get("settings") != settings:
                raise ValueError(f"{str(out)!r} was written with other settings ({old.get('settings')}); "
                                 "choose another output file")
            seed = old.get("seed") if seed is None else seed
        seed = secrets.randbits(31) if seed is None else int(seed)
        atomic_write_json({**(meta or {}), "settings": settings, "seed": seed}, meta_path)
        batches = [indices[k:k + per_batch] for k in range(0, len(indices), per_batch)]
        batches = [b for b in batches if not all(i in log.done for i in b)]
        with tqdm(total=sum(map(len, batches)), disable=not progress, unit="input", dynamic_ncols=True,
                  desc=out.name) as bar:
            for b in batches:
                xs = torch.stack([dataset[i][0] for i in b]).to(device)
                ys = torch.tensor([int(dataset[i][1]) for i in b], device=device)
                gen = torch.Generator(device=device).manual_seed(seed * _SEED_STRIDE + b[0])
                t0 = time.perf_counter()
                tails = step(b, xs, ys, gen)
                dt = (time.perf_counter() - t0) / len(b)
                for i, y, tail in zip(b, ys.tolist(), tails):
                    if i not in log.done:
                        log.write([i, y, *tail, round(dt, 4)])
                bar.update(len(b))
    finally:
        log.close()
    return out
