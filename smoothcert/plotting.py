"""Certified-accuracy-vs-radius figures, and the distribution of pA (``pa_figure``) (matplotlib,
Agg backend: no display needed).

Each curve is the exact step function CA(r) = #{correct and radius >= r} / n of a certify log
(Cohen et al., 2019, Fig. 6 style), drawn from ``smoothcert.analysis.certified_accuracy_curve``;
the optional envelope is the best over the logs at each radius (refused across logs of different
norms or inputs unless ``allow_mixed``). Every legend entry names its log's certificate (noise,
norm, bound: ``smoothcert.analysis.certificate``); the x axis names the norm the curves share.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .analysis import (LogLike, as_log, certificate, certified_accuracy_curve, default_labels,  # noqa: E402
                       envelope_curve)
from .logs import atomic_write_bytes  # noqa: E402
from .validation import ArgumentError, check_output  # noqa: E402

FIGURE_FORMATS = ("png", "pdf", "svg")
X_LABEL = "{norm} radius ([0,1] pixel scale)"  # the norm the curves share; MIXED_X_LABEL where they differ
MIXED_X_LABEL = "radius ([0,1] pixel scale; in the norm each legend entry names)"
Y_LABEL = "certified accuracy (%)"
ENVELOPE_LABEL = "envelope (best of the above)"


def _steps(radii: np.ndarray, values: np.ndarray, max_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices, in %, of the left-continuous step function with value ``values[k]`` on
    (radii[k-1], radii[k]] and 0 past the last breakpoint, cut at ``max_radius``, for
    ``drawstyle="steps-pre"``."""
    k = int(np.searchsorted(radii, max_radius, side="left"))  # breakpoints < max_radius
    end = values[k] if k < len(values) else 0.0
    return np.append(radii[:k], max_radius), 100.0 * np.append(values[:k], end)


def certified_accuracy_figure(logs: Sequence[LogLike], labels: Sequence[str] | None = None, envelope: bool = False,
                              max_radius: float | None = None, title: str | None = None,
                              allow_mixed: bool = False) -> Figure:
    """The figure of certified accuracy (%) vs radius, one curve per certify log (legend from
    ``labels``, default ``default_labels``, each followed by the log's certificate in
    parentheses), optionally the envelope (best over the logs; ArgumentError naming
    ``allow_mixed`` across norms or inputs unless ``allow_mixed``), the x axis up to
    ``max_radius`` (default: 5% past the largest certified radius). The caller owns the figure
    (``plt.close`` it)."""
    logs = [as_log(x) for x in logs]
    if not logs:
        raise ValueError("logs must name at least one certify log")
    for x in logs:
        if x.radius is None:
            raise ValueError(f"cannot plot {str(x.path)!r}: a {x.kind} log has no radius column")
    if labels is None:
        labels = default_labels(logs)
    elif len(labels) != len(logs):
        raise ValueError(f"labels: got {len(labels)} for {len(logs)} logs")
    certs = [certificate(x) for x in logs]
    labels = [f"{label} ({c.text})" for label, c in zip(labels, certs)]
    norms = {c.norm for c in certs}
    env = envelope_curve(logs, allow_mixed) if envelope else None  # refused before anything is drawn
    curves = [certified_accuracy_curve(x) for x in logs]
    if max_radius is None:
        top = max(float(r[-1]) for r, _ in curves)
        max_radius = 1.05 * top if top > 0 else 1.0
    elif not (max_radius > 0 and np.isfinite(max_radius)):
        raise ValueError(f"max_radius must be > 0, got {max_radius}")

    fig, ax = plt.subplots(figsize=(5.0, 3.4), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for k, ((r, v), label) in enumerate(zip(curves, labels)):
        x, y = _steps(r, v, max_radius)
        ax.plot(x, y, drawstyle="steps-pre", lw=1.6, color=colors[k % len(colors)], label=label)
    if env is not None:
        x, y = _steps(*env, max_radius)
        # a wide translucent band under the curves: the best curve at each radius stays visible
        ax.plot(x, y, drawstyle="steps-pre", lw=5.0, color="black", alpha=0.22, solid_capstyle="butt",
                label=ENVELOPE_LABEL, zorder=1.5)
    ax.set_xlim(0, max_radius)
    ax.set_ylim(0, 100)
    ax.set_xlabel(X_LABEL.format(norm=norms.pop().upper()) if len(norms) == 1 else MIXED_X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.grid(True, color="0.88", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", frameon=True, framealpha=0.9, edgecolor="0.8", fontsize="small")
    return fig


def plot_certified_accuracy(logs: Sequence[LogLike], out: str | os.PathLike, labels: Sequence[str] | None = None,
                            envelope: bool = False, max_radius: float | None = None, title: str | None = None,
                            dpi: int = 200, allow_mixed: bool = False) -> Path:
    """Write ``certified_accuracy_figure(logs, labels, envelope, max_radius, title, allow_mixed)``
    to ``out`` (.png at ``dpi``, .pdf or .svg; atomically; nothing clipped). Returns ``out``."""
    out = _check_figure_out(out)
    return _save(certified_accuracy_figure(logs, labels, envelope, max_radius, title, allow_mixed), out, dpi)


def pa_figure(logs: Sequence[LogLike], labels: Sequence[str] | None = None, title: str | None = None,
              bins: int = 20) -> Figure:
    """The distribution of pA over the inputs of certify logs with counts (``analysis.pa_estimates``):
    left, the histogram of the estimated pA = nA / n (``bins`` bins on [0, 1], one outline a log);
    right, the cumulative distribution of pA_lower (the bound the certificate used; the estimate,
    dotted, for a log whose metadata records no alpha), with pA_lower = 1/2 (below it the input
    abstains) and each log's ceiling alpha^(1/n) (nA = n: the most n samples can certify, the
    radius cap that the budget sets) marked. ValueError for a log without the counts. The caller
    owns the figure (``plt.close`` it)."""
    from .analysis import pa_estimates, pa_level

    logs = [as_log(x) for x in logs]
    if not logs:
        raise ValueError("logs must name at least one certify log")
    data = [pa_estimates(x) for x in logs]  # refuses a log without nA and n
    if labels is None:
        labels = default_labels(logs)
    elif len(labels) != len(logs):
        raise ValueError(f"labels: got {len(labels)} for {len(logs)} logs")
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(8.4, 3.3), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    edges = np.linspace(0.0, 1.0, bins + 1)
    for k, (log, (estimate, lower), label) in enumerate(zip(logs, data, labels)):
        color = colors[k % len(colors)]
        hist.hist(estimate, bins=edges, histtype="step", lw=1.5, color=color,
                  weights=np.full(estimate.size, 100.0 / estimate.size), label=label)
        values, style = (lower, "-") if lower is not None else (estimate, ":")
        x = np.sort(values)
        cdf.plot(np.concatenate([[0.0], x, [1.0]]), np.concatenate([[0.0], np.arange(1, x.size + 1) / x.size * 100,
                                                                   [100.0]]),
                 drawstyle="steps-post", ls=style, lw=1.5, color=color, label=label)
        level, ns = pa_level(log), np.unique(log.count_n)
        if level is not None and ns.size == 1:
            cdf.axvline(level ** (1.0 / float(ns[0])), color=color, lw=0.8, ls="--", alpha=0.7)
    cdf.axvline(0.5, color="0.5", lw=0.8)
    hist.set_xlabel("estimated pA = nA / n")
    hist.set_ylabel("inputs (%)")
    cdf.set_xlabel("pA lower bound (dashed: the cap alpha^(1/n) of n samples)")
    cdf.set_ylabel("inputs with pA_lower <= x (%)")
    for ax in (hist, cdf):
        ax.set_xlim(0, 1)
        ax.grid(True, color="0.88", lw=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    cdf.set_ylim(0, 100)
    hist.legend(loc="upper left", frameon=True, framealpha=0.9, edgecolor="0.8", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _save(fig: Figure, out: str | os.PathLike, dpi: int) -> Path:
    """Write ``fig`` to ``out`` atomically (format from the suffix; no timestamps, so reruns give
    identical files) and close it."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    buf = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else {"Date": None} if fmt == "svg" else {}
    try:
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.05, metadata=metadata)
    finally:
        plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out


def _check_figure_out(out: str | os.PathLike) -> Path:
    """``out`` as a Path, checked before any drawing: a known figure suffix, a writable folder."""
    out = Path(out)
    if out.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise ArgumentError("out", f"out must end in {', '.join('.' + f for f in FIGURE_FORMATS)}, got {str(out)!r}")
    check_output("out", out)
    return out


def plot_pa(logs: Sequence[LogLike], out: str | os.PathLike, labels: Sequence[str] | None = None,
            title: str | None = None, dpi: int = 200) -> Path:
    """Write ``pa_figure(logs, labels, title)`` to ``out`` (.png at ``dpi``, .pdf or .svg;
    atomically). Returns ``out``."""
    out = _check_figure_out(out)
    return _save(pa_figure(logs, labels, title), out, dpi)


__all__ = ["ENVELOPE_LABEL", "FIGURE_FORMATS", "MIXED_X_LABEL", "X_LABEL", "Y_LABEL", "certified_accuracy_figure",
           "pa_figure", "plot_certified_accuracy", "plot_pa"]
