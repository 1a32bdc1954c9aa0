"""The offline quickstart: train Gaussian augmentation and MaxUp+Gauss on scikit-learn's bundled
digits at sigma = 0.25, certify held-out inputs, print the comparison table and write the plot.

Everything goes through the library calls the CLI uses (``train``, ``certify_dataset``,
``summarize``/``format_table``, ``plot_certified_accuracy``), so the quickstart is also a worked
example of the API.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .analysis import format_table, load_log, parse_radii, summarize
from .certification import Selection, certify_dataset
from .data import get_dataset
from .runs import load_model
from .smoothing import Smooth
from .train import train


@dataclass(frozen=True)
class QuickstartSettings:
    """The protocol. ``small()`` is the reduced size used by the test suite."""

    sigma: float = 0.25
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.05
    m: int = 8
    warmup_epochs: int = 5
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    num_certify: int = 200  # every 2nd of the 500 held-out digits, the first 200
    skip: int = 2
    certify_batch: int = 4000
    seed: int = 0

    @classmethod
    def small(cls) -> "QuickstartSettings":
        return cls(epochs=3, m=2, warmup_epochs=1, n=500, num_certify=10, skip=50, certify_batch=1000)


RADII = "0:1:0.125"


def quickstart(out_dir: str | Path, settings: QuickstartSettings = QuickstartSettings(), quiet: bool = False,
               echo: Callable[[str], None] = print) -> dict:
    """Run the quickstart into ``out_dir`` (created if needed) and return the summary dict of
    ``analysis.summarize``; writes ``table.md``, ``summary.json`` and ``certified_accuracy.png``.
    Existing runs and logs in ``out_dir`` are resumed, not redone."""
    from .logs import atomic_write_bytes, atomic_write_json
    from .plotting import plot_certified_accuracy

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    if not out.parent.is_dir():
        raise ValueError(f"folder {str(out.parent)!r} does not exist")
    out.mkdir(exist_ok=True)
    s = settings
    runs = {
        "gauss": {"sigma": s.sigma},
        "maxup-gauss": {"sigma": s.sigma, "m": s.m, "warmup_epochs": s.warmup_epochs},
    }
    test = get_dataset("digits", "test")
    logs = []
    t_start = time.perf_counter()
    for method, params in runs.items():
        run_dir = out / method
        t0 = time.perf_counter()
        echo(f"[quickstart] training {method} {params} for {s.epochs} epochs on digits ...")
        resume = (run_dir / "checkpoint.pt").is_file()
        train(run_dir, dataset="digits", method=method, method_params=params, epochs=s.epochs,
              batch_size=s.batch_size, lr=s.lr, schedule="cosine", seed=s.seed, quiet=quiet, resume=resume)
        echo(f"[quickstart]   trained in {time.perf_counter() - t0:.1f}s; certifying {s.num_certify} held-out "
             f"inputs with N0={s.n0}, N={s.n}, alpha={s.alpha} ...")
        t0 = time.perf_counter()
        model, config = load_model(run_dir)
        smooth = Smooth(model, config["num_classes"], s.sigma, channels_last=True)
        log = run_dir / "certify.tsv"
        certify_dataset(smooth, test, log, n0=s.n0, n=s.n, alpha=s.alpha, batch_size=s.certify_batch,
                        selection=Selection(s.skip, s.num_certify), seed=s.seed, progress=not quiet)
        echo(f"[quickstart]   certified in {time.perf_counter() - t0:.1f}s -> {log}")
        logs.append(load_log(log))
    summary = summarize(logs, radii=parse_radii(RADII))
    summary["quickstart"] = {"settings": asdict(s), "seconds": round(time.perf_counter() - t_start, 1)}
    table = format_table(summary, "md")
    atomic_write_bytes(out / "table.md", table.encode())
    atomic_write_json(summary, out / "summary.json")
    fig = plot_certified_accuracy(logs, out / "certified_accuracy.png",
                                  title=f"digits, σ = {s.sigma}, N = {s.n}, α = {s.alpha}")
    echo(table)
    echo(f"[quickstart] figure: {fig}  ({summary['quickstart']['seconds']}s in all)")
    return summary
