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

``--wallclock-packed`` (issue 26, with --sigma): the first --wallclock-images images at the single
radius, timed in this process three ways -- fixed N (``certify_batch``, one image a call), sequential
one image at a time (``certify_sequential_batch``), and sequential packed across images
(``procedures.certify_sequential_packed``, a pool of --pool images filling each forward batch of
--batch rows) -- each image with its own generator seeded by (0, idx), so the two sequential runs
must agree row for row (checked); writes wallclock-packed.sigma{s}.json (times, samples, the
wall-clock speed-ups over fixed N against the sample ratio, os.getloadavg()).

``--report`` writes summary.json and summary.md (tables side by side, os.getloadavg() recorded).
The model for sigma 1.0 has no committed checkpoint, so sigma 1.0 is reported as missing.

    python experiments/bench_sequential.py --sigma 0.25 --mode grid --data-root /work/shared/data
    python experiments/bench_sequential.py --report

The committed results: grid and single at both sigmas on all 500 images (sigma 0.5 grid in two
processes, --images 300 and --start 300), wallclock with --wallclock-images 10, nogrid with
--nogrid-images 40 (results/sequential/run*.log are the console logs) -- the second release's
logs gauss-sigma{s}.{mode}.tsv; since issue 26 a run logs to gauss-sigma{s}.{mode}.{sequence}.tsv
(``--sequence``): grid and single radius at both sigmas on all 500 images with the mixture and with
today's cp-geometric (the issue's first mixture, one prior Beta(1, 3/4) and no look at n_max, in
gauss-sigma{s}.{mode}.mixture-beta1-0.75.tsv, ``HISTORICAL``). Today's cp-geometric reproduces the
second release's single-radius logs and its sigma 0.5 grid log, but not its sigma 0.25 grid log
(experiments/README.md: that log came from uncommitted code).

``--bernoulli`` (issue 26): expected estimation samples on Bernoulli(pA) streams, no model. Cells:
pA in {0.7, 0.99, 0.999, 0.9999} x target radius 0.5 / 0.8 / 0.9 of the true radius
sigma Phi^-1(pA) (Gaussian noise), alpha = 0.001, n_max = 100 000; the target is the one grid
radius of ``StoppingRule``, so a stream stops when pA's lower bound passes
m = Phi(target / sigma) (or at n_max, or when the target is out of reach). Every method runs on
the same streams in a cell (common random numbers), and a stream's samples are min(tau, n_max):

* ours: ``StoppingRule`` with each of the library's confidence sequences (``SEQUENCES``; with
  ``--variants``, other look schedules and priors too);
* implemented here, monitored after every sample, each a test of p <= m rejected at 1/alpha:
  the Beta(1/2, 1/2) Krichevsky–Trofimov mixture (two-sided: the lower end of its confidence
  set; and one-sided: the prior restricted to q > m), the Waudby-Smith & Ramdas (2023) betting
  test K_n = prod(1 + lambda_i (X_i - m)) with four predictable bets (their PrPl hedged bet and
  aGRAPA, and the plug-in Kelly bet (p_hat - m) / (m (1 - m)) = GRAPA for Bernoulli, truncated
  at c / m, c = 1/2 and 0.9; the best of the four in each cell is the "betting" column), our
  default bound for one radius (the banded mixture, no look at n_max) monitored after every sample ("mixture,
  continuous": what the looks cost), and the oracle SPRT of pA against m (knows pA: the lower
  limit).

The ratios are to the best, in each cell, of the issue's comparison set: the two-sided KT mixture
and the betting test. The one-sided KT mixture (added here; a stronger test than the two-sided
one where pA is near 1) is shown with its ratio too, but is not in that set.

    python experiments/bench_sequential.py --bernoulli --streams 300
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoothcert.analysis import parse_radii
from smoothcert.data import get_dataset
from smoothcert.logs import atomic_write_bytes
from smoothcert.sequential import DEFAULT_SEQUENCE, SEQUENCES
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


HISTORICAL = {"mixture-beta1-0.75": "mixture as first shipped for issue 26 (Beta(1, 3/4), no look at n_max)"}


def log_path(sigma: float, mode: str, sequence: str | None) -> Path:
    """The log of one mode and confidence sequence: gauss-sigma{s}.{mode}.{sequence}.tsv;
    sequence None: gauss-sigma{s}.{mode}.tsv, the second release's committed logs (cp-geometric
    as its rule stood on 2026-11-22, commit e397a71: today's cp-geometric draws other samples and
    stops at other looks, so it is run again under its own name)."""
    return OUT / f"gauss-sigma{sigma}.{mode}{'' if sequence is None else '.' + sequence}.tsv"


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
    sequence = args.sequence or DEFAULT_SEQUENCE
    path = log_path(sigma, mode, sequence)
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
            preds, rads, used = smooth.certify_sequential_batch(xs, N0, N_MAX, ALPHA, args.batch, radii, tol, gen,
                                                                sequence=sequence)
            per = (time.perf_counter() - t0) / len(idx)
            for j, i in enumerate(idx):
                p, r = int(preds[j]), float(rads[j])
                row = [str(i), str(labels[j]), str(p), f"{math.floor(r * 1e4) / 1e4:.4f}", str(int(p == labels[j])),
                       str(int(used[j])), f"{per:.4f}"] + extra[j]
                log.write("\t".join(row) + "\n")
            log.flush()
            print(f"sigma {sigma} {mode}: {start + len(idx)}/{len(todo)} of this run "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)


def wallclock_packed(sigma: float, args) -> None:
    """Fixed N, sequential one image at a time and sequential packed, timed on the same images."""
    from smoothcert.procedures import certify_sequential_packed
    from smoothcert.seeding import derive_seed

    torch.set_num_threads(args.threads)
    ckpt = RUNS / f"gauss-sigma{sigma}"
    if not (ckpt / "checkpoint.pt").is_file():
        print(f"sigma {sigma}: no checkpoint under {ckpt}; skipped")
        return
    model, _ = load_model(ckpt)
    dataset = get_dataset("mnist", "test", args.data_root)
    smooth = Smooth(model, 10, sigma)
    radii = np.array([SINGLE_RADIUS[sigma]])
    sequence = args.sequence or DEFAULT_SEQUENCE
    print(f"sigma {sigma}: {args.wallclock_images} images, fixed N, sequential, packed (pool {args.pool})", flush=True)
    indices = list(range(0, len(dataset), SKIP))[: args.wallclock_images]
    xs = {i: dataset[i][0] for i in indices}
    labels = {i: int(dataset[i][1]) for i in indices}
    gen = lambda i: torch.Generator().manual_seed(derive_seed(SEED, i))  # noqa: E731
    smooth.certify_batch(xs[indices[0]][None], 10, args.batch * 2, ALPHA, args.batch, gen(0))  # probe the chunk once
    t0 = time.perf_counter()
    fixed = {i: smooth.certify_batch(xs[i][None], N0, N_MAX, ALPHA, args.batch, gen(i)) for i in indices}
    t_fixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = {}
    for i in indices:
        p, r, u = smooth.certify_sequential_batch(xs[i][None], N0, N_MAX, ALPHA, args.batch, radii, None, gen(i),
                                                  sequence=sequence)
        single[i] = (int(p), float(r), int(u))
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = {r.key: (r.pred, r.radius, r.n_used) for r in certify_sequential_packed(
        smooth.sampler, ((i, xs[i], gen(i)) for i in indices), N0, N_MAX, ALPHA, args.batch, radii,
        pool=args.pool, sequence=sequence)}
    t_packed = time.perf_counter() - t0
    samples_fixed = len(indices) * (N0 + N_MAX)
    samples_seq = sum(N0 + u for _, _, u in single.values())
    sample_ratio = samples_fixed / samples_seq
    out = {"sigma": sigma, "radius": float(radii[0]), "images": len(indices), "batch": args.batch, "pool": args.pool,
           "sequence": sequence, "threads": args.threads, "loadavg": os.getloadavg()[0],
           "agree": int(sum(single[i] == packed[i] for i in indices)),
           "certified_fixed": int(sum(int(fixed[i][0]) == labels[i] and float(fixed[i][1]) >= float(radii[0])
                                      for i in indices)),
           "certified_sequential": int(sum(p == labels[i] and r >= float(radii[0]) for i, (p, r, _) in single.items())),
           "seconds": {"fixed": t_fixed, "sequential": t_single, "packed": t_packed},
           "samples": {"fixed": samples_fixed, "sequential": samples_seq},
           "sample_ratio": sample_ratio,
           "speedup": {"sequential": t_fixed / t_single, "packed": t_fixed / t_packed},
           "speedup_over_sample_ratio": {"sequential": t_fixed / t_single / sample_ratio,
                                         "packed": t_fixed / t_packed / sample_ratio}}
    OUT.mkdir(parents=True, exist_ok=True)
    images = "" if len(indices) == 20 else f".images{len(indices)}"  # 20: the name of the first run's file
    path = OUT / f"wallclock-packed.sigma{sigma}{images}.json"
    atomic_write_bytes(path, (json.dumps(out, indent=1) + "\n").encode())
    print(json.dumps(out, indent=1))


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
        for mode, sequence in [(m, s) for m in ("grid", "single", "nogrid", "wallclock")
                               for s in (*SEQUENCES, *HISTORICAL, None)]:
            path = log_path(sigma, mode, sequence)
            if not path.is_file():
                continue
            seq = read_log(path)
            m = len(seq["idx"])
            if m == 0:
                continue
            ref = {k: v[np.isin(fixed["idx"], seq["idx"])] for k, v in fixed.items()}
            mean_n = float(seq["n_used"].mean())
            e = {"sequence": HISTORICAL.get(sequence, sequence or "cp-geometric (second release, e397a71)"),
                 "images": m, "mean_samples": mean_n,
                 "ratio": N_MAX / mean_n}
            label = f"{mode}, {e['sequence']}"
            today = log_path(sigma, mode, "cp-geometric")
            if sequence not in ("cp-geometric", None) and today.is_file():
                old = read_log(today)
                same = np.isin(old["idx"], seq["idx"])
                if same.sum() == m:
                    e["fewer_samples_than_cp_geometric"] = float(old["n_used"][same].mean()) / mean_n
                    label += f", {e['fewer_samples_than_cp_geometric']:.2f}x fewer samples than cp-geometric"
            if mode in ("grid", "single"):
                radii = grid_for(sigma) if mode == "grid" else np.array([SINGLE_RADIUS[sigma]])
                e["radii"] = radii.tolist()
                e["fixed"] = certified_accuracy(ref, radii)
                e["sequential"] = certified_accuracy(seq, radii)
                e["max_abs_diff_points"] = 100 * float(np.max(np.abs(np.subtract(e["fixed"], e["sequential"]))))
                md += [f"**{label}** ({m} images): mean estimation samples {mean_n:.0f} "
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
                md += [f"**{label}** (tol 0.01 sigma, first {m} images): mean samples {mean_n:.0f} "
                       f"({e['ratio']:.2f}x fewer); ACR fixed {acr_f:.4f}, sequential {acr_s:.4f} "
                       f"(mean radius lost {e['mean_radius_lost']:.4f})", ""]
            else:
                tf, ts = float(seq["fixed_time"].sum()), float(seq["time"].sum())
                e.update(fixed_seconds=tf, sequential_seconds=ts, wallclock_ratio=tf / ts,
                         sample_ratio=N_MAX / mean_n)
                md += [f"**wall clock, {e['sequence']}** (first {m} images, both rules in one process, grid radii, "
                       "1 thread): "
                       f"fixed N {tf:.1f} s, sequential {ts:.1f} s: {tf / ts:.1f}x faster "
                       f"(sample ratio {N_MAX / mean_n:.1f}x)", ""]
            entry[mode if sequence is None else f"{mode}.{sequence}"] = e
        for path in sorted(OUT.glob(f"wallclock-packed.sigma{sigma}*.json")):
            w = json.loads(path.read_text())
            entry[path.stem] = w
            sec, up, frac = w["seconds"], w["speedup"], w["speedup_over_sample_ratio"]
            md += [f"**wall clock packed across images, {w['sequence']}** (`{path.name}`: {w['images']} images, "
                   f"single radius {w['radius']:g}, batch {w['batch']}, pool {w['pool']}, {w['threads']} thread): "
                   f"fixed N {sec['fixed']:.1f} s, sequential one image at a time {sec['sequential']:.1f} s, packed "
                   f"{sec['packed']:.1f} s; sample ratio {w['sample_ratio']:.1f}x; packed {up['packed']:.1f}x faster "
                   f"({frac['packed']:.2f} of the sample ratio), unpacked {up['sequential']:.1f}x "
                   f"({frac['sequential']:.2f}); predictions agree on {w['agree']} of {w['images']}", ""]
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(OUT / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(OUT / "summary.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))


# -- issue 26: Bernoulli streams ---------------------------------------------------------------
BERNOULLI_PA = (0.7, 0.99, 0.999, 0.9999)
BERNOULLI_FRACTIONS = (0.5, 0.8, 0.9)
LITERATURE = ("kt-two-sided", "betting")  # the comparison set


def _log_beta_mixture(s, n, m, a, b, one_sided):
    """log of the Beta(a, b) mixture of likelihood ratios against m (restricted to q > m and
    renormalised when one_sided), for s successes in n trials; written out here, not imported."""
    from scipy.special import betaincc, betaln
    f = n - s
    out = betaln(s + a, f + b) - betaln(a, b) - s * math.log(m) - f * math.log1p(-m)
    if one_sided:
        with np.errstate(divide="ignore"):
            out = out + np.log(betaincc(s + a, f + b, m)) - math.log(betaincc(a, b, m))
    return out


def _ours(variants: bool, n_max: int, alpha: float, radii: np.ndarray) -> dict:
    """Our rules for one cell, each built for its one-radius grid ``radii`` (so the mixture's final
    share is its single-radius default, 0)."""
    from smoothcert.sequential import confidence_sequence

    def make(name: str, **kw) -> Any:
        return lambda: confidence_sequence(name, n_max, alpha, radii, **kw)
    ours = {"today (cp-geometric)": make("cp-geometric"), "cp-union": make("cp-union"), "mixture": make("mixture")}
    if variants:
        for step, growth in ((16, 1.05), (32, 1.05), (100, 1.0)):
            ours[f"cp-union step {step} growth {growth}"] = make("cp-union", step=step, growth=growth)
        for step, growth in ((1, 1.005), (4, 1.01), (16, 1.02)):
            ours[f"mixture step {step} growth {growth}"] = make("mixture", step=step, growth=growth)
        for prior in ((1.0, 0.75), (1.0, 1.0), (0.5, 0.5)):
            ours[f"mixture prior {prior}"] = make("mixture", prior=prior)
        ours["mixture cut 0.9"] = make("mixture", cuts=(0.9,))
        ours["mixture final share 0.3"] = make("mixture", final_share=0.3)
    return ours


def bernoulli_cell(pA: float, fraction: float, streams: int, seed: int, variants: bool = False,
                   n_max: int = N_MAX, alpha: float = ALPHA, chunk: int = 4096) -> dict:
    """Mean samples min(tau, n_max) of every method on ``streams`` common Bernoulli(pA) streams."""
    from scipy.stats import norm as normal

    from smoothcert.noise import GaussianNoise
    from smoothcert.sequential import StoppingRule
    noise = GaussianNoise(1.0)
    target = fraction * float(normal.ppf(pA))
    m = float(noise.p_lower_needed(target))
    log_c = math.log(1 / alpha)
    radii = np.array([target])
    rules = {name: StoppingRule(noise, make(), radii) for name, make in _ours(variants, n_max, alpha, radii).items()}
    default = rules["mixture"].cs  # our default for this one radius, monitored after every sample below
    continuous = {
        "oracle SPRT": lambda S, n: S * math.log(pA / m) + (n - S) * math.log((1 - pA) / (1 - m)) >= log_c,
        "kt-two-sided": lambda S, n: (S > n * m) & (_log_beta_mixture(S, n, m, 0.5, 0.5, False) >= log_c),
        "kt-one-sided": lambda S, n: (S > n * m) & (_log_beta_mixture(S, n, m, 0.5, 0.5, True) >= log_c),
        "mixture, continuous": lambda S, n: default.reaches(S, n, m),
    }
    bets = ("prpl", "agrapa", "kelly c=0.5", "kelly c=0.9")
    tau = {name: np.full(streams, n_max) for name in [*rules, *continuous, *bets]}
    certified = {name: np.zeros(streams, dtype=bool) for name in rules}
    state = {name: (np.arange(streams), 0) for name in rules}  # running streams, next look
    log_k = {name: np.zeros(streams) for name in bets}
    open_bets = {name: np.ones(streams, dtype=bool) for name in bets}
    rng = np.random.default_rng(seed)
    s_prev = np.zeros(streams, dtype=np.int64)
    sum_x = np.zeros(streams)
    sum_sq = np.zeros(streams)
    mu, var = np.full(streams, 0.5), np.full(streams, 0.25)
    n0 = 0
    while n0 < n_max:
        c = min(chunk, n_max - n0)
        x = rng.random((streams, c)) < pA
        S = s_prev[:, None] + np.cumsum(x, axis=1)
        n = n0 + 1 + np.arange(c)
        busy = False
        for name, rule in rules.items():
            running, k = state[name]
            looks = rule.cs.looks
            while running.size and k < len(looks) and looks[k] <= n0 + c:
                stop, radius = rule.step(S[running, looks[k] - 1 - n0], k)
                tau[name][running[stop]] = looks[k]
                certified[name][running[stop]] = radius[stop] >= target
                running, k = running[~stop], k + 1
            state[name] = (running, k)
            busy |= running.size > 0
        for name, test in continuous.items():
            alive = tau[name] == n_max
            if alive.any():
                busy = True
                hit = test(S[alive], n[None, :])
                tau[name][alive] = np.where(hit.any(1), n[hit.argmax(1)], n_max)
        if any(o.any() for o in open_bets.values()):
            busy = True
            for j in range(c):
                xj, i = x[:, j].astype(np.float64), n0 + j + 1
                gap = mu - m
                lam = {"prpl": np.minimum(np.sqrt(2 * log_c / (var * i * math.log(i + 1))), 0.5 / m),
                       "agrapa": np.clip(gap / (var + gap ** 2), 0.0, 0.5 / m),
                       "kelly c=0.5": np.clip(gap / (m * (1 - m)), 0.0, 0.5 / m),
                       "kelly c=0.9": np.clip(gap / (m * (1 - m)), 0.0, 0.9 / m)}
                for name in bets:
                    log_k[name] += np.log1p(lam[name] * (xj - m))
                    hit = open_bets[name] & (log_k[name] >= log_c)
                    tau[name][hit] = i
                    open_bets[name] &= ~hit
                sum_x += xj
                mu = (0.5 + sum_x) / (i + 1)
                sum_sq += (xj - mu) ** 2
                var = (0.25 + sum_sq) / (i + 1)
                if not any(o.any() for o in open_bets.values()):
                    break
        s_prev = S[:, -1]
        n0 += c
        if not busy:
            break
    mean = {name: float(t.mean()) for name, t in tau.items()}
    mean["betting"] = min(mean[b] for b in bets)
    return {"pA": pA, "fraction": fraction, "target_radius_sigmas": target, "m": m, "streams": streams,
            "mean_samples": mean, "certified_rate": {name: float(v.mean()) for name, v in certified.items()}}


def bernoulli(args) -> None:
    t0 = time.perf_counter()
    cells = []
    for i, pA in enumerate(BERNOULLI_PA):
        for j, fraction in enumerate(BERNOULLI_FRACTIONS):
            cell = bernoulli_cell(pA, fraction, args.streams, args.seed + 10 * i + j, args.variants)
            best = min(cell["mean_samples"][name] for name in LITERATURE)
            cell["best_literature"] = best
            cell["ratios"] = {name: v / best for name, v in cell["mean_samples"].items()}
            cells.append(cell)
            print(f"pA {pA} x{fraction}: " + ", ".join(f"{k} {v:.0f}" for k, v in cell["mean_samples"].items())
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"alpha": ALPHA, "n_max": N_MAX, "streams_per_cell": args.streams, "seed": args.seed,
           "best_literature_of": list(LITERATURE), "cells": cells, "seconds": time.perf_counter() - t0,
           "loadavg": os.getloadavg(), "variants": bool(args.variants)}
    bernoulli_report(out)


SINGLE = ("kt-two-sided", "prpl", "agrapa", "kelly c=0.5", "kelly c=0.9", "kt-one-sided")


def bernoulli_report(out: dict) -> None:
    """Ratio tables of a --bernoulli run (``out``, as bernoulli*.json holds it) into bernoulli*.json
    and .md: to the best of the issue's set in each cell, and to each pre-specified method alone."""
    cells = out["cells"]
    names = list(cells[0]["mean_samples"])

    def ratios(name: str, ref: tuple[str, ...]) -> list[float]:
        return [c["mean_samples"][name] / min(c["mean_samples"][r] for r in ref) for c in cells]

    out["summary"] = {name: {"median_ratio": float(np.median(ratios(name, LITERATURE))),
                             "max_ratio": float(np.max(ratios(name, LITERATURE)))} for name in names}
    ours = [n for n in ("mixture", "cp-union", "today (cp-geometric)") if n in names]
    out["against_single"] = {o: {ref: {"median_ratio": float(np.median(ratios(o, (ref,)))),
                                       "max_ratio": float(np.max(ratios(o, (ref,))))} for ref in SINGLE}
                             for o in ours}
    main_cols = ("today (cp-geometric)", "cp-union", "mixture", "mixture, continuous", *LITERATURE,
                 "kt-one-sided", "oracle SPRT")
    shown = [n for n in main_cols if n in names] + [n for n in names if n not in (
        *main_cols, "prpl", "agrapa", "kelly c=0.5", "kelly c=0.9")]
    md = ["# Expected samples on Bernoulli streams (issue 26)", "",
          f"alpha = {out['alpha']}, n_max = {out['n_max']}, {out['streams_per_cell']} streams a cell (the same "
          f"streams for every method), seed {out['seed']}. Each entry: mean samples min(tau, n_max), and in brackets "
          f"the ratio to the best of {', '.join(LITERATURE)} in that cell (betting: the best of PrPl, aGRAPA, Kelly "
          "c=0.5 and Kelly c=0.9 in that cell). Ours (today, cp-union, mixture) are `StoppingRule` with one grid "
          "radius, the target, over the library's looks; the other columns are monitored after every sample.",
          "Written by `python experiments/bench_sequential.py --bernoulli"
          f"{' --variants' if out.get('variants') else ''} --streams {out['streams_per_cell']} "
          f"--seed {out['seed']}` ({out['seconds']:.0f} s on one thread, "
          f"load {out['loadavg'][0]:.2f} on 2 shared cores).", "",
          "| pA | r / r* | m | " + " | ".join(shown) + " |", "|---|---|---|" + "---|" * len(shown)]
    for c in cells:
        md.append(f"| {c['pA']} | {c['fraction']} | {c['m']:.6f} | " + " | ".join(
            f"{c['mean_samples'][n]:.0f} ({c['mean_samples'][n] / c['best_literature']:.3f})" for n in shown) + " |")
    summary = out["summary"]
    md += ["", "| ratio to the best of the issue's set | " + " | ".join(shown) + " |",
           "|---|" + "---|" * len(shown),
           "| median | " + " | ".join(f"{summary[n]['median_ratio']:.3f}" for n in shown) + " |",
           "| max | " + " | ".join(f"{summary[n]['max_ratio']:.3f}" for n in shown) + " |", "",
           "Against each pre-specified method alone (median / max over the 12 cells of ours / it):", "",
           "| ours | " + " | ".join(SINGLE) + " |", "|---|" + "---|" * len(SINGLE)]
    for o in ours:
        md.append(f"| {o} | " + " | ".join(f"{out['against_single'][o][r]['median_ratio']:.3f} / "
                                            f"{out['against_single'][o][r]['max_ratio']:.3f}" for r in SINGLE) + " |")
    md.append("")
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "bernoulli-variants" if out.get("variants") else "bernoulli"
    atomic_write_bytes(OUT / f"{stem}.json", (json.dumps(out, indent=2) + "\n").encode())
    atomic_write_bytes(OUT / f"{stem}.md", ("\n".join(md) + "\n").encode())
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
    ap.add_argument("--sequence", choices=SEQUENCES, default=None,
                    help="the confidence sequence, logged to gauss-sigma{s}.{mode}.{sequence}.tsv (default: the "
                         "library's; the unsuffixed logs are the second release's)")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--wallclock-packed", action="store_true",
                    help="with --sigma: fixed N, sequential and sequential packed across images, timed (issue 26)")
    ap.add_argument("--pool", type=int, default=64, help="--wallclock-packed: images active at once")
    ap.add_argument("--bernoulli", action="store_true", help="expected samples on Bernoulli streams (issue 26)")
    ap.add_argument("--streams", type=int, default=300, help="--bernoulli: streams a cell")
    ap.add_argument("--seed", type=int, default=0, help="--bernoulli: the seed of the streams")
    ap.add_argument("--bernoulli-report", metavar="JSON", default=None,
                    help="rewrite the tables of a --bernoulli run from its JSON (results/sequential/bernoulli.json)")
    ap.add_argument("--variants", action="store_true",
                    help="--bernoulli: other look schedules and priors too (bernoulli-variants.json / .md)")
    args = ap.parse_args()
    if args.bernoulli_report:
        bernoulli_report(json.loads(Path(args.bernoulli_report).read_text()))
        return
    if args.bernoulli:
        torch.set_num_threads(1)
        bernoulli(args)
        return
    if args.report:
        report()
        return
    if args.wallclock_packed:
        if args.sigma is None:
            ap.error("--wallclock-packed needs --sigma")
        wallclock_packed(args.sigma, args)
        return
    if args.sigma is None or args.mode is None:
        ap.error("--sigma and --mode are required unless --report")
    run(args.sigma, args.mode, args)


if __name__ == "__main__":
    main()
