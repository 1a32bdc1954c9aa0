"""Sequential vs fixed-N certification on the MNIST full-protocol gauss models (LeNet, 90 epochs).

The fixed-N side is the committed logs experiments/results/mnist/full/gauss-sigma{s}.tsv
(N0 = 100, N = 100 000, alpha = 0.001, images idx 0, 20, ..., 9980 of the MNIST test set). The
sequential side certifies the same images with ``Smooth.certify_sequential_batch`` (N0 = 100,
n_max = 100 000, alpha = 0.001) in four modes, each logged to
experiments/results/sequential/gauss-sigma{s}.{mode}.tsv (``idx label predict radius correct
n_used time``; resumable: rerunning skips logged indices):

* ``grid``: radii 0, 0.25, ... up to the largest radius fixed N certifies at that sigma;
* ``single``: the one radius papers quote (0.5 at sigma 0.25, 1.0 at sigma 0.5);
* ``nogrid``: the radius itself, tol = 0.01 sigma (on the first --nogrid-images images);
* ``wallclock``: fixed-N ``certify_batch`` and sequential grid certification of the first
  --wallclock-images images, both timed in this process (rows carry the two times).

``--report`` writes summary.json and summary.md (tables side by side, os.getloadavg() recorded).
The model for sigma 1.0 has no committed checkpoint, so sigma 1.0 is reported as missing.

    python experiments/bench_sequential.py --sigma 0.25 --mode grid --data-root /work/shared/data
    python experiments/bench_sequential.py --report

The committed results: grid and single at both sigmas on all 500 images (sigma 0.5 grid in two
processes, --images 300 and --start 300), wallclock with --wallclock-images 10, nogrid with
--nogrid-images 40 (results/sequential/run*.log are the console logs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from smoothcert.analysis import parse_radii
from smoothcert.data import get_dataset
from smoothcert.logs import atomic_write_bytes
from smoothcert.runs import load_model
from smoothcert.smoothing import Smooth

ROOT = Path(__file__).resolve().parent
FIXED = ROOT / "results" / "mnist" / "full"
RUNS = ROOT / "results" / "mnist" / "runs" / "full"
OUT = ROOT / "results" / "sequential"
SIGMAS = (0.25, 0.5, 1.0)
SINGLE_RADIUS = {0.25: 0.5, 0.5: 1.0, 1.0: 2.0}
SKIP, NUM_IMAGES = 20, 500
N0, N_MAX, ALPHA, SEED = 100, 100_000, 0.001, 0
STRIDE = 1_000_003
COLUMNS = ["idx", "label", "predict", "radius", "correct", "n_used", "time"]


def read_log(path: Path) -> dict[str, np.ndarray]:
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    header, rows = lines[0], lines[1:]
    return {name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(header)}


def grid_for(sigma: float) -> np.ndarray:
    """0, 0.25, ... up to the largest radius the fixed-N log certifies."""
    top = read_log(FIXED / f"gauss-sigma{sigma}.tsv")["radius"].max()
    return parse_radii(f"0:{math.floor(top / 0.25) * 0.25}:0.25")


def settings(sigma: float, mode: str, args) -> tuple[np.ndarray | None, float | None, int]:
    if mode in ("grid", "wallclock"):
        return grid_for(sigma), None, NUM_IMAGES if mode == "grid" else args.wallclock_images
    if mode == "single":
        return np.array([SINGLE_RADIUS[sigma]]), None, NUM_IMAGES
    return None, 0.01 * sigma, args.nogrid_images


def run(sigma: float, mode: str, args) -> None:
    torch.set_num_threads(args.threads)
    ckpt = RUNS / f"gauss-sigma{sigma}"
    if not (ckpt / "checkpoint.pt").is_file():
        print(f"sigma {sigma}: no checkpoint under {ckpt}; skipped")
        return
    model, config = load_model(ckpt)
    dataset = get_dataset("mnist", "test", args.data_root)
    smooth = Smooth(model, 10, sigma)
    radii, tol, count = settings(sigma, mode, args)
    count = count if args.images is None else min(count, args.images)
    indices = list(range(0, len(dataset), SKIP))[args.start:count]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"gauss-sigma{sigma}.{mode}.tsv"
    columns = COLUMNS + (["fixed_predict", "fixed_radius", "fixed_time"] if mode == "wallclock" else [])
    done = set(int(v) for v in read_log(path)["idx"]) if path.is_file() and path.stat().st_size > 0 else set()
    if not done:
        path.write_text("\t".join(columns) + "\n")
    todo = [i for i in indices if i not in done]
    pack = 1 if mode == "wallclock" else args.pack
    with path.open("a") as log:
        for start in range(0, len(todo), pack):
            idx = todo[start : start + pack]
            xs = torch.stack([dataset[i][0] for i in idx])
            labels = [int(dataset[i][1]) for i in idx]
            extra = [[] for _ in idx]
            if mode == "wallclock":
                gen = torch.Generator().manual_seed(SEED * STRIDE + idx[0] + 1)
                t0 = time.perf_counter()
                fp, fr = smooth.certify_batch(xs, N0, N_MAX, ALPHA, args.batch, gen)
                ft = time.perf_counter() - t0
                extra = [[str(int(fp[0])), f"{float(fr[0]):.4f}", f"{ft:.4f}"]]
            gen = torch.Generator().manual_seed(SEED * STRIDE + idx[0])
            t0 = time.perf_counter()
            preds, rads, used = smooth.certify_sequential_batch(xs, N0, N_MAX, ALPHA, args.batch, radii, tol, gen)
            per = (time.perf_counter() - t0) / len(idx)
            for j, i in enumerate(idx):
                p, r = int(preds[j]), float(rads[j])
                row = [str(i), str(labels[j]), str(p), f"{math.floor(r * 1e4) / 1e4:.4f}", str(int(p == labels[j])),
                       str(int(used[j])), f"{per:.4f}"] + extra[j]
                log.write("\t".join(row) + "\n")
            log.flush()
            print(f"sigma {sigma} {mode}: {start + len(idx)}/{len(todo)} of this run "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)


def certified_accuracy(log: dict[str, np.ndarray], radii: np.ndarray) -> list[float]:
    return [float(np.mean((log["correct"] == 1) & (log["radius"] >= r))) for r in radii]


def report() -> None:
    summary: dict = {"loadavg": os.getloadavg(), "n_max": N_MAX, "n0": N0, "alpha": ALPHA, "sigmas": {}}
    md = ["# Sequential vs fixed-N certification (MNIST full-protocol gauss LeNet)", "",
          f"N0 = {N0}, alpha = {ALPHA}, n_max = N = {N_MAX}; fixed-N side: experiments/results/mnist/full/.",
          f"Load average when the report was written: {os.getloadavg()[0]:.2f} (2 shared cores).", ""]
    for sigma in SIGMAS:
        entry: dict = {}
        summary["sigmas"][str(sigma)] = entry
        if not (RUNS / f"gauss-sigma{sigma}" / "checkpoint.pt").is_file():
            entry["missing"] = "no committed checkpoint"
            md += [f"## sigma = {sigma}: no committed checkpoint, not run", ""]
            continue
        fixed = read_log(FIXED / f"gauss-sigma{sigma}.tsv")
        md += [f"## sigma = {sigma}", ""]
        for mode in ("grid", "single", "nogrid", "wallclock"):
            path = OUT / f"gauss-sigma{sigma}.{mode}.tsv"
            if not path.is_file():
                continue
            seq = read_log(path)
            m = len(seq["idx"])
            if m == 0:
                continue
            ref = {k: v[np.isin(fixed["idx"], seq["idx"])] for k, v in fixed.items()}
            mean_n = float(seq["n_used"].mean())
            e = {"images": m, "mean_samples": mean_n, "ratio": N_MAX / mean_n}
            if mode in ("grid", "single"):
                radii = grid_for(sigma) if mode == "grid" else np.array([SINGLE_RADIUS[sigma]])
                e["radii"] = radii.tolist()
                e["fixed"] = certified_accuracy(ref, radii)
                e["sequential"] = certified_accuracy(seq, radii)
                e["max_abs_diff_points"] = 100 * float(np.max(np.abs(np.subtract(e["fixed"], e["sequential"]))))
                md += [f"**{mode}** ({m} images): mean estimation samples {mean_n:.0f} "
                       f"({e['ratio']:.1f}x fewer than {N_MAX}); largest cell difference "
                       f"{e['max_abs_diff_points']:.1f} points", "",
                       "| r | " + " | ".join(f"{r:g}" for r in radii) + " |",
                       "|---|" + "---|" * len(radii),
                       "| fixed N | " + " | ".join(f"{100 * a:.1f}" for a in e["fixed"]) + " |",
                       "| sequential | " + " | ".join(f"{100 * a:.1f}" for a in e["sequential"]) + " |", ""]
            elif mode == "nogrid":
                acr_f = float(np.mean(ref["radius"] * ref["correct"]))
                acr_s = float(np.mean(seq["radius"] * seq["correct"]))
                e.update(acr_fixed=acr_f, acr_sequential=acr_s,
                         mean_radius_lost=float(np.mean(ref["radius"] * ref["correct"] - seq["radius"] * seq["correct"])))
                md += [f"**nogrid** (tol 0.01 sigma, first {m} images): mean samples {mean_n:.0f} "
                       f"({e['ratio']:.2f}x fewer); ACR fixed {acr_f:.4f}, sequential {acr_s:.4f} "
                       f"(mean radius lost {e['mean_radius_lost']:.4f})", ""]
            else:
                tf, ts = float(seq["fixed_time"].sum()), float(seq["time"].sum())
                e.update(fixed_seconds=tf, sequential_seconds=ts, wallclock_ratio=tf / ts,
                         sample_ratio=N_MAX / mean_n)
                md += [f"**wall clock** (first {m} images, both rules in one process, grid radii, 1 thread): "
                       f"fixed N {tf:.1f} s, sequential {ts:.1f} s: {tf / ts:.1f}x faster "
                       f"(sample ratio {N_MAX / mean_n:.1f}x)", ""]
            entry[mode] = e
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(OUT / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(OUT / "summary.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigma", type=float, choices=SIGMAS)
    ap.add_argument("--mode", choices=("grid", "single", "nogrid", "wallclock"))
    ap.add_argument("--data-root", default="/work/shared/data")
    ap.add_argument("--batch", type=int, default=2000, help="forward batch size")
    ap.add_argument("--pack", type=int, default=10, help="images per sequential call (share forward batches)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nogrid-images", type=int, default=100)
    ap.add_argument("--wallclock-images", type=int, default=20)
    ap.add_argument("--images", type=int, default=None, help="certify only the first IMAGES of the 500 (a subset)")
    ap.add_argument("--start", type=int, default=0,
                    help="skip the first START of those images (a second process can take a later range; "
                         "lines are appended whole)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        report()
        return
    if args.sigma is None or args.mode is None:
        ap.error("--sigma and --mode are required unless --report")
    run(args.sigma, args.mode, args)


if __name__ == "__main__":
    main()
