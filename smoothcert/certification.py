"""Certify or predict a whole dataset split with a smoothed classifier, into a resumable TSV log.

``certify_dataset`` / ``predict_dataset`` are the library calls behind ``smoothcert certify`` and
``smoothcert predict``; both run on the one logged runner (``smoothcert.runs.logged``), which owns the
lock, resume, metadata, settings check, seed and torchrun split. Here:

* One flushed line per input (``idx label predict radius correct time``, Cohen et al.'s format;
  ``time`` in seconds per input), then the trailing columns ``nA n`` (the estimation count of the
  selected class out of n: the estimated pA is nA / n; ``analysis.pa_summary``) -- a sequential
  log has ``n_used`` instead, and a log written before the counts existed resumes in its own
  columns (``logs.resume_columns``), so one file never mixes two formats. Radii are rounded DOWN
  to 4 decimals (``floor_decimal``), so a logged radius never overstates the certificate.
* With a ``seed``, the noise for input ``idx`` comes from a generator seeded by (seed, idx)
  alone, so a resumed or split run writes exactly what an uninterrupted one does. With
  ``pack`` > 1, ``pack`` consecutive inputs share one call (their samples share forward
  batches) and one generator seeded by (seed, first idx of the pack): reruns and resumes are
  still identical, but results then depend on the packing (and on the number of ranks).
  A sequential run with ``pool`` packs across inputs instead (``certify_dataset``): each input
  keeps its own generator seeded by (seed, idx), so its rows are those of the unpacked run.
* The metadata ``<out>.meta.json`` records the model (its run directory and training config
  when it came from ``load_model``; always a SHA-256 of its weights), the dataset and split,
  the settings under ``"certify"`` / ``"predict"`` (sigma, noise, N0, N, alpha, pack, the
  ``options`` passed to Smooth -- for certify always the checked ``norm`` and ``bound`` --, and
  the batch size and AMP settings, which a resume may change) and the seed. A resume with
  other settings is refused naming the setting.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import replace
from typing import Any, Iterator

import numpy as np
import torch

from .data import ImageDataset
from .logs import CERTIFY_COLUMNS, COUNT_COLUMNS, PREDICT_COLUMNS, floor_decimal, read_rows, resume_columns
from .procedures import PackedResult, certify_sequential_packed
from .runs.logged import LoggedJob, RunReport, Selection, derived_seed, meta_path, read_meta, run_job
from .runs.loading import model_fingerprint, provenance
from .configs import CertifyConfig
from .sequential import DEFAULT_SEQUENCE, check_sequence
from .sampling import Sampler
from .smoothing import Smooth
from .validation import ArgumentError, check_alpha, check_int

RADIUS_PLACES = 4  # decimals of a logged radius (rounded down)
_POSITIONAL = ("n0", "n", "alpha", "batch_size")  # certify_dataset's positional settings (Cohen et al.'s order)
# recorded setting -> the argument of certify_dataset it comes from (for error messages)
_NAMES = {"N0": "n0", "N": "n", "model_sha256": "model", "batch": "batch_size"}


def _check_sampling(alpha: float, **counts: int) -> None:
    """Fail before any file is touched: counts must be integers >= 1, alpha in (0, 1)."""
    for name, v in counts.items():
        check_int(name, v, 1)
    check_alpha(alpha)


def _check_call(method: Any, options: dict[str, Any], what: str, selection: Any, meta: Any) -> None:
    """Fail before any file is touched: every option must be a keyword ``method`` (the Smooth
    call each batch makes) takes, ``selection`` a Selection, ``meta`` None or a dict (the seed
    is checked by the runner, also before any file). ArgumentError naming the argument."""
    params = inspect.signature(method).parameters.values()
    accepted = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    for name in options:
        if name not in accepted and not takes_any:
            raise ArgumentError(name, f"{name}: not an option of {what} (its options: "
                                      f"{', '.join(accepted) or 'none'})")
    if not isinstance(selection, Selection):
        raise ArgumentError("selection", f"selection must be a Selection, got {type(selection).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise ArgumentError("meta", f"meta must be a dict of metadata fields, got {type(meta).__name__}")


def _describe(smooth: Smooth, meta: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(provenance, checked settings, recorded-only settings) of a smoothed classifier."""
    model = smooth.base_classifier
    source = {**(provenance(model) or {}), **(meta or {})}
    noise = getattr(smooth, "noise", None)
    settings: dict[str, Any] = {"sigma": float(smooth.sigma), "noise": getattr(noise, "name", "gaussian")}
    fingerprint = model_fingerprint(model)
    if fingerprint is not None:
        settings["model_sha256"] = fingerprint
    amp = getattr(smooth, "amp_dtype", None)
    recorded = {"amp": str(amp).replace("torch.", "") if amp is not None else None,
                "channels_last": getattr(smooth, "channels_last", None)}
    return source, settings, recorded


def _counts_of(smooth: Any) -> bool:
    """Whether ``smooth`` gives the counts of its CERTIFY: its ``certify_batch`` comes with a
    ``certify_counts_batch`` of the same class (Smooth's). An object whose ``certify_batch`` is its
    own (a subclass overriding it, a stand-in) certifies as it says, in Cohen et al.'s columns."""
    owner = next((k for k in type(smooth).__mro__ if "certify_batch" in vars(k)), None)
    return owner is not None and "certify_counts_batch" in vars(owner)


def _certify_config(args: tuple[Any, ...], config: CertifyConfig | None, settings: dict[str, Any]) -> CertifyConfig:
    """The CertifyConfig of a ``certify_dataset`` call: ``config`` (or a CertifyConfig as the first
    positional argument) with the keyword ``settings``; positional values are n0, n, alpha,
    batch_size, in Cohen et al.'s order."""
    if args and isinstance(args[0], CertifyConfig):
        if config is not None:
            raise TypeError("certify_dataset got two configs (positional and config=)")
        config, args = args[0], args[1:]
    if len(args) > len(_POSITIONAL):
        raise TypeError(f"certify_dataset takes at most {len(_POSITIONAL)} positional settings "
                        f"({', '.join(_POSITIONAL)}), got {len(args)}")
    for name, value in zip(_POSITIONAL, args):
        if name in settings:
            raise TypeError(f"certify_dataset got multiple values for argument {name!r}")
        settings[name] = value
    return CertifyConfig.build(config, settings)


def _check_classifier(config: CertifyConfig, settings: dict[str, Any]) -> None:
    """ArgumentError naming noise or sigma if the config names another than the smoothed classifier's."""
    for name in ("noise", "sigma"):
        wanted = getattr(config, name)
        if wanted is not None and wanted != settings[name]:
            raise ArgumentError(name, f"{name}: the config certifies with {name} {wanted!r}, the smoothed classifier "
                                      f"has {settings[name]!r}; build Smooth with it, or leave {name} out of the "
                                      "config")


def _check_second_release_log(out: str | os.PathLike, sequence: str) -> None:
    """A sequential log written before issue 26 records no ``sequence``: its rows came from the
    "cp-geometric" sequence, so resuming it with another is refused (nothing mixed)."""
    if not meta_path(out).is_file():
        return
    entry = read_meta(out).get("certify")
    if isinstance(entry, dict) and entry.get("sequential") and "sequence" not in entry and sequence != "cp-geometric":
        raise ArgumentError("sequence", f"sequence: {str(out)!r} holds rows of a sequential run that records no "
                                        "sequence (the second release's, cp-geometric), this run has "
                                        f"sequence={sequence!r}; resume with sequence='cp-geometric' or choose "
                                        "another file")


def certify_dataset(
    smooth: Smooth,
    dataset: ImageDataset,
    out: str | os.PathLike,
    *args: Any,
    config: CertifyConfig | None = None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
    **settings: Any,
) -> RunReport:
    """CERTIFY (Cohen et al., 2019) every selected input of ``dataset`` into the TSV log ``out``
    (see the module doc) with the settings ``config`` (a ``CertifyConfig``; also the fourth
    positional argument: ``certify_dataset(smooth, ds, out, config)``), or given as keywords --
    ``n0=100, n=100_000, alpha=0.001, batch_size=1000`` (also positionally, in this order),
    ``selection``, ``seed``, ``pack``, ``norm``, ``bound``, ``sequential``, ``radii``, ``tol``,
    ``pool`` --;
    keywords given with a config change it, and keywords that are not CertifyConfig fields are
    options of the Smooth call (recorded in the settings). ``pack`` inputs share each call to
    ``Smooth.certify_batch`` (their samples share forward batches), which keeps a large device
    busy when the model is small and ``n`` is small. ``meta`` adds caller fields to the metadata
    (the runner's own keys win). Returns a ``RunReport`` (usable as the log's path).

    ``sequential=True``: ``Smooth.certify_sequential_batch`` with ``n`` as n_max, the grid
    ``radii`` (the logged radius is then the certified grid level, a lower bound on the radius)
    or the tolerance ``tol``, and the confidence sequence ``sequence`` (an option of that call,
    default ``sequential.DEFAULT_SEQUENCE``, always recorded; a log from before it was an option
    resumes only with ``sequence="cp-geometric"``); the log gets one more trailing column
    ``n_used`` (estimation samples drawn) and the report counts the samples actually drawn.

    ``pool=P`` (sequential only, ``pack`` 1; ``procedures.certify_sequential_packed``): a pool of
    up to P active inputs whose samples fill each forward batch of ``batch_size`` rows (split
    across the active inputs by what each still needs up to its next look; an input that stops
    frees its rows for the next input of the selection), so that the wall clock follows the
    samples. *Validity is unaffected*: the looks of each input are its confidence sequence's
    look schedule, fixed in advance, and the draws it sees are i.i.d. noise from its generator
    whatever batch they share, so every input's statistics are exactly the stopping rule's.
    *What a seeded rerun reproduces*: input idx draws from its own generator seeded by (seed,
    idx) (``seeding.derive_seed``, as with ``pack`` 1), in the same blocks of ``batch_size`` rows
    as when certified alone, so its noise does not depend on the packing, the order in which
    inputs join the pool, the pool size or a resume: a rerun with the same seed, selection and
    ``batch_size`` writes the same log as the unpooled run, and a resume from a partial log (the
    pool starts from the first unlogged idx; finished rows are buffered and written in idx
    order, so a kill loses only the buffered rows, recomputed identically) writes what an
    uninterrupted run writes -- up to the float rounding of a forward pass in another batch,
    which can break an exact tie of logits differently. ``pool`` is recorded, not checked (speed
    only); the ``time`` column is each input's share of the wall clock (each forward batch's time
    split by the rows it drew)."""
    config = _certify_config(args, config, settings)  # every argument is checked before any file is touched
    sequential = config.sequential
    options = config.call_options()
    if sequential:  # the confidence sequence, always recorded (a resume compares it)
        options["sequence"] = check_sequence(options.get("sequence", DEFAULT_SEQUENCE))
        _check_second_release_log(out, options["sequence"])
    _check_call(smooth.certify_sequential_batch if sequential else smooth.certify_batch, options,
                "sequential certify" if sequential else "certify", config.selection, meta)
    norm, bound = smooth.check_options(config.norm, config.bound, sequential=sequential)
    source, settings, recorded = _describe(smooth, meta)
    _check_classifier(config, settings)
    # the norm and bound certified, always (norm None is the noise's natural norm), so a resume
    # compares what was certified, not how it was asked for; logs from before several noises
    # existed record neither and resume as Gaussian L2 one-sided runs (runs.logged.LEGACY_DEFAULTS)
    settings.update(config.settings(norm, bound))
    if sequential:
        settings["sequence"] = options["sequence"]
    n0, n, alpha, batch_size = config.n0, config.n, config.alpha, config.batch_size
    radii = None if config.radii is None else np.asarray(config.radii, dtype=np.float64)
    drawn = [0]

    if sequential:
        columns = CERTIFY_COLUMNS + ("n_used",)
    else:  # with the counts nA, n; a log written before them resumes in its own columns
        counted = _counts_of(smooth)
        columns = resume_columns(out, CERTIFY_COLUMNS + COUNT_COLUMNS, CERTIFY_COLUMNS) if counted else CERTIFY_COLUMNS
        if not counted and resume_columns(out, CERTIFY_COLUMNS, CERTIFY_COLUMNS + COUNT_COLUMNS) != CERTIFY_COLUMNS:
            raise ArgumentError("out", f"out: {str(out)!r} holds the counts nA, n of Smooth's CERTIFY, which "
                                       f"{type(smooth).__name__}.certify_batch does not give; resume it with Smooth or "
                                       "choose another file")
    with_counts = columns[-len(COUNT_COLUMNS):] == COUNT_COLUMNS

    def step(idx: list[int], xs: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> list[list[Any]]:
        if not sequential and with_counts:
            pred, radius, n_a = smooth.certify_counts_batch(xs, n0, n, alpha, batch_size, gen, **options)
            return [[int(p), floor_decimal(float(r), RADIUS_PLACES), int(int(p) == y), int(a), n]
                    for p, r, y, a in zip(pred, radius, ys.tolist(), n_a.tolist())]
        if not sequential:
            pred, radius = smooth.certify_batch(xs, n0, n, alpha, batch_size, gen, **options)
            return [[int(p), floor_decimal(float(r), RADIUS_PLACES), int(int(p) == y)]
                    for p, r, y in zip(pred, radius, ys.tolist())]
        pred, radius, used = smooth.certify_sequential_batch(xs, n0, n, alpha, batch_size, radii, config.tol, gen,
                                                             **options)
        drawn[0] += n0 * len(idx) + int(used.sum())
        return [[int(p), floor_decimal(float(r), RADIUS_PLACES), int(int(p) == y), int(u)]
                for p, r, y, u in zip(pred, radius, ys.tolist(), used.tolist())]

    def pooled(indices: list[int], data: Any, seed: int,
               device: torch.device) -> Iterator[tuple[int, int, list[Any], float]]:
        """The pool (``procedures.certify_sequential_packed``): input idx draws from a generator
        seeded by (seed, idx), as with pack 1; finished rows are buffered and given in selection order."""
        labels: dict[int, int] = {}

        def inputs() -> Iterator[tuple[int, torch.Tensor, torch.Generator]]:
            for i in indices:
                x, y = data[i]
                try:
                    x = smooth.sampler.batch(torch.as_tensor(x)[None].to(device), "xs")[0]
                except ArgumentError as e:  # a bad input: name it by its dataset index
                    if getattr(e, "index", None) is None:
                        raise
                    raise ArgumentError("dataset", f"dataset: input idx {i} has non-finite values (NaN or inf); "
                                                   "no certificate is given for it") from None
                labels[i] = int(y)
                yield i, x, torch.Generator(device=device).manual_seed(derived_seed(seed, i))

        finished: dict[int, PackedResult] = {}
        pos = 0
        for result in certify_sequential_packed(smooth.sampler, inputs(), n0, n, alpha, batch_size, radii,
                                                config.tol, pool=config.pool, **options):
            finished[result.key] = result
            while pos < len(indices) and indices[pos] in finished:
                r = finished.pop(indices[pos])
                y = labels.pop(r.key)
                pos += 1
                drawn[0] += n0 + r.n_used
                yield r.key, y, [r.pred, floor_decimal(r.radius, RADIUS_PLACES), int(r.pred == y), r.n_used], r.seconds

    if config.pool is not None and not isinstance(getattr(smooth, "sampler", None), Sampler):
        raise ArgumentError("pool", f"pool: the pool runs on Smooth's sampler, which {type(smooth).__name__} "
                                    "does not have; leave pool out")
    job = LoggedJob(key="certify", columns=columns, work=step,
                    settings=settings, recorded={**recorded, **config.recorded()}, selection=config.selection,
                    per_batch=config.pack, samples_per_input=0 if sequential else n0 + n, names=_NAMES, meta=source,
                    stream=pooled if config.pool is not None else None)
    report = run_job(job, dataset, out, device=smooth.device, seed=config.seed, progress=progress)
    return replace(report, samples=drawn[0]) if sequential else report


def predict_dataset(
    smooth: Smooth,
    dataset: ImageDataset,
    out: str | os.PathLike,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    *,
    selection: Selection = Selection(),
    seed: int | None = None,
    pack: int = 1,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> RunReport:
    """PREDICT (Cohen et al., 2019) every selected input into ``out`` (``idx label predict
    correct time``); otherwise as ``certify_dataset``."""
    _check_sampling(n=n, batch_size=batch_size, alpha=alpha)
    pack = check_int("pack", pack, 1)
    _check_call(smooth.predict_batch, options, "predict", selection, meta)  # before any file is touched
    source, settings, recorded = _describe(smooth, meta)
    settings.update({"N": n, "alpha": alpha, "pack": pack, **options})

    def step(idx: list[int], xs: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> list[list[Any]]:
        pred = smooth.predict_batch(xs, n, alpha, batch_size, gen, **options)
        return [[int(p), int(int(p) == y)] for p, y in zip(pred, ys.tolist())]

    job = LoggedJob(key="predict", columns=PREDICT_COLUMNS, work=step, settings=settings,
                    recorded={**recorded, "batch": batch_size}, selection=selection, per_batch=pack,
                    samples_per_input=n, names=_NAMES, meta=source)
    return run_job(job, dataset, out, device=smooth.device, seed=seed, progress=progress)


def run_summary(report: RunReport) -> str:
    """One line about a certify or predict log after a run: inputs, certified accuracy at r = 0
    (accuracy for predict), ACR (mean over inputs of radius x correct), abstentions, this call's
    samples/s and the log path."""
    meta = read_meta(report.path)
    columns = tuple(meta["columns"])
    rows = read_rows(report.path, columns)
    h = {c: k for k, c in enumerate(columns)}
    n = len(rows)
    correct = [int(r[h["correct"]]) for r in rows]
    abstained = sum(int(r[h["predict"]]) == -1 for r in rows)
    parts = [f"{n} inputs"]
    if "radius" in h:
        acr = sum(float(r[h["radius"]]) * c for r, c in zip(rows, correct)) / max(n, 1)
        parts += [f"certified accuracy at r = 0: {sum(correct) / max(n, 1):.4f}", f"ACR {acr:.4f}"]
    else:
        parts.append(f"accuracy {sum(correct) / max(n, 1):.4f}")
    parts.append(f"abstained {abstained}")
    if "n_used" in h:
        parts.append(f"mean estimation samples {sum(int(r[h['n_used']]) for r in rows) / max(n, 1):,.0f}")
    speed = f"{report.samples_per_second:,.0f} samples/s" if report.written else "nothing left to do"
    return f"{', '.join(parts)}; this run: {report.written} inputs, {speed} -> {report.path}"


__all__ = ["CertifyConfig", "RADIUS_PLACES", "RunReport", "Selection", "certify_dataset", "predict_dataset",
           "run_summary"]
