"""The MNIST grid case of issue 26 simulated from the fixed-N counts: how the mixture's final share
(its Clopper–Pearson look at n_max) trades samples against the certified-accuracy table.

Each of the 500 images of experiments/results/mnist/full/gauss-sigma{s}.tsv (N = 100 000,
alpha = 0.001) gets pA = nA / N, nA recovered from its fixed-N radius (the CP bound inverted);
its estimation samples are then i.i.d. Bernoulli(pA) -- exactly what a model's votes for cA are,
given cA -- and the library's ``StoppingRule`` runs on them over the grid radii of
bench_sequential.py, for each --shares value (``BetaMixture`` with that ``final_share``; the
other settings the defaults). The fixed-N side is simulated on the same pA (Bin(N, pA), CP at
alpha), so both tables carry the same sampling noise; --seeds repetitions are averaged. Incorrect
predictions run too (they cost samples) but count for no cell, as in the real table. Also the
floor: the mean over images of min(N, log(1/alpha) / KL(pA || t)), Wald's SPRT of pA against the
threshold t of the image's logged fixed-N level (0 for an abstention), which knows pA.

Writes experiments/results/sequential/grid-sim.sigma{s}.{json,md}:

    python experiments/sim_sequential_grid.py --sigma 0.5 --seeds 3 --shares 0 0.2 0.3 0.5
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
from scipy.stats import norm

from bench_sequential import FIXED, OUT, grid_for, read_log
from smoothcert.logs import atomic_write_bytes
from smoothcert.noise import GaussianNoise
from smoothcert.sequential import BetaMixture, StoppingRule
from smoothcert.stats import clopper_pearson_lower

N, ALPHA = 100_000, 0.001


def fixed_counts(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nA, correct, radius) of the fixed-N log: nA the smallest count whose CP bound at alpha
    gives the logged radius (4 decimals) -- bisection on the monotone bound."""
    log = read_log(FIXED / f"gauss-sigma{sigma}.tsv")
    radius, correct = log["radius"], log["correct"] == 1
    target = norm.cdf(radius / sigma) - 1e-7
    lo, hi = np.zeros(len(radius), dtype=np.int64), np.full(len(radius), N, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        ok = clopper_pearson_lower(mid, N, ALPHA) >= target
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid + 1)
    return lo, correct, radius


def table(level: np.ndarray, correct: np.ndarray, K: int) -> np.ndarray:
    """Certified accuracy (%) at each grid radius from the certified level of each image."""
    return np.array([100.0 * np.mean((level >= j) & correct) for j in range(K)])


def simulate(rule: StoppingRule, p: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(level, samples) of each image under ``rule`` on Bernoulli(p) estimation samples."""
    looks = rule.cs.looks
    nA = np.zeros(len(p), dtype=np.int64)
    level = np.full(len(p), -1)
    used = np.zeros(len(p), dtype=np.int64)
    running = np.arange(len(p))
    drawn = 0
    for k, n_k in enumerate(looks):
        nA[running] += rng.binomial(int(n_k) - drawn, p[running])
        drawn = int(n_k)
        stop, radius = rule.step(nA[running], k)
        done = running[stop]
        used[done] = drawn
        level[done] = np.searchsorted(rule.radii, radius[stop], side="right") - 1  # -inf: -1
        running = running[~stop]
        if running.size == 0:
            break
    return level, used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.5])
    args = ap.parse_args()
    t0 = time.perf_counter()
    nA, correct, radius = fixed_counts(args.sigma)
    p = nA / N
    radii = grid_for(args.sigma)
    noise = GaussianNoise(args.sigma)
    thresholds = np.array([noise.p_lower_needed(float(r)) for r in radii])
    fixed = np.mean([table(np.searchsorted(thresholds, clopper_pearson_lower(
        np.random.default_rng([seed, 1]).binomial(N, p), N, ALPHA), side="right") - 1, correct, len(radii))
        for seed in range(args.seeds)], axis=0)
    level = np.searchsorted(thresholds, norm.cdf(radius / args.sigma), side="right") - 1  # the logged levels
    t = thresholds[np.maximum(level, 0)]
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.nan_to_num(p * np.log(p / t)) + np.nan_to_num((1 - p) * np.log((1 - p) / (1 - t)))
    oracle = float(np.mean(np.where(level >= 0, np.minimum(N, math.log(1 / ALPHA) / kl), 0.0)))
    print(f"oracle SPRT (knows pA, certifies the logged level, free futility): {oracle:.0f} mean samples", flush=True)
    rows = []
    for w in args.shares:
        cs = BetaMixture.create(N, ALPHA, final_share=w)
        tables, samples = [], []
        for seed in range(args.seeds):
            level, used = simulate(StoppingRule(noise, cs, radii), p, np.random.default_rng([seed, 0]))
            tables.append(table(level, correct, len(radii)))
            samples.append(float(used.mean()))
        t = np.mean(tables, axis=0)
        rows.append({"final_share": w, "table": t.tolist(), "loss_points": (fixed - t).tolist(),
                     "max_loss_points": float(np.max(fixed - t)), "mean_samples": float(np.mean(samples))})
        print(f"final share {w}: mean samples {rows[-1]['mean_samples']:.0f}, "
              f"largest loss {rows[-1]['max_loss_points']:.2f} points ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"sigma": args.sigma, "seeds": args.seeds, "radii": radii.tolist(), "fixed_table": fixed.tolist(),
           "oracle_mean_samples": oracle,
           "rows": rows, "seconds": time.perf_counter() - t0, "loadavg": os.getloadavg()}
    stem = f"grid-sim.sigma{args.sigma}"
    atomic_write_bytes(OUT / f"{stem}.json", (json.dumps(out, indent=1) + "\n").encode())
    md = [f"# The mixture's final share on the MNIST grid, simulated (sigma = {args.sigma})", "",
          f"500 images, pA from the fixed-N counts, {args.seeds} seeds averaged, N = n_max = {N}, alpha = {ALPHA}; "
          "fixed N simulated on the same pA. Written by `python experiments/sim_sequential_grid.py "
          f"--sigma {args.sigma} --seeds {args.seeds} --shares {' '.join(f'{w:g}' for w in args.shares)}` "
          f"({out['seconds']:.0f} s, load {out['loadavg'][0]:.2f}). Oracle (Wald's SPRT of each image's pA against the "
          f"threshold of its logged fixed-N level, knowing pA, no cost for ruling out the next level): {oracle:.0f} "
          "mean samples.", "",
          "| | mean samples | " + " | ".join(f"r = {r:g}" for r in radii) + " |",
          "|---|---|" + "---|" * len(radii),
          "| fixed N | 100000 | " + " | ".join(f"{v:.1f}" for v in fixed) + " |"]
    md += [f"| final share {r['final_share']:g} | {r['mean_samples']:.0f} | "
           + " | ".join(f"{v:.1f}" for v in r["table"]) + " |" for r in rows]
    atomic_write_bytes(OUT / f"{stem}.md", ("\n".join(md) + "\n").encode())


if __name__ == "__main__":
    main()
