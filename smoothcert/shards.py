"""Shards: certify the I-th of K disjoint slices of the selected inputs as an independent job (a
Slurm array task), then merge the K logs into the one log of the whole selection.

* ``parse_shard("I/K")`` -- 1 <= I <= K -- or ``parse_shard("slurm")``: the task's place in its array,
  ``SLURM_ARRAY_TASK_ID`` among ``SLURM_ARRAY_TASK_COUNT`` tasks (or, where COUNT is not set, the
  range ``SLURM_ARRAY_TASK_MIN`` .. ``SLURM_ARRAY_TASK_MAX`` in steps of ``SLURM_ARRAY_TASK_STEP``):
  ``--array=0-9`` and ``--array=1-10`` both give shards 1/10 .. 10/10.
* ``shard_of(indices, shard, block)``: the shard's inputs. The selected inputs are cut into
  blocks of ``block`` (certify's ``pack``: inputs that share one call and one generator), and
  shard I of K takes the I-th of K contiguous runs of blocks. Each block's noise comes from a
  generator seeded by (seed, its first idx) alone (``runs.logged``), so the K shards together
  hold exactly the rows of the unsharded run, whatever K (the ``time`` column aside).
* The shard is part of the selection (``runs.Selection(skip, max_count, shard=(I, K))``): a shard's
  log records it in its metadata (``selection.shard = "I/K"`` and ``selection.selected``, the
  number of inputs of the whole selection), with everything else a log records; a resume with
  another shard is refused.
* ``merge_logs(logs, out)``: checks that the logs are shards of one run -- the same metadata but
  for the shard (model, its fingerprint, dataset, split, settings, seed, selection) --, that their
  shards are disjoint (no shard given twice) and complete (all K, each with all its rows, the
  rows those of its shard), and writes ``out`` (rows sorted by idx) with the metadata of the
  unsharded run (no shard): a log that ``analyze``, ``plot`` and a resume read like any other.

Every user error is an ``ArgumentError`` naming the argument (``shard``, ``logs``, ``out``), in
one line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .validation import ArgumentError

Shard = tuple[int, int]  # (I, K): the I-th of K, 1 <= I <= K
SLURM_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                   "SLURM_ARRAY_TASK_STEP")


def check_shard(shard: Any, arg: str = "shard") -> Shard:
    """``shard`` as (I, K) ints with 1 <= I <= K; ArgumentError naming ``arg`` otherwise."""
    ok = (isinstance(shard, (tuple, list)) and len(shard) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in shard))
    if not ok:
        raise ArgumentError(arg, f"{arg} must be (I, K), the I-th of K shards, got {shard!r}")
    i, k = shard
    if k < 1:
        raise ArgumentError(arg, f"{arg}: {i}/{k} has K = {k}; K is the number of shards, >= 1")
    if not 1 <= i <= k:
        raise ArgumentError(arg, f"{arg}: {i}/{k} has I = {i}; I is the shard's number, 1 to {k}")
    return int(i), int(k)


def format_shard(shard: Shard) -> str:
    return f"{shard[0]}/{shard[1]}"


def _slurm(environ: Mapping[str, str]) -> Shard:
    def number(name: str) -> int | None:
        text = environ.get(name)
        if text is None or text == "":
            return None
        try:
            return int(text)
        except ValueError:
            raise ArgumentError("shard", f"shard: {name}={text!r} is not an integer") from None

    task = number("SLURM_ARRAY_TASK_ID")
    if task is None:
        raise ArgumentError("shard", "shard: slurm needs SLURM_ARRAY_TASK_ID, which is not set: run it as a task of "
                                     "a Slurm array (sbatch --array=0-9 ...), or give I/K")
    lo, hi, count, step = (number(f"SLURM_ARRAY_TASK_{n}") for n in ("MIN", "MAX", "COUNT", "STEP"))
    step = step or 1
    if lo is None:
        raise ArgumentError("shard", "shard: slurm needs SLURM_ARRAY_TASK_MIN (the array's first task id), which is "
                                     "not set; give I/K")
    if count is None:
        if hi is None:
            raise ArgumentError("shard", "shard: slurm needs SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MAX, neither "
                                         "is set; give I/K")
        count = (hi - lo) // step + 1
    elif hi is not None and (hi - lo) // step + 1 != count:
        raise ArgumentError("shard", f"shard: the array's {count} tasks are not the range {lo}-{hi}"
                                     f"{f':{step}' if step > 1 else ''} (a list with gaps?); give I/K")
    if (task - lo) % step or task < lo:
        raise ArgumentError("shard", f"shard: task id {task} is not on the array's range {lo}-{hi}:{step}; give I/K")
    return check_shard(((task - lo) // step + 1, count))


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``"I/K"`` (1 <= I <= K) or ``"slurm"`` (this Slurm array task, from ``environ``, default
    ``os.environ``) as (I, K); None for None. ArgumentError("shard") otherwise."""
    if text is None:
        return None
    spec = text.strip()
    if spec.lower() == "slurm":
        return _slurm(os.environ if environ is None else environ)
    parts = spec.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        i, k = int(parts[0]), int(parts[1])
    except ValueError:
        raise ArgumentError("shard", f"shard: {text!r} is neither I/K (e.g. 3/10: the third of 10 shards) nor "
                                     "slurm") from None
    return check_shard((i, k))


def shard_of(indices: Sequence[int], shard: Shard | None, block: int = 1) -> list[int]:
    """The inputs of ``shard`` among ``indices`` (all of them for None): blocks of ``block``
    consecutive inputs, the I-th of K contiguous runs of blocks (see the module doc)."""
    indices = list(indices)
    if shard is None:
        return indices
    i, k = check_shard(shard)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ArgumentError("block", f"block must be an integer >= 1, got {block!r}")
    blocks = (len(indices) + block - 1) // block
    start, stop = (i - 1) * blocks // k, i * blocks // k
    return indices[start * block: stop * block]


# -- merge ---------------------------------------------------------------------------------------------
def _without_shard(meta: dict[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(meta))
    sel = plain.get("selection")
    if isinstance(sel, dict):
        sel.pop("shard", None)
        sel.pop("selected", None)
    return plain


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            d = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if d is not None:
                return d
        return None
    return None if a == b else f"{where}={a!r} there, {b!r} here"


def merge_logs(logs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge the shard logs ``logs`` of one run into ``out`` (see the module doc); returns its path.
    ArgumentError naming ``logs`` (not shards of one run: a log without metadata or shard,
    different settings, a shard given twice, a shard missing or incomplete, rows that are not the
    shard's) or ``out`` (one of the logs, or an existing file that is not this merge)."""
    from .logs import atomic_write_bytes, atomic_write_json, check_output_file, read_rows
    from .runs.logged import meta_path, read_meta

    paths = [Path(p) for p in logs]
    out = Path(out)
    if not paths:
        raise ArgumentError("logs", "logs: give the shard logs to merge")
    check_output_file(out)
    if any(out.resolve() == p.resolve() for p in paths if p.exists()):
        raise ArgumentError("out", f"out: {str(out)!r} is one of the logs to merge; choose another file")
    metas, shards = [], {}
    for p in paths:
        if not p.is_file():
            raise ArgumentError("logs", f"logs: {str(p)!r} does not exist" if not p.exists()
                                else f"logs: {str(p)!r} is not a file")
        if not meta_path(p).is_file():
            raise ArgumentError("logs", f"logs: {str(p)!r} has no {meta_path(p).name}: not a shard of smoothcert certify "
                                        "--shard")
        meta = read_meta(p, "logs")
        sel = meta.get("selection") if isinstance(meta.get("selection"), dict) else {}
        if not isinstance(sel.get("shard"), str):
            raise ArgumentError("logs", f"logs: {str(p)!r} is not a shard (its metadata records no selection.shard); "
                                        "only the logs of --shard I/K runs are merged")
        shard = parse_shard(sel["shard"])
        if shard in shards:
            raise ArgumentError("logs", f"logs: shard {sel['shard']} is given twice ({str(shards[shard][0])!r} and "
                                        f"{str(p)!r}); the shards must be disjoint")
        shards[shard] = (p, meta)
        metas.append(meta)
    first_path, first = paths[0], metas[0]
    base = _without_shard(first)
    for p, meta in zip(paths[1:], metas[1:]):
        diff = _first_difference(base, _without_shard(meta))
        if diff is not None:
            raise ArgumentError("logs", f"logs: {str(p)!r} and {str(first_path)!r} are not shards of one run "
                                        f"(other settings: {diff})")
    counts = {k for _, k in shards}
    if len(counts) > 1:
        raise ArgumentError("logs", f"logs: the shards split the inputs in different numbers of parts "
                                    f"({', '.join(sorted(format_shard(s) for s in shards))})")
    k = counts.pop()
    missing = [f"{i}/{k}" for i in range(1, k + 1) if (i, k) not in shards]
    if missing:
        raise ArgumentError("logs", f"logs: shard{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])}"
                                    f"{' ...' if len(missing) > 5 else ''} missing; the {k} shards must all be given")
    sel = first["selection"]
    selected = sel.get("selected")
    skip, key = sel.get("skip"), first.get("kind")
    block = (first.get(key) or {}).get("pack", 1) if isinstance(first.get(key), dict) else 1
    if not isinstance(selected, int) or not isinstance(skip, int):
        raise ArgumentError("logs", f"logs: {str(first_path)!r} records no selection.selected and skip")
    everything = [j * skip for j in range(selected)]  # Selection(skip, max).indices: the first `selected` multiples
    columns = tuple(first.get("columns") or ())
    rows: list[list[str]] = []
    for shard in sorted(shards):
        p, meta = shards[shard]
        got = read_rows(p, columns, f"{key} shard", "logs")
        want = shard_of(everything, shard, block)
        have = [int(r[0]) for r in got]
        if sorted(have) != want:
            extra = sorted(set(have) - set(want))
            if extra:
                raise ArgumentError("logs", f"logs: {str(p)!r} holds idx {extra[0]}, which is not in shard "
                                            f"{format_shard(shard)}'s inputs")
            raise ArgumentError("logs", f"logs: {str(p)!r} is incomplete: shard {format_shard(shard)} has "
                                        f"{len(have)} of its {len(want)} rows; rerun it (it resumes), then merge")
        rows += got
    rows.sort(key=lambda r: int(r[0]))
    merged = _without_shard(first)
    if out.exists():
        previous = read_meta(out, "out") if meta_path(out).is_file() else None
        if previous != merged:
            raise ArgumentError("out", f"out: {str(out)!r} exists and is not this merge; choose another file or remove "
                                       "it")
    text = "\t".join(columns) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    atomic_write_bytes(out, text.encode())
    atomic_write_json(merged, meta_path(out))
    return out


__all__ = ["SLURM_VARIABLES", "Shard", "check_shard", "format_shard", "merge_logs", "parse_shard", "shard_of"]
