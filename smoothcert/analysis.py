"""Certified accuracy, ACR and comparison tables from certify / predict / attack logs.

Definitions (Cohen et al., 2019, "approximate certified accuracy"; ACR as in Zhai et al., 2020, MACER):

* approximate certified accuracy at radius r: the fraction of inputs with ``correct == 1`` and
  ``radius >= r``  (abstentions have ``correct == 0``, so they never count);
* accuracy: the fraction with ``correct == 1`` (for a certify log: the smoothed classifier's
  clean accuracy, equal to the certified accuracy at r = 0);
* abstain rate: the fraction with ``predict == -1``;
* ACR (average certified radius): the mean over inputs of ``radius`` if correct, else 0.
  It equals the area under the certified-accuracy curve: ACR = integral_0^inf CA(r) dr;
* envelope: the best certified accuracy over several certify logs at each radius (how MaxUp
  and SmoothAdv report "best over sigma").

The kind of a log follows from its header: ``certify`` (``idx label predict radius correct
[time]``), ``predict`` (``idx label predict correct [time]``) or ``attack`` (``idx label
predict correct`` and other columns). Only certify logs have certificates: a predict log's
certified accuracy is its accuracy at r = 0 and undefined (NaN / null) at r > 0; an attack log
has an accuracy under attack only, so all its radius cells are undefined.

Each log's certificate -- its noise, norm and bound (one- or two-sided) -- is read from its
``.meta.json`` (``certificate``): a log of the first release records none of them and was a
Gaussian, L2, one-sided run (``runner.LEGACY_DEFAULTS``); a log without metadata (the reference
code's, published extracts) is read as L2, its noise and bound unknown, and says so. Tables,
JSON and plot legends name every row's certificate. An envelope or a "best" cell compares
certified accuracies, so it is refused (ValueError naming ``allow_mixed``) across certify logs
of different norms, or across logs of different inputs (sets of idx), unless ``allow_mixed``.

Beside ACR, the distribution of pA (``pa_estimates``, ``pa_summary``): certify logs that carry
the counts ``nA n`` give each input's estimated pA = nA / n and its lower bound pA_lower at the
certificate's level. ACR is dominated by easy inputs, whose every sample votes the selected class
and whose radius is then set by the sampling budget n rather than the model (Sun et al., "Average
Certified Radius is a Poor Metric for Randomized Smoothing", ICML 2025): the summary says what
fraction of inputs is so saturated and what share of the ACR they contribute.

``summarize`` builds the versioned JSON structure documented in docs/analysis_json.md;
``format_table`` renders it as md, LaTeX, JSON or CSV.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from .logs import CERTIFY_COLUMNS, PREDICT_COLUMNS, read_tsv
from .runs.logged import LEGACY_DEFAULTS
from .validation import ArgumentError

SCHEMA = "smoothcert.analysis"
SCHEMA_VERSION = 1
FORMATS = ("md", "latex", "json", "csv")
REQUIRED_COLUMNS = ("idx", "label", "predict", "correct")
DEFAULT_RADIUS_STEP = 0.25
_MAX_RADII = 1000

_TIMEDELTA = re.compile(r"^(?:(-?\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")
_BOOL = {"0": False, "1": True, "false": False, "true": True}


@dataclass(frozen=True, eq=False)
class CertLog:
    """One log, column by column (numpy arrays, one entry per input, in file order).

    ``kind`` is ``certify``, ``predict`` or ``attack`` (see the module docstring); ``radius`` and
    ``time`` (seconds per input) are None when the log has no such column; ``meta`` is the
    sidecar ``<path>.meta.json`` written by ``smoothcert certify``/``predict``, if present;
    ``n_used`` (estimation samples per input) is set for a sequential certify log only;
    ``count_a`` and ``count_n`` (the trailing columns ``nA`` and ``n``: the estimation count of
    the selected class, of n samples) for a certify log that records them (``pa_estimates``).
    """

    path: Path
    kind: str
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    correct: np.ndarray
    radius: np.ndarray | None = None
    time: np.ndarray | None = None
    meta: dict[str, Any] | None = field(default=None, repr=False)
    n_used: np.ndarray | None = None
    count_a: np.ndarray | None = None
    count_n: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.idx.shape[0])


LogLike = Union[CertLog, str, os.PathLike]


def parse_time(text: str) -> float:
    """Seconds from a ``time`` cell: a number of seconds (``1.23``) or a ``datetime.timedelta``
    string as the reference code writes it (``0:00:01.234567``, ``1 day, 2:03:04.5``)."""
    s = text.strip()
    m = _TIMEDELTA.match(s)
    if m:
        days, h, mi, sec = m.groups()
        value = int(days or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(sec)
    else:
        try:
            value = float(s)
        except ValueError:
            raise ValueError(f"time {text!r} is neither seconds nor H:MM:SS[.ffffff]") from None
    if not math.isfinite(value):
        raise ValueError(f"time {text!r} is not finite")
    return value


def read_meta(log_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar ``<log_path>.meta.json`` as a dict, or None if there is none."""
    path = Path(str(log_path) + ".meta.json")
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return meta


# trailing columns a certify log may carry: n_used, the estimation samples of a sequential run; nA and n,
# the estimation count of the selected class of n samples (logs.COUNT_COLUMNS)
CERTIFY_EXTRA = ("n_used", "nA", "n")


def load_log(path: str | os.PathLike) -> CertLog:
    """Read a certify (``idx label predict radius correct time``), predict (``idx label predict
    correct time``) or attack (``idx label predict correct ...``) log, smoothcert's or the
    reference code's. ValueError naming the file for an empty or malformed log, duplicate idx or
    an unreadable ``.meta.json`` sidecar."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"log {str(path)!r} is a directory, not a log file (name the .tsv log inside it)")
    header, rows = read_tsv(path)
    where = repr(str(path))
    if len(set(header)) != len(header):
        raise ValueError(f"log {where} has a repeated column in its header {header}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"log {where} is not a certify, predict or attack log: header {header} lacks "
                         f"{', '.join(missing)}")
    if not rows:
        raise ValueError(f"log {where} has a header but no records")
    col = {name: k for k, name in enumerate(header)}
    if set(header) <= set(CERTIFY_COLUMNS) | set(CERTIFY_EXTRA) and "radius" in col:
        kind = "certify"
    elif set(header) <= set(PREDICT_COLUMNS):
        kind = "predict"
    else:  # other columns: an attack log (a radius there, e.g. of a certificate check, is no certificate)
        kind = "attack"
    has_radius, has_time = kind == "certify", "time" in col
    n = len(rows)
    idx, label, predict = (np.empty(n, dtype=np.int64) for _ in range(3))
    correct = np.empty(n, dtype=bool)
    radius = np.empty(n) if has_radius else None
    times = np.empty(n) if has_time else None
    n_used = np.empty(n, dtype=np.int64) if has_radius and "n_used" in col else None
    has_counts = has_radius and "nA" in col and "n" in col
    count_a, count_n = (np.empty(n, dtype=np.int64) for _ in range(2)) if has_counts else (None, None)
    for i, row in enumerate(rows):
        line = i + 2
        try:
            idx[i], label[i], predict[i] = (int(row[col[c]]) for c in ("idx", "label", "predict"))
            c = row[col["correct"]].strip().lower()
            if c not in _BOOL:
                raise ValueError(f"correct must be 0 or 1, got {row[col['correct']]!r}")
            correct[i] = _BOOL[c]
            if radius is not None:
                r = float(row[col["radius"]])
                if not (math.isfinite(r) and r >= 0):
                    raise ValueError(f"radius must be a finite number >= 0, got {row[col['radius']]!r}")
                radius[i] = r
            if times is not None:
                times[i] = parse_time(row[col["time"]])
            if n_used is not None:
                n_used[i] = int(row[col["n_used"]])
                if n_used[i] < 0:
                    raise ValueError(f"n_used must be >= 0, got {row[col['n_used']]!r}")
            if count_a is not None:
                count_a[i], count_n[i] = int(row[col["nA"]]), int(row[col["n"]])
                if not 0 <= count_a[i] <= count_n[i] or count_n[i] < 1:
                    raise ValueError(f"nA and n must be counts with 0 <= nA <= n and n >= 1, got nA "
                                     f"{row[col['nA']]!r}, n {row[col['n']]!r}")
        except ValueError as e:
            raise ValueError(f"log {where} line {line} is malformed: {e}") from None
        if correct[i] and predict[i] == -1:
            raise ValueError(f"log {where} line {line} is malformed: an abstention (predict -1) marked correct")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ValueError(f"log {where} has duplicate idx {', '.join(map(str, dup[:5]))}"
                         f"{' ...' if len(dup) > 5 else ''} (merged or appended twice?)")
    return CertLog(path, kind, idx, label, predict, correct, radius, times, read_meta(path), n_used, count_a,
                   count_n)


def as_log(log: LogLike) -> CertLog:
    """``log`` itself if it is a CertLog, else ``load_log(log)``."""
    return log if isinstance(log, CertLog) else load_log(log)


@dataclass(frozen=True)
class Certificate:
    """How a log certified, from its ``.meta.json``: ``noise`` (``gaussian``, ``laplace``, ...;
    None: unknown), ``norm`` of its radii (``l2``, ``l1``, ``linf``; None for a predict or attack
    log, which has no radii), ``bound`` (``one-sided`` / ``two-sided``; None: unknown or not a
    certify log) and ``recorded`` (False: no metadata, the norm is assumed L2)."""

    noise: str | None
    norm: str | None
    bound: str | None
    recorded: bool

    @property
    def text(self) -> str:
        """``gaussian L2 one-sided``; ``L2 assumed, no metadata``; a predict log's noise; ``-``."""
        if self.norm is None:
            return self.noise or "-"
        if not self.recorded:
            return f"{self.norm.upper()} assumed, no metadata"
        return " ".join(p for p in (self.noise or "unknown noise", self.norm.upper(), self.bound or "unknown bound"))


def certificate(log: LogLike) -> Certificate:
    """The noise, norm and bound of ``log`` (see ``Certificate``). A certify log's settings come
    from the ``certify`` entry of its meta, missing keys from ``runner.LEGACY_DEFAULTS`` (the first
    release certified Gaussian L2 one-sided only, as the runner reads such logs on resume); no meta:
    L2 assumed (Cohen et al.'s format), noise and bound unknown."""
    log = as_log(log)
    meta = log.meta or {}
    run = meta.get(log.kind) if isinstance(meta.get(log.kind), dict) else None
    if log.kind != "certify":
        noise = run.get("noise", LEGACY_DEFAULTS["noise"]) if run is not None and log.kind == "predict" else None
        return Certificate(noise, None, None, run is not None)
    if run is None:
        return Certificate(None, "l2", None, False)
    run = {**LEGACY_DEFAULTS, **{k: v for k, v in run.items() if v is not None}}
    return Certificate(str(run["noise"]), str(run["norm"]).lower(), str(run["bound"]), True)


def _name(log: CertLog) -> str:
    return repr(str(log.path))


def check_comparable(logs: Sequence[LogLike], what: str, allow_mixed: bool = False) -> list[str]:
    """What ``logs`` mix (a list of ``"norms"`` and ``"inputs"``, empty when nothing): certify logs
    of different norms, or logs of different inputs (sets of idx). Unless ``allow_mixed``, a mix is
    an ArgumentError naming ``allow_mixed``: ``what`` (an envelope, a best cell) would compare
    certified accuracies that do not measure the same thing."""
    logs = [as_log(x) for x in logs]
    mixed = []
    norms = {}
    for x in logs:
        norm = certificate(x).norm
        if norm is not None:
            norms.setdefault(norm, x)
    if len(norms) > 1:
        mixed.append("norms")
        if not allow_mixed:
            shown = ", ".join(f"{_name(x)} {n.upper()}" for n, x in norms.items())
            raise ArgumentError("allow_mixed", f"allow_mixed: {what} would compare radii of different norms "
                                               f"({shown}); compare one norm at a time or allow the mix explicitly")
    sets = {}
    for x in logs:
        sets.setdefault(frozenset(x.idx.tolist()), x)
    if len(sets) > 1:
        mixed.append("inputs")
        if not allow_mixed:
            (sa, a), (sb, b) = list(sets.items())[:2]
            raise ArgumentError("allow_mixed", f"allow_mixed: {what} would compare logs of different inputs "
                                               f"({_name(a)}: {len(sa)} idx, {_name(b)}: {len(sb)} idx, "
                                               f"{len(sa & sb)} shared); compare logs of the same inputs or allow "
                                               "the mix explicitly")
    return mixed


def _check_radii(radii: Sequence[float] | np.ndarray) -> np.ndarray:
    r = np.asarray(radii, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("radii must be a non-empty list of numbers")
    if not (np.isfinite(r).all() and (r >= 0).all()):
        raise ValueError(f"radii must be finite and >= 0, got {r.tolist()}")
    return r


def parse_radii(spec: str) -> np.ndarray:
    """Radii from ``start:stop:step`` (stop included when it lies on the grid, e.g. ``0:2.5:0.25``
    -> 0, 0.25, ..., 2.5) or a comma list (``0,0.5,1``). ValueError if it cannot be parsed."""
    parts = spec.split(":") if ":" in spec else spec.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if not numbers or (":" in spec and len(numbers) != 3):
        raise ValueError(f"radii {spec!r} is neither start:stop:step nor a comma list of numbers")
    if ":" not in spec:
        return _check_radii(numbers)
    start, stop, step = numbers
    if not (step > 0 and stop >= start and math.isfinite(stop)):
        raise ValueError(f"radii {spec!r}: start:stop:step needs step > 0 and stop >= start")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > _MAX_RADII:
        raise ValueError(f"radii {spec!r} gives {count} radii; at most {_MAX_RADII}")
    return _check_radii([round(start + k * step, 10) for k in range(count)])


def default_radii(logs: Sequence[LogLike], step: float = DEFAULT_RADIUS_STEP) -> np.ndarray:
    """0, step, 2 step, ... up to the largest certified radius of a correct input in ``logs``
    (just [0] when no log certifies anything)."""
    top = 0.0
    for log in map(as_log, logs):
        if log.radius is not None and log.correct.any():
            top = max(top, float(log.radius[log.correct].max()))
    return np.round(np.arange(math.floor(top / step + 1e-9) + 1) * step, 10)


def accuracy(log: LogLike) -> float:
    """Fraction of inputs with correct == 1."""
    return float(as_log(log).correct.mean())


def abstain_rate(log: LogLike) -> float:
    """Fraction of inputs with predict == -1 (the smoothed classifier abstained)."""
    return float((as_log(log).predict == -1).mean())


def mean_time(log: LogLike) -> float | None:
    """Mean seconds per input, or None if the log has no time column."""
    log = as_log(log)
    return None if log.time is None else float(log.time.mean())


def mean_samples(log: LogLike) -> float | None:
    """Mean estimation samples per input (the N0 selection samples not counted): the mean of
    ``n_used`` for a sequential certify log, N from the ``.meta.json`` for a fixed-N certify or
    predict log, None when unknown (no meta, an attack log)."""
    log = as_log(log)
    if log.n_used is not None:
        return float(log.n_used.mean())
    run = (log.meta or {}).get(log.kind) if log.kind in ("certify", "predict") else None
    n = run.get("N") if isinstance(run, dict) else None
    return float(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None


def certified_accuracy(log: LogLike, radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """Approximate certified accuracy at each radius r: #{correct and radius >= r} / n
    (Cohen et al., 2019). NaN where undefined (a log without radii: r > 0, or any r for an
    attack log)."""
    log, r = as_log(log), _check_radii(radii)
    if log.radius is None:
        out = np.full(r.shape, np.nan)
        if log.kind == "predict":
            out[r == 0] = accuracy(log)
        return out
    good = np.sort(log.radius[log.correct])
    return (good.size - np.searchsorted(good, r, side="left")) / log.n


def _certified_radii(log: CertLog) -> np.ndarray:
    """radius_i * correct_i per input: the terms whose mean is the ACR."""
    if log.radius is None:
        raise ValueError(f"log {str(log.path)!r} has no radius column: ACR is not defined")
    return np.where(log.correct, log.radius, 0.0)


def average_certified_radius(log: LogLike) -> float:
    """ACR = (1/n) sum_i radius_i * correct_i. ValueError for a log without a radius column."""
    return float(_certified_radii(as_log(log)).mean())


def acr_standard_error(log: LogLike) -> float:
    """Standard error of the ACR as the mean over the logged inputs: std(radius_i * correct_i,
    ddof=1) / sqrt(n). It covers the choice of test inputs, not the training seed (NaN if n < 2)."""
    r = _certified_radii(as_log(log))
    return float(r.std(ddof=1) / math.sqrt(r.size)) if r.size > 1 else math.nan


def acr_difference(a: LogLike, b: LogLike) -> tuple[float, float, int]:
    """Paired comparison ACR(a) - ACR(b) over the inputs (idx) both logs hold: (mean difference,
    its standard error std(d_i, ddof=1) / sqrt(k), k). Pairing removes the between-input variance
    that the two ACRs share. ValueError if the logs share fewer than 2 inputs."""
    a, b = as_log(a), as_log(b)
    ra, rb = _certified_radii(a), _certified_radii(b)
    common, ia, ib = np.intersect1d(a.idx, b.idx, assume_unique=True, return_indices=True)
    if common.size < 2:
        raise ValueError(f"logs {str(a.path)!r} and {str(b.path)!r} share {common.size} inputs; "
                         "a paired comparison needs at least 2")
    d = ra[ia] - rb[ib]
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)), int(d.size)


def certified_accuracy_curve(log: LogLike) -> tuple[np.ndarray, np.ndarray]:
    """The exact curve r -> CA(r) as breakpoints: radii [0, r_1 < r_2 < ...] (the distinct radii
    of correct inputs) and CA at each. CA is non-increasing and left-continuous: it keeps the
    value CA(r_k) on (r_{k-1}, r_k] and is 0 beyond the last breakpoint."""
    log = as_log(log)
    if log.radius is None:
        raise ValueError(f"log {str(log.path)!r} has no radius column: no certified-accuracy curve")
    return _curve([log])


def envelope_curve(logs: Sequence[LogLike], allow_mixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints and values of max over ``logs`` of CA(r) (same conventions as
    ``certified_accuracy_curve``). Refused across logs of different norms or inputs unless
    ``allow_mixed`` (``check_comparable``)."""
    logs = [as_log(x) for x in logs]
    bad = [str(x.path) for x in logs if x.radius is None]
    if not logs or bad:
        raise ValueError("the envelope needs certify logs (with a radius column); not: "
                         f"{', '.join(bad) or 'none given'}")
    check_comparable(logs, "the envelope", allow_mixed)
    return _curve(logs)


def _curve(logs: list[CertLog]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.unique(np.concatenate([[0.0]] + [x.radius[x.correct] for x in logs]))
    return pts, np.max([certified_accuracy(x, pts) for x in logs], axis=0)


def envelope(logs: Sequence[LogLike], radii: Sequence[float] | np.ndarray, allow_mixed: bool = False) -> np.ndarray:
    """Best certified accuracy over certify ``logs`` at each radius (refused across norms or
    inputs unless ``allow_mixed``, as ``envelope_curve``)."""
    logs = [as_log(x) for x in logs]
    envelope_curve(logs, allow_mixed)  # validates
    return np.max([certified_accuracy(x, radii) for x in logs], axis=0)


# ---------------------------------------------------------------- the distribution of pA

# The quantiles of the pA summary (``pa_summary``, the JSON's ``logs[].pa``).
PA_QUANTILES = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)


def pa_level(log: LogLike) -> float | None:
    """The level at which the log's certificates bound pA from below: the metadata's ``alpha``
    (one-sided), ``alpha / 2`` for a two-sided bound; None when the metadata records no alpha."""
    run = (as_log(log).meta or {}).get("certify")
    alpha = run.get("alpha") if isinstance(run, dict) else None
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        return None
    return float(alpha) / 2 if run.get("bound") == "two-sided" else float(alpha)


def pa_estimates(log: LogLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Per input (file order): the estimated pA = nA / n of the selected class, and pA_lower, its
    one-sided Clopper–Pearson lower bound at ``pa_level`` (the bound the certificate used; None
    when the metadata records no alpha). ValueError for a log without the ``nA n`` columns."""
    from .stats import clopper_pearson_lower

    log = as_log(log)
    if log.count_a is None or log.count_n is None:
        raise ValueError(f"log {str(log.path)!r} has no nA and n columns (a log written before smoothcert logged "
                         "the counts, a sequential log, or another program's): its pA is not known")
    estimate = log.count_a / log.count_n
    level = pa_level(log)
    if level is None:
        return estimate, None
    lower = np.empty(log.n)
    for n in np.unique(log.count_n):
        rows = log.count_n == n
        lower[rows] = clopper_pearson_lower(log.count_a[rows], int(n), level)
    return estimate, lower


def pa_summary(log: LogLike, quantiles: Sequence[float] = PA_QUANTILES) -> dict[str, Any] | None:
    """The distribution of pA over the inputs of a certify log with counts (None without them):
    ``quantiles`` of the estimated pA (``estimate``) and of ``lower`` (pA_lower; None without an
    alpha in the metadata), their means, ``saturated`` -- the fraction of inputs whose every
    estimation sample voted the selected class (nA = n: pA_lower, and so the radius, is then
    capped by the sampling budget, alpha^(1/n), not by the model) -- and ``acr_share_saturated``,
    the share of the ACR those inputs contribute (None when the ACR is 0). ACR is dominated by
    such easy inputs and by the budget n (Sun et al., ICML 2025); these show how much."""
    log = as_log(log)
    if log.count_a is None or log.radius is None:
        return None
    estimate, lower = pa_estimates(log)
    q = [float(v) for v in quantiles]
    saturated = log.count_a == log.count_n
    terms = np.where(log.correct, log.radius, 0.0)
    total = float(terms.sum())
    ns = np.unique(log.count_n)
    return {
        "quantiles": q,
        "estimate": [float(v) for v in np.quantile(estimate, q)],
        "lower": None if lower is None else [float(v) for v in np.quantile(lower, q)],
        "mean_estimate": float(estimate.mean()),
        "mean_lower": None if lower is None else float(lower.mean()),
        "level": pa_level(log),
        "n": int(ns[0]) if ns.size == 1 else None,
        "saturated": float(saturated.mean()),
        "acr_share_saturated": float(terms[saturated].sum() / total) if total > 0 else None,
    }


# ---------------------------------------------------------------- labels


def _describe(log: CertLog) -> tuple[str | None, dict[str, Any], float | None, float | None]:
    """(method, scalar method params without sigma, certification sigma, training sigma) from meta."""
    meta = log.meta or {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    method = config.get("method") if config.get("method") not in (None, "", "unknown") else None
    raw = config.get("method_params") if isinstance(config.get("method_params"), dict) else {}
    params = {k: v for k, v in raw.items() if k != "sigma" and isinstance(v, (str, int, float, bool))}
    run = next((meta[k] for k in ("certify", "predict", "attack") if isinstance(meta.get(k), dict)), {})
    train_sigma = config.get("sigma")
    return method, params, run.get("sigma", train_sigma), train_sigma


def _run_parts(log: CertLog) -> list[str]:
    """What the label must say about how a certify log was run: a sequential run (its radii are
    then grid levels)."""
    run = (log.meta or {}).get("certify")
    return ["sequential"] if isinstance(run, dict) and run.get("sequential") else []


def _certificate_parts(cert: Certificate) -> dict[str, str]:
    """The certificate as label parts, by key (a part is shown where the labels would repeat)."""
    if cert.norm is None:
        return {"noise": cert.noise or "noise unknown"}
    return {"noise": cert.noise or "noise unknown", "norm": cert.norm.upper() + ("" if cert.recorded else " assumed"),
            "bound": cert.bound or "bound unknown"}


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def default_labels(logs: Sequence[LogLike]) -> list[str]:
    """Labels from each log's ``.meta.json``: the method, the method params that tell the logs
    apart (a param is shown when its value is not the same in every log, a missing param
    counting as different; all of them for a single log), ``sequential`` for a sequential run
    and the certification sigma, e.g. ``maxup-gauss m=25 σ=0.25``; the file stem when there is no
    meta. The certificate (``certificate``: noise, norm, bound) has its own column in tables and
    its own keys in the JSON; labels that would repeat get the parts of it that tell them apart
    (``gauss L1 one-sided σ=0.25``, ``gauss L2 two-sided σ=0.25``), and labels that still repeat
    the shortest path tail that tells them apart, e.g. ``[run1/certify]``."""
    logs = [as_log(x) for x in logs]
    described = [_describe(x) for x in logs]
    certs = [_certificate_parts(certificate(x)) for x in logs]
    missing = object()

    def label(k: int, cert_keys: Sequence[str] = ()) -> str:
        log, (method, params, sigma, train_sigma) = logs[k], described[k]
        shown = [p for p, v in params.items() if len(logs) == 1 or any(d[1].get(p, missing) != v for d in described)]
        parts = ([method or log.path.stem] + [f"{p}={_num(params[p])}" for p in shown]
                 + [certs[k][c] for c in cert_keys if c in certs[k]] + _run_parts(log))
        if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
            trained = (f" (trained {train_sigma:g})"
                       if isinstance(train_sigma, (int, float)) and not math.isclose(train_sigma, sigma) else "")
            parts.append(f"σ={sigma:g}{trained}")
        return " ".join(parts)

    labels = [label(k) for k in range(len(logs))]
    for lab in {x for x in labels if labels.count(x) > 1}:
        same = [k for k in range(len(logs)) if labels[k] == lab]
        keys = [c for c in ("noise", "norm", "bound") if len({certs[k].get(c) for k in same}) > 1]
        for k in same:
            labels[k] = label(k, keys)
    for lab in {x for x in labels if labels.count(x) > 1}:
        same = [k for k in range(len(logs)) if labels[k] == lab]
        parts = [logs[k].path.with_suffix("").parts for k in same]
        depth = 1
        while depth < max(map(len, parts)) and len({p[-depth:] for p in parts}) < len(parts):
            depth += 1
        for k, p in zip(same, parts):
            labels[k] = f"{lab} [{'/'.join(p[-depth:])}]"
    return labels


# ---------------------------------------------------------------- summary


def _json_num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _best_flags(values: list[float | None], higher: bool) -> list[bool]:
    """Flag the best of the defined values (all of them on a tie); nothing when no value is
    worse than the best (a single row, or a column where all rows tie)."""
    present = [v for v in values if v is not None]
    best = (max(present) if higher else min(present)) if present else None
    flags = [v is not None and math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-12) for v in values]
    return flags if sum(flags) < len(present) else [False] * len(values)


def summarize(logs: Sequence[LogLike], radii: Sequence[float] | np.ndarray | None = None,
              labels: Sequence[str] | None = None, envelope: bool = False,
              allow_mixed: bool = False) -> dict[str, Any]:
    """The comparison of ``logs`` as the versioned JSON structure of docs/analysis_json.md:
    per log its certificate (noise, norm, bound), n, accuracy, abstain rate, ACR, mean time, mean
    estimation samples (``mean_samples``), certified accuracy at ``radii``
    (default: ``default_radii``) and the distribution of pA (``pa_summary``; None for a log
    without the counts), with the best value of each column flagged; with
    ``envelope``, the best over the certify logs at each radius. Fractions in [0, 1]; undefined
    values are None. Best flags over several logs, and the envelope, are refused (ArgumentError
    naming ``allow_mixed``) across certify logs of different norms or logs of different inputs,
    unless ``allow_mixed``; the summary's ``mixed`` then says what was mixed."""
    logs = [as_log(x) for x in logs]
    if not logs:
        raise ValueError("logs must name at least one log")
    r = default_radii(logs) if radii is None else _check_radii(radii)
    if labels is None:
        labels = default_labels(logs)
    elif len(labels) != len(logs):
        raise ValueError(f"labels: got {len(labels)} for {len(logs)} logs")
    what = "the best cells" + (" and the envelope" if envelope else "")
    mixed = check_comparable(logs, what, allow_mixed) if len(logs) > 1 else []
    rows = []
    certs = [certificate(x) for x in logs]
    for log, lab, cert in zip(logs, labels, certs):
        rows.append({
            "label": str(lab), "path": str(log.path), "kind": log.kind,
            "noise": cert.noise, "norm": cert.norm, "bound": cert.bound, "certificate": cert.text,
            "certificate_recorded": cert.recorded, "n": log.n,
            "accuracy": accuracy(log), "abstain_rate": abstain_rate(log),
            "acr": average_certified_radius(log) if log.radius is not None else None,
            "mean_time_s": mean_time(log), "mean_samples": mean_samples(log), "sequential": log.n_used is not None,
            "certified_accuracy": [_json_num(v) for v in certified_accuracy(log, r)],
            "pa": pa_summary(log),
        })
    cols = {"accuracy": True, "abstain_rate": False, "acr": True}
    flags = {k: _best_flags([row[k] for row in rows], higher) for k, higher in cols.items()}
    ca_flags = [_best_flags([row["certified_accuracy"][j] for row in rows], True) for j in range(r.size)]
    for i, row in enumerate(rows):
        row["best"] = {**{k: flags[k][i] for k in cols}, "certified_accuracy": [f[i] for f in ca_flags]}
    env = None
    if envelope:
        cert = [k for k, x in enumerate(logs) if x.kind == "certify"]
        if not cert:
            raise ValueError("envelope: none of the logs is a certify log (with a radius column)")
        values = np.stack([certified_accuracy(logs[k], r) for k in cert])
        top = values.max(axis=0)
        winners = [[labels[cert[i]] for i in np.flatnonzero(np.isclose(values[:, j], top[j], rtol=0, atol=1e-12))]
                   for j in range(r.size)]
        env = {"label": "envelope", "of": [labels[k] for k in cert],
               "certified_accuracy": [float(v) for v in top], "argmax": winners}
    norms = {c.norm for c in certs if c.norm is not None}
    return {"schema": SCHEMA, "version": SCHEMA_VERSION,
            "radius": {"norm": norms.pop() if len(norms) == 1 else None, "scale": "[0,1] pixels"},
            "radii": [float(v) for v in r], "logs": rows, "envelope": env, "mixed": mixed}


# ---------------------------------------------------------------- tables


def format_radius(r: float) -> str:
    """0.25 -> '0.25', 1 -> '1.00', 0.125 -> '0.125'."""
    s = f"{r:.2f}"
    return s if abs(float(s) - r) < 1e-12 else f"{r:g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _acr(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _shows_samples(summary: dict[str, Any]) -> bool:
    """Tables get a samples/input column when a sequential log is compared (its point is fewer samples)."""
    return any(row.get("sequential") for row in summary["logs"])


def _samples(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _cells(summary: dict[str, Any]) -> tuple[list[str], list[tuple[list[str], list[bool]]]]:
    """Header and (cells, best flags) per row, envelope last; values in % (ACR in radius units);
    a samples/input column after ACR when ``_shows_samples``."""
    extra = _shows_samples(summary)
    header = (["config", "certificate", "n", "acc. (%)", "abstain (%)", "ACR"] + (["samples/input"] if extra else [])
              + [f"r={format_radius(r)}" for r in summary["radii"]])
    rows = []
    for row in summary["logs"]:
        best = row["best"]
        cells = [row["label"], row.get("certificate", "-"), str(row["n"]), _pct(row["accuracy"]),
                 _pct(row["abstain_rate"]), _acr(row["acr"])]
        flags = [False, False, False, best["accuracy"], best["abstain_rate"], best["acr"]]
        if extra:
            cells.append(_samples(row.get("mean_samples")))
            flags.append(False)
        rows.append((cells + [_pct(v) for v in row["certified_accuracy"]], flags + best["certified_accuracy"]))
    env = summary.get("envelope")
    if env:
        cells = [f"best of {len(env['of'])} (envelope)", "", "", "-", "-", "-"] + (["-"] if extra else [])
        rows.append((cells + [_pct(v) for v in env["certified_accuracy"]], [False] * len(header)))
    return header, rows


def _markdown(summary: dict[str, Any]) -> str:
    header, rows = _cells(summary)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", ":---"] + ["---:"] * (len(header) - 2)) + "|"]
    for cells, best in rows:
        lines.append("| " + " | ".join(f"**{esc(c)}**" if b else esc(c) for c, b in zip(cells, best)) + " |")
    note = (f"Certified accuracy (%) at radius r ({summary['radius']['scale']}) in the norm of the row's "
            "certificate (noise, norm, bound); best of each column in bold; '-' = not defined."
            + "".join(" " + n for n in _notes(summary)))
    return "\n".join(lines) + "\n\n" + note + "\n"


def _notes(summary: dict[str, Any]) -> list[str]:
    """Sentences the table must carry: rows read without metadata, comparisons allowed across a mix."""
    notes = []
    if any(not row.get("certificate_recorded", True) and row.get("norm") for row in summary["logs"]):
        notes.append("A certify log without metadata is read as L2, its noise and bound unknown.")
    mixed = summary.get("mixed") or []
    if mixed:
        what = " and ".join({"norms": "certify different norms", "inputs": "hold different inputs"}[m] for m in mixed)
        notes.append(f"The rows {what}: the best cells{' and the envelope' if summary.get('envelope') else ''} "
                     "compare them anyway (allowed explicitly).")
    return notes


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "σ": r"$\sigma$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write σ as $\\sigma$)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex(summary: dict[str, Any]) -> str:
    header, rows = _cells(summary)
    k = len(summary["radii"])
    fixed = (["config", "certificate", "$n$", "acc.\\ (\\%)", "abstain (\\%)", "ACR"]
             + (["samples/input"] if _shows_samples(summary) else []))
    lines = ["% needs \\usepackage{booktabs}"] + [f"% {latex_escape(n)}" for n in _notes(summary)] + [
             "\\begin{tabular}{ll" + "r" * (len(fixed) - 2) + "r" * k + "}", "\\toprule",
             " & " * len(fixed) + "\\multicolumn{%d}{c}{certified accuracy (\\%%) at radius $r$ "
             "(in the norm of the row's certificate)} \\\\" % k,
             "\\cmidrule(lr){%d-%d}" % (len(fixed) + 1, len(fixed) + k),
             " & ".join(fixed + [format_radius(r) for r in summary["radii"]]) + " \\\\",
             "\\midrule"]
    for j, (cells, best) in enumerate(rows):
        if summary.get("envelope") and j == len(rows) - 1:
            lines.append("\\midrule")
        lines.append(" & ".join(f"\\textbf{{{latex_escape(c)}}}" if b else latex_escape(c)
                                for c, b in zip(cells, best)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _csv(summary: dict[str, Any]) -> str:
    radii = [f"r={format_radius(r)}" for r in summary["radii"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "kind", "path", "n", "accuracy", "abstain_rate", "acr", "mean_time_s", "mean_samples",
                "noise", "norm", "bound"] + radii + ["best"])
    blank = lambda v: "" if v is None else repr(v)  # noqa: E731
    for row in summary["logs"]:
        best = row["best"]
        marked = [k for k in ("accuracy", "abstain_rate", "acr") if best[k]]
        marked += [name for name, b in zip(radii, best["certified_accuracy"]) if b]
        w.writerow([row["label"], row["kind"], row["path"], row["n"], blank(row["accuracy"]),
                    blank(row["abstain_rate"]), blank(row["acr"]), blank(row["mean_time_s"]),
                    blank(row.get("mean_samples")), row.get("noise") or "", row.get("norm") or "",
                    row.get("bound") or ""]
                   + [blank(v) for v in row["certified_accuracy"]] + [" ".join(marked)])
    env = summary.get("envelope")
    if env:
        w.writerow([env["label"], "envelope", "", "", "", "", "", "", "", "", "", ""]
                   + [blank(v) for v in env["certified_accuracy"]] + [""])
    return buf.getvalue()


def format_table(summary: dict[str, Any], fmt: str = "md") -> str:
    """Render a ``summarize`` result: ``md`` and ``latex`` (percent, best cell of each column in
    bold), ``json`` (the summary itself) or ``csv`` (fractions; a ``best`` column names the
    columns in which the row is best)."""
    if fmt == "md":
        return _markdown(summary)
    if fmt == "latex":
        return _latex(summary)
    if fmt == "json":
        return json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(summary)
    raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")


__all__ = ["CertLog", "Certificate", "FORMATS", "SCHEMA", "SCHEMA_VERSION", "abstain_rate", "accuracy",
           "acr_difference", "acr_standard_error", "as_log",
           "average_certified_radius", "certificate", "certified_accuracy", "certified_accuracy_curve",
           "check_comparable", "default_labels",
           "default_radii", "envelope", "envelope_curve", "format_radius", "format_table", "latex_escape", "load_log",
           "mean_samples", "mean_time", "pa_estimates", "pa_level", "pa_summary", "PA_QUANTILES", "parse_radii",
           "parse_time", "read_meta", "summarize"]
