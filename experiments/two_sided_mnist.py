"""How much certified radius the two-sided bound gains on MNIST, and when.

The one-sided certificate (Cohen et al., 2019, CERTIFY) bounds pA from below at level alpha and
uses pB = 1 - pA. The two-sided one (Theorem 1 without that shortcut; ``Smooth.certify(...,
bound="two-sided")``) bounds pA from below and the runner-up pB from above at alpha / 2 each
(Bonferroni). It gains where the runner-up is much less likely than 1 - pA (the rest of the
mass spread over other classes) and pays for the split alpha where pA is near 1.

For each Gaussian LeNet of the full MNIST protocol (experiments/mnist_certify.py, sigma 0.25 and
0.5) and each of 100 of its 500 test images (idx 0, 100, ..., 9900), one selection draw (N0 = 100)
and one estimation draw (N = 10 000) are taken, and both certificates (alpha = 0.001) are computed
from the *same* counts with ``smoothing.certificate``, the function ``Smooth.certify_batch`` ends
with. The one-sided certificate at alpha / 2 is reported too, to separate the Bonferroni cost from
the runner-up's gain.

    python experiments/two_sided_mnist.py --data-root /work/shared/data

Writes experiments/results/two_sided/{per_image.tsv, summary.md, summary.json}.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from smoothcert.data import get_dataset
from smoothcert.runs import load_model
from smoothcert.smoothing import Smooth, certificate
from smoothcert.stats import clopper_pearson_lower, clopper_pearson_upper

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "mnist" / "runs" / "full"
OUT = HERE / "results" / "two_sided"
COLUMNS = ("sigma", "idx", "label", "cA", "nA", "nB", "pA_lower", "pA_lower_half", "pB_upper_half",
           "radius_one", "radius_one_half", "radius_two", "gain")


def run_sigma(sigma: float, ds, indices: list[int], n0: int, n: int, alpha: float, batch: int) -> list[dict]:
    model, config = load_model(RUNS / f"gauss-sigma{sigma:g}")
    smooth = Smooth(model, int(config["num_classes"]), sigma)
    rows = []
    for idx in indices:
        x, label = ds[idx]
        xs = x[None]
        gen = torch.Generator().manual_seed(idx)  # selection then estimation, as certify_batch draws them
        cA = int(smooth.sample_counts(xs, n0, batch, gen)[0].argmax())
        counts = smooth.sample_counts(xs, n, batch, gen)[0].numpy()
        nA = int(counts[cA])
        nB = int(np.delete(counts, cA).max())
        one = certificate(smooth.noise, np.array([cA]), np.array([nA]), np.array([nB]), n, alpha,
                          norm="l2", bound="one-sided", dim=x.numel())
        one_half = certificate(smooth.noise, np.array([cA]), np.array([nA]), np.array([nB]), n, alpha / 2,
                               norm="l2", bound="one-sided", dim=x.numel())
        two = certificate(smooth.noise, np.array([cA]), np.array([nA]), np.array([nB]), n, alpha,
                          norm="l2", bound="two-sided", dim=x.numel())
        # a radius counts for the image only when the prediction is correct (certified accuracy)
        r1, r1h, r2 = (float(r[1][0]) if int(r[0][0]) == int(label) else 0.0 for r in (one, one_half, two))
        rows.append({
            "sigma": sigma, "idx": idx, "label": int(label), "cA": cA, "nA": nA, "nB": nB,
            "pA_lower": float(clopper_pearson_lower(np.array([nA]), n, alpha)[0]),
            "pA_lower_half": float(clopper_pearson_lower(np.array([nA]), n, alpha / 2)[0]),
            "pB_upper_half": float(clopper_pearson_upper(np.array([nB]), n, alpha / 2)[0]),
            "radius_one": r1, "radius_one_half": r1h, "radius_two": r2, "gain": r2 - r1,
        })
    return rows


def summarize(rows: list[dict], n: int) -> dict:
    r1 = np.array([r["radius_one"] for r in rows])
    r1h = np.array([r["radius_one_half"] for r in rows])
    r2 = np.array([r["radius_two"] for r in rows])
    pA_hat = np.array([r["nA"] / n for r in rows])
    gain = r2 - r1
    bands = {}
    for name, lo, hi in (("pA_hat < 0.9", 0.0, 0.9), ("0.9 <= pA_hat < 0.999", 0.9, 0.999),
                         ("pA_hat >= 0.999", 0.999, 1.01)):
        sel = (pA_hat >= lo) & (pA_hat < hi) & ((r1 > 0) | (r2 > 0))
        bands[name] = {"images": int(sel.sum()), "mean_gain": float(gain[sel].mean()) if sel.any() else None,
                       "mean_gain_over_one_sided_half_alpha": float((r2 - r1h)[sel].mean()) if sel.any() else None}
    return {
        "images": len(rows), "acr_one_sided": float(r1.mean()), "acr_one_sided_half_alpha": float(r1h.mean()),
        "acr_two_sided": float(r2.mean()), "certified_acc_one_sided": float((r1 > 0).mean()),
        "certified_acc_two_sided": float((r2 > 0).mean()), "images_gaining": int((gain > 1e-12).sum()),
        "images_losing": int((gain < -1e-12).sum()), "max_gain": float(gain.max()), "min_gain": float(gain.min()),
        "two_sided_below_one_sided_half_alpha": int((r2 < r1h - 1e-12).sum()), "by_pA_hat": bands,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--sigmas", default="0.25,0.5")
    ap.add_argument("--num-images", type=int, default=100)
    ap.add_argument("--N0", type=int, default=100)
    ap.add_argument("--N", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = get_dataset("mnist", "test", args.data_root)
    stride = 10_000 // args.num_images
    indices = list(range(0, 10_000, stride))[: args.num_images]
    load_before = os.getloadavg()
    t0 = time.time()
    rows, summary = [], {}
    for sigma in (float(s) for s in args.sigmas.split(",")):
        t = time.time()
        sig_rows = run_sigma(sigma, ds, indices, args.N0, args.N, args.alpha, args.batch)
        rows += sig_rows
        summary[f"{sigma:g}"] = {**summarize(sig_rows, args.N), "seconds": round(time.time() - t, 1)}
        print(f"sigma {sigma:g}: {json.dumps(summary[f'{sigma:g}'])}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "per_image.tsv", "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + "\n")
    meta = {"N0": args.N0, "N": args.N, "alpha": args.alpha, "indices": f"0:{10_000}:{stride}",
            "seconds": round(time.time() - t0, 1), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "threads": 1}
    (args.out / "summary.json").write_text(json.dumps({"settings": meta, "by_sigma": summary}, indent=2) + "\n")
    lines = ["# Two-sided vs one-sided certificates, MNIST LeNet (gauss, full protocol)", "",
             f"N0 = {args.N0}, N = {args.N}, alpha = {args.alpha}, {len(indices)} test images (idx 0, {stride}, ...), "
             "one draw per image shared by all certificates; radius 0 for abstained or wrong predictions.", "",
             "| sigma | ACR one-sided | ACR one-sided at alpha/2 | ACR two-sided | cert. acc. one / two | "
             "images gaining / losing | max gain | min gain |", "|---|---|---|---|---|---|---|---|"]
    for s, v in summary.items():
        lines.append(f"| {s} | {v['acr_one_sided']:.4f} | {v['acr_one_sided_half_alpha']:.4f} | "
                     f"{v['acr_two_sided']:.4f} | {v['certified_acc_one_sided']:.2f} / {v['certified_acc_two_sided']:.2f}"
                     f" | {v['images_gaining']} / {v['images_losing']} | {v['max_gain']:.4f} | {v['min_gain']:.4f} |")
    lines += ["", "Mean gain (two-sided minus one-sided radius) by the estimated pA = nA / N, over images "
              "certified by either:", "", "| sigma | band | images | mean gain | mean gain over one-sided at alpha/2 |",
              "|---|---|---|---|---|"]
    for s, v in summary.items():
        for band, b in v["by_pA_hat"].items():
            fmt = (lambda z: "-" if z is None else f"{z:+.4f}")
            lines.append(f"| {s} | {band} | {b['images']} | {fmt(b['mean_gain'])} | "
                         f"{fmt(b['mean_gain_over_one_sided_half_alpha'])} |")
    lines += ["", f"Run: {meta['seconds']} s, 1 thread, load average before {load_before[0]:.1f}, "
              f"after {meta['loadavg_after'][0]:.1f} (2-core CPU shared with other jobs).", ""]
    (args.out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
