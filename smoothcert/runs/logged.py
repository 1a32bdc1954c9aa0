"""The one resumable logged runner: certify, predict, attack and certificate-check logs all go
through ``run_job``. A caller describes its work as a ``LoggedJob`` (the log's columns and kind,
the settings it records and checks, the per-batch work function, the selection) and
``run_job(job, dataset, out, device=..., seed=...)`` runs it; ``run_logged`` is the keyword form
of the second release, kept for its callers.

It owns, for a TSV log ``out`` (one flushed row per input: ``idx label ... time``):

* **The lock.** An exclusive ``fcntl.flock`` on ``<out>.lock`` for the whole run (``LogLock``):
  a second writer is refused with an ArgumentError naming the holder's pid. Under torchrun rank
  0 holds it, and the other ranks start only once it is held.
* **Resume.** Rows already in ``out`` are skipped; a torn last line (no newline: a kill) is
  dropped. The whole log is checked before any work: a line with a wrong number of fields or a
  value not of its column's type, a repeated idx, or an idx outside this run's selection is an
  error naming the file and line (``logs.read_rows``). Work goes in batches (``per_batch``
  inputs, e.g. the ``pack`` of certify); a batch cut short by a kill is recomputed whole and
  only its missing rows are written, so nothing is duplicated or lost.
* **The metadata** ``<out>.meta.json``, written by the library (so a Python call leaves what
  ``smoothcert analyze`` and ``check-certificates`` read): the caller's provenance (model path,
  training config), ``kind``, ``columns``, ``dataset``/``split``, the settings under the key
  ``key`` (e.g. ``"certify": {"sigma": ..., "N0": ..., "N": ...}``), ``seed`` and ``selection``.
* **The settings check.** A resume whose settings differ from the recorded ones (any key both
  record), or whose dataset or split differs, is refused with one line naming the setting.
  So is another ``skip`` (the selection: a log never mixes two); a larger ``max_count`` extends
  the log, one that would leave logged rows out is refused. A corrupt ``<out>.meta.json`` is
  one line naming it (``read_meta``).
  Settings in ``recorded`` (batch sizes, AMP: speed, not meaning) are written but not checked.
* **The seed.** ``seed=None`` on a fresh log means 0 (the default everywhere, as the CLI's
  ``--seed``: reruns are identical); a resume reuses the recorded seed, so every row of a log
  comes from one seed (an explicit different seed is refused). Any seed in [0, 2**63 - 1]. Batch ``b``
  draws from a generator seeded by ``derived_seed(seed, b[0])``: a resumed or rerun log is
  identical to an uninterrupted one.
* **The process split.** Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r takes every
  WORLD_SIZE-th selected input into the shard ``out.rank{r}``; rank 0 merges the shards into
  ``out`` (sorted by idx, atomically) when every rank is done. A rank that fails (a bad input,
  an error in ``step``) stops its shard and reports the error where the merge would be, so every
  rank raises it instead of waiting for a merge that cannot come. Shards left by a failed or killed torchrun run are merged into
  ``out`` at the start of the next run.
* **Errors while writing** (a full disk) are one line naming the file (``logs.OutputError``);
  the lock is freed on every path out, and the rows written so far resume exactly.
* **Progress** (``progress=True``): ``progress.Progress``, a bar on a terminal, else a line at
  most every ``progress.INTERVAL`` seconds.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from ..logs import (LogLock, TSVLog, atomic_write_bytes, atomic_write_json, check_output_file, numbered_rows,
                   read_rows)
from ..progress import Progress
from ..processes import ProcessGroup
from ..seeding import SEED_STRIDE, check_seed, derive_seed
from ..shards import check_shard, format_shard, shard_of
from ..validation import ArgumentError, check_int


# a batch's work: (indices, xs, labels, generator) -> one row tail (the columns between label and time) per input
Step = Callable[[list[int], torch.Tensor, torch.Tensor, torch.Generator], list[list[Any]]]
# the work over all inputs at once (a pool across inputs): (indices, dataset, seed, device) -> for each
# index in that order (idx, label, row tail, seconds)
Stream = Callable[[list[int], Any, int, torch.device], Iterator[tuple[int, int, list[Any], float]]]


def derived_seed(seed: int, index: int) -> int:
    """The generator seed for item ``index`` (an input's idx, an epoch) of a run seeded by ``seed``:
    ``seeding.derive_seed`` (the one seeding rule; valid for every seed in [0, 2**63 - 1])."""
    return derive_seed(seed, index)


@dataclass(frozen=True)
class Selection:
    """Which inputs to process: every ``skip``-th index from 0, the first ``max_count`` of those
    (``max_count`` counts inputs, not dataset indices; -1 means all); with ``shard`` (I, K), only
    the I-th of K disjoint slices of them (``smoothcert.shards.shard_of``, in blocks of the run's
    ``per_batch``, so that the K shards' rows are the unsharded run's)."""

    skip: int = 1
    max_count: int = -1
    shard: tuple[int, int] | None = None

    def indices(self, length: int, block: int = 1) -> list[int]:
        """The selected indices of a dataset of ``length`` inputs (the shard's, in blocks of ``block``)."""
        idx = self.selected(length)
        return idx if self.shard is None else shard_of(idx, self.shard, block)

    def selected(self, length: int) -> list[int]:
        """The indices ``skip`` and ``max_count`` select, all shards together."""
        check_int("skip", self.skip, 1)
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int) or \
                self.max_count < -1 or self.max_count == 0:
            raise ArgumentError("max_count", f"max_count must be -1 (all) or >= 1, got {self.max_count!r}")
        if self.shard is not None:
            check_shard(self.shard)
        idx = list(range(0, length, self.skip))
        return idx if self.max_count == -1 else idx[: self.max_count]

    def record(self, length: int) -> dict[str, Any]:
        """The metadata's ``selection``: skip and max; for a shard also ``shard`` ("I/K") and
        ``selected`` (the inputs of all shards together, which ``shards.merge_logs`` checks)."""
        sel: dict[str, Any] = {"skip": self.skip, "max": self.max_count}
        if self.shard is not None:
            sel.update({"shard": format_shard(self.shard), "selected": len(self.selected(length))})
        return sel


@dataclass(frozen=True)
class RunReport:
    """What a logged run did: ``rows`` in the log now, ``written`` by this call in ``seconds``
    of work, drawing ``samples`` noise samples (0 where that means nothing), on process ``rank``
    (under torchrun only rank 0 counts ``rows``). ``os.fspath`` gives the log's path, so a
    report can stand where the path is expected."""

    path: Path
    rows: int
    written: int
    seconds: float
    samples: int
    rank: int = 0

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def meta_path(out: str | os.PathLike) -> Path:
    """The metadata file of the log ``out``."""
    return Path(str(out) + ".meta.json")


def read_meta(out: str | os.PathLike, arg: str = "out") -> dict[str, Any]:
    """The metadata of the log ``out`` (``meta_path``); ArgumentError naming ``arg`` and the file,
    in one line, if it is not valid JSON or not a JSON object."""
    mp = meta_path(out)
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno} column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise ArgumentError(arg, f"{arg}: {str(mp)!r} is not valid JSON{where}; restore it or choose another "
                                 "file") from None
    if not isinstance(meta, dict):
        raise ArgumentError(arg, f"{arg}: {str(mp)!r} is not a JSON object; restore it or choose another file")
    return meta


def _plain(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(obj))


def _arg_name(setting: str, names: dict[str, str]) -> str:
    return names.get(setting, setting)


def _difference(name: str, old: Any, new: Any) -> tuple[str, Any, Any] | None:
    """(dotted name, old, new) of the first leaf where two JSON values differ, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            diff = _difference(f"{name}.{k}", old.get(k), new.get(k))
            if diff is not None:
                return diff
        return None
    return None if old == new else (name, old, new)


# Settings the first release did not record, with the only value it could have used: a resume of
# such a log with another noise, norm, bound or as a sequential run is refused like any other change.
LEGACY_DEFAULTS: dict[str, Any] = {"noise": "gaussian", "norm": "l2", "bound": "one-sided", "sequential": False}


def check_resume(out: Path, old: dict[str, Any], key: str, settings: dict[str, Any], identity: dict[str, Any],
                 seed: int | None, names: dict[str, str] | None = None) -> int | None:
    """ArgumentError naming the first setting (or dataset/split, or seed) that differs from the
    recorded metadata ``old``; returns the seed to use (the recorded one when ``seed`` is None).
    ``names`` maps recorded setting names to the library argument names (``"N": "n"``)."""
    names = names or {}
    recorded = next((old[k] for k in (key, "settings") if isinstance(old.get(k), dict)), None)  # "settings":
    # where the first release's attack runner kept them
    if recorded is None:
        raise ArgumentError("out", f"out: {str(out)!r} holds rows but its metadata records no {key} settings "
                                   "(another kind of log?); choose another file")
    recorded = {**LEGACY_DEFAULTS, **recorded}  # first-release logs: Gaussian noise, L2, one-sided
    pairs = [(k, recorded, settings) for k in settings] + [(k, old, identity) for k in identity]
    for k, old_side, new_side in pairs:
        diff = _difference(k, old_side[k], new_side[k]) if k in old_side else None
        if diff is not None:
            arg = _arg_name(k, names)
            where, was, now = diff
            raise ArgumentError(arg, f"{arg}: {str(out)!r} holds rows made with other settings ({where}={was!r}, "
                                     f"this run has {where}={now!r}); resume with the same settings or choose "
                                     "another file")
    old_seed = old.get("seed")
    if seed is not None and old_seed is not None and int(seed) != old_seed:
        raise ArgumentError("seed", f"seed: {str(out)!r} holds rows made with seed {old_seed}, this run has seed "
                                    f"{seed}; leave the seed out to reuse the recorded one, or choose another file")
    return old_seed if seed is None else seed


def _shards(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + ".rank*"))


def _merge(out: Path, columns: Sequence[str], kind: str, extra: Sequence[Path]) -> int:
    """Rows of ``out`` and of the shard files ``extra`` into ``out`` (sorted by idx, first
    copy kept, atomically); the shards are removed. Returns the number of rows."""
    rows: dict[int, list[str]] = {}
    for p in [out, *extra]:
        if p.exists() and p.stat().st_size > 0:
            for r in read_rows(p, columns, kind):
                rows.setdefault(int(r[0]), r)
    text = "\t".join(columns) + "\n" + "".join("\t".join(rows[i]) + "\n" for i in sorted(rows))
    atomic_write_bytes(out, text.encode())
    for p in extra:
        p.unlink(missing_ok=True)
    return len(rows)


def _remove_temporaries(out: Path) -> None:
    """Delete the temp files that killed atomic writes of ``out`` or its metadata left behind
    (``tempfile.mkstemp`` names: ``.NAME.XXXXXXXX.tmp``)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}(\.meta\.json)?\.[a-z0-9_]{{8}}\.tmp")
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        if pattern.fullmatch(tmp.name):
            tmp.unlink(missing_ok=True)


def _error_payload(e: BaseException) -> tuple[str, str, str]:
    return (type(e).__name__, getattr(e, "arg", ""), str(e))


def _raise_payload(payload: tuple[str, str, str]) -> None:
    """Raise again, on this rank, an error another rank sent as ``_error_payload``."""
    name, arg, msg = payload
    if arg:
        raise ArgumentError(arg, msg)
    raise ValueError(msg) if name == "ValueError" else RuntimeError(f"{name}: {msg}")


def _count(max_count: Any) -> str:
    return "all" if max_count == -1 else str(max_count)


def _check_selection(out: Path, old: dict[str, Any], selection: Selection | None, done: set[int],
                     indices: Sequence[int], columns: Sequence[str], kind: str) -> None:
    """ArgumentError unless the rows already in ``out`` (their idx: ``done``) belong to this run's
    selection, so that a log never mixes two selections and its metadata describes all its rows:
    the recorded ``skip`` must be this run's, and every idx must be among ``indices`` (a larger
    ``max_count`` extends the log; one that would leave logged rows out is refused naming
    ``max_count``). One line naming the flag's argument, the file, the line and both values."""
    recorded = old.get("selection") if isinstance(old.get("selection"), dict) else {}
    shard = None if selection is None or selection.shard is None else format_shard(selection.shard)
    if selection is not None and recorded.get("shard") != shard:
        was, now = recorded.get("shard") or "none (all inputs)", shard or "none (all inputs)"
        raise ArgumentError("shard", f"shard: {str(out)!r} holds rows of shard {was}, this run is shard {now}; "
                                     "resume with the same shard or choose another file")
    if selection is not None and "skip" in recorded and recorded["skip"] != selection.skip:
        raise ArgumentError("skip", f"skip: {str(out)!r} holds rows selected with skip={recorded['skip']}, this run "
                                    f"has skip={selection.skip}; resume with the same selection or choose another "
                                    "file")
    wanted = set(indices)
    if done <= wanted:
        return
    line, i = min((k, int(cells[0])) for k, cells in numbered_rows(out, columns, kind) if int(cells[0]) not in wanted)
    was = recorded.get("max")
    if selection is not None and was is not None and was != selection.max_count:
        raise ArgumentError("max_count", f"max_count: {str(out)!r} line {line} holds idx {i}, which this run's "
                                         f"selection leaves out (the log was made with max={_count(was)}, this run "
                                         f"has max={_count(selection.max_count)}); resume with the same or a larger "
                                         "max, or choose another file")
    raise ArgumentError("out", f"out: {str(out)!r} line {line} holds idx {i}, which is not one of this run's "
                               f"{len(indices)} selected inputs; resume with the selection that made the log or "
                               "choose another file")


@dataclass(frozen=True)
class LoggedJob:
    """What one logged run computes and records (see the module doc for how ``run_job`` runs it).

    * ``key``: the log's kind in its metadata (``"kind": key``) and the key its settings are
      recorded under (``"certify"``, ``"predict"``, ``"attack"``, ``"check"``); ``kind`` names the
      log in error messages (default: ``key``).
    * ``columns``: the log's header, ``idx label ... time`` and optional extra trailing columns
      after ``time`` (e.g. ``n_used``).
    * ``work``: a batch's work (``Step``): (indices, xs, labels, generator) -> per input the row's
      values other than idx, label and time, in column order (those of the trailing columns last).
    * ``settings``: checked against the metadata on resume; ``recorded``: written beside them
      but not checked (batch sizes, AMP: speed, not meaning); ``names`` maps a setting's name to
      the argument named in error messages (``"N": "n"``).
    * ``selection`` (recorded, checked on resume) and ``indices``, the inputs to process
      (default: ``selection.indices(len(dataset))``; a caller may choose them otherwise, e.g. the
      certified rows of a certify log), ``per_batch`` at a time.
    * ``stream`` (instead of batches of ``work``): the work over all the inputs left at once,
      for work that does not go batch by batch (sequential certification's pool across inputs):
      (indices, dataset, seed, device) -> an iterator of (idx, label, row tail, seconds) for each
      index in the order given; the runner writes each row as it comes (``per_batch`` must be 1).
    * ``samples_per_input``: noise samples per input, for the report's samples/s (0: none);
      ``meta``: the caller's provenance fields of the metadata (the runner's own keys win).
    """

    key: str
    columns: tuple[str, ...]
    work: Step
    settings: Mapping[str, Any]
    recorded: Mapping[str, Any] = field(default_factory=dict)
    selection: Selection = Selection()
    indices: Sequence[int] | None = None
    per_batch: int = 1
    samples_per_input: int = 0
    names: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] | None = None
    kind: str = ""
    stream: Stream | None = None

    @property
    def description(self) -> str:
        """The log's name in error messages (``kind``, default ``key``)."""
        return self.kind or self.key

    @property
    def trailing(self) -> int:
        """How many columns follow ``time`` (their values are the last of each row's tail)."""
        if "time" not in self.columns:
            raise ValueError(f"a logged run's columns must include time, got {list(self.columns)}")
        return len(self.columns) - 1 - list(self.columns).index("time")


def run_logged(dataset: Any, out: str | os.PathLike, columns: Sequence[str], *, kind: str, key: str,
               indices: list[int], per_batch: int, step: Step, device: torch.device, seed: int | None,
               settings: dict[str, Any], recorded: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
               selection: Selection | None = None, samples_per_input: int = 0, names: dict[str, str] | None = None,
               progress: bool = False, trailing: int = 0) -> RunReport:
    """The keyword form of ``run_job`` (kept for callers of the second release): builds the
    ``LoggedJob`` and runs it. ``trailing`` must agree with ``columns`` (the columns after time)."""
    job = LoggedJob(key=key, kind=kind, columns=tuple(columns), work=step, settings=settings,
                    recorded=recorded or {}, selection=selection or Selection(), indices=list(indices),
                    per_batch=per_batch, samples_per_input=samples_per_input, names=names or {}, meta=meta)
    if trailing != job.trailing:
        raise ValueError(f"trailing={trailing} but {job.trailing} column(s) follow time in {list(columns)}")
    return run_job(job, dataset, out, device=device, seed=seed, progress=progress)


def run_job(job: LoggedJob, dataset: Any, out: str | os.PathLike, *, device: torch.device,
            seed: int | None = None, progress: bool = False) -> RunReport:
    """Run ``job`` over its inputs of ``dataset`` on ``device`` into the log ``out`` (rows: idx,
    label, the work's values, seconds per input, with the values of the columns after ``time``
    last); see the module doc for the lock, resume, metadata, settings check, seed and process
    split."""
    out = Path(out)
    check_output_file(out)
    per_batch = check_int("per_batch", job.per_batch, 1)
    columns, kind, key, step, trailing = job.columns, job.description, job.key, job.work, job.trailing
    if seed is not None:  # every argument is checked before a file is touched
        seed = check_seed(seed)
    settings = _plain(dict(job.settings))
    selection = job.selection
    indices = list(selection.indices(len(dataset), per_batch) if job.indices is None else job.indices)
    identity = _plain({"dataset": getattr(dataset, "name", None) or None,
                       "split": getattr(dataset, "split", None)})
    ranks = ProcessGroup(device)  # under torchrun: this rank's device must be its own GPU (processes.py)
    lock: LogLock | None = None
    log: TSVLog | None = None
    try:
        payload: Any = None
        if ranks.rank == 0:
            try:
                lock = LogLock(out).acquire()
                _remove_temporaries(out)
                log = TSVLog(out, columns, kind=kind)
                leftovers = _shards(out)
                if leftovers:  # a torchrun run killed before its merge: its rows are valid, keep them
                    log.close()
                    _merge(out, columns, kind, leftovers)
                    log = TSVLog(out, columns, kind=kind)
                mp = meta_path(out)
                old = read_meta(out) if log.done and mp.is_file() else None
                if log.done and old is None:
                    raise ArgumentError("out", f"out: {str(out)!r} holds rows but no {mp.name} to check the settings "
                                               "against; choose another file")
                if log.done:  # the whole log is checked (TSVLog) before any work: settings, then selection
                    seed = check_resume(out, old, key, settings, identity, seed, dict(job.names))
                    _check_selection(out, old, selection, log.done, indices, columns, kind)
                seed = 0 if seed is None else check_seed(seed)
                atomic_write_json(_plain({**(job.meta or {}), "kind": key, "columns": list(columns), **identity,
                                          key: {**settings, **job.recorded}, "seed": seed,
                                          "selection": selection.record(len(dataset))}),
                                  mp)
                payload = ("ok", seed, sorted(log.done))
            except Exception as e:  # noqa: BLE001  (every rank must stop, not only rank 0)
                if ranks.world == 1:
                    raise
                payload = ("error", _error_payload(e), None)
                ranks.broadcast(payload)
                raise
        status, seed_or_error, done_list = ranks.broadcast(payload)
        if status == "error":
            _raise_payload(seed_or_error)
        seed = int(seed_or_error)
        done = set(done_list)
        mine = indices
        if ranks.world > 1:
            if log is not None:
                log.close()
            log = TSVLog(out.with_name(out.name + f".rank{ranks.rank}"), columns, kind=kind)
            mine = indices[ranks.rank::ranks.world]
        assert log is not None
        batches = [mine[k:k + per_batch] for k in range(0, len(mine), per_batch)]
        batches = [b for b in batches if not all(i in done for i in b)]
        written, work = 0, 0.0
        failure: Exception | None = None
        try:
            with Progress(sum(map(len, batches)), out.name if ranks.world == 1 else f"{out.name} rank {ranks.rank}",
                          "input", enabled=progress) as bar:
                if job.stream is not None:  # the inputs left, in selection order, as one stream
                    if per_batch != 1:
                        raise ValueError("a LoggedJob with a stream takes per_batch=1")
                    for i, y, tail, dt in job.stream([b[0] for b in batches], dataset, seed, device):
                        cut = len(tail) - trailing
                        log.write([i, y, *tail[:cut], round(dt, 4), *tail[cut:]])
                        written += 1
                        work += dt
                        bar.update(1)
                    batches = []
                for b in batches:
                    xs = torch.stack([dataset[i][0] for i in b]).to(device)
                    ys = torch.tensor([int(dataset[i][1]) for i in b], device=device)
                    gen = torch.Generator(device=device).manual_seed(derived_seed(seed, b[0]))
                    t0 = time.perf_counter()
                    try:
                        tails = step(b, xs, ys, gen)
                    except ArgumentError as e:  # a bad input: name it by its dataset index
                        if getattr(e, "index", None) is None:
                            raise
                        raise ArgumentError("dataset", f"dataset: input idx {b[e.index]} has non-finite values "
                                                       "(NaN or inf); no certificate is given for it") from None
                    dt = time.perf_counter() - t0
                    work += dt
                    for i, y, tail in zip(b, ys.tolist(), tails):
                        if i not in done:  # a batch cut short by a kill is recomputed whole, logged once
                            cut = len(tail) - trailing
                            log.write([i, y, *tail[:cut], round(dt / len(b), 4), *tail[cut:]])
                            written += 1
                    bar.update(len(b), f"{job.samples_per_input * len(b) / max(dt, 1e-9):,.0f} samples/s"
                               if job.samples_per_input else None)
        except Exception as e:  # noqa: BLE001  (under torchrun every rank learns of it, none waits forever)
            if ranks.world == 1:
                raise
            failure = e
        log.close()
        log = None
        if ranks.world > 1:
            # each rank's outcome reaches all (this is also the barrier before the merge); after a
            # failure nothing is merged: the shards keep every finished row for the next run
            outcomes = ranks.all_gather(None if failure is None else _error_payload(failure))
            if failure is not None:
                raise failure
            failed = next(((r, p) for r, p in enumerate(outcomes) if p is not None), None)
            if failed is not None:
                rank, (name, arg, msg) = failed
                _raise_payload((name, arg, f"{msg} (on rank {rank}; the rows written so far are kept)"))
            if ranks.rank == 0:
                _merge(out, columns, kind, [out.with_name(out.name + f".rank{r}") for r in range(ranks.world)])
            ranks.barrier()
        rows = len(read_rows(out, columns, kind)) if ranks.rank == 0 else 0
        return RunReport(out, rows, written, work, written * job.samples_per_input, ranks.rank)
    finally:  # each step runs even if one before it fails (a full disk): the lock is always freed
        try:
            if log is not None:
                log.close()
        finally:
            try:
                if lock is not None:
                    lock.release()
            finally:
                ranks.close()


__all__ = ["LoggedJob", "RunReport", "SEED_STRIDE", "Selection", "Step", "Stream", "check_resume", "derived_seed",
           "meta_path", "read_meta", "run_job", "run_logged"]
