"""Benchmark: certification throughput as users call it, against the bare forward pass and the
reference algorithm.

Every configuration below is timed ``--reps`` times, interleaved (one repetition of each, in a
rotated order, then the next), in one process; the table gives the median samples/s and the
spread (min-max) over the repetitions. Configurations, for LeNet (1x28x28) and ResNet-20
(3x32x32), random weights, eval mode, CPU threads as set by OMP_NUM_THREADS:

* ``forward``: the bare forward pass (``model(x).argmax(1)`` under inference_mode) of the
  *unmodified* model, NCHW and channels-last, at several batch sizes; the best fp32 one is the
  ceiling the target refers to. ``forward prepared``: the same for Smooth's inference copy
  (BatchNorm folded, channels-last) at the chunk Smooth chose; certify can only approach it,
  so certify / forward-prepared > 1 would be a measurement error, not a result.
* ``reference``: Cohen et al.'s CERTIFY re-implemented from the paper's pseudocode and the
  published description of its sampler (per batch: ``x.repeat``, fresh ``randn_like`` noise,
  forward under ``no_grad``, predictions copied to the host and counted with numpy), as written
  (model NCHW) and with its model in channels-last (a fair baseline), at batch 1000 and at the
  best forward batch.
* ``certify``: ``Smooth(model, 10, sigma).certify(x, n0, n, alpha, batch_size)`` as users call
  it (batch_size 1000, default options), at the best forward batch, and with each option
  switched: BatchNorm folding off, channels-last off, bfloat16 autocast, torch.compile. One-time costs (the chunk probe, compilation) are paid in an untimed
  warm-up call and reported separately.

Machine load (``os.getloadavg``) is recorded before and after each case. Usage:
    python experiments/bench_certify.py [--reps 3] [--cases lenet,cifar_resnet20] [--quick]
Writes experiments/results/bench_certify/results.json and table.md (``--out`` to change).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import beta, norm

from smoothcert import Smooth
from smoothcert.models import create_model

CASES = {
    "lenet": dict(arch="lenet", shape=(1, 28, 28), n=5_000, fwd_rows=4_000),
    "cifar_resnet20": dict(arch="cifar_resnet20", shape=(3, 32, 32), n=1_000, fwd_rows=1_000),
}
N0, SIGMA, ALPHA, NUM_CLASSES = 100, 0.25, 0.001, 10
FWD_BATCHES = (125, 250, 500, 1000)


def reference_sample_noise(model, x, num, batch_size):
    """Cohen et al.'s ``_sample_noise``: fresh noise per batch, counting on the host."""
    with torch.no_grad():
        counts = np.zeros(NUM_CLASSES, dtype=int)
        for _ in range(math.ceil(num / batch_size)):
            this_batch_size = min(batch_size, num)
            num -= this_batch_size
            batch = x.repeat((this_batch_size, 1, 1, 1))
            noise = torch.randn_like(batch) * SIGMA
            predictions = model(batch + noise).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=NUM_CLASSES)
        return counts


def reference_certify(model, x, n0, n, batch_size):
    """CERTIFY of the paper's pseudocode on top of ``reference_sample_noise``."""
    model.eval()
    c_a = reference_sample_noise(model, x, n0, batch_size).argmax()
    n_a = reference_sample_noise(model, x, n, batch_size)[c_a]
    p_a = beta.ppf(ALPHA, n_a, n - n_a + 1) if n_a > 0 else 0.0
    return (-1, 0.0) if p_a < 0.5 else (int(c_a), SIGMA * norm.ppf(p_a))


def forward_fn(model, x: torch.Tensor, batch: int, rows: int) -> Callable[[], None]:
    def fn():
        with torch.inference_mode():
            for start in range(0, rows, batch):
                model(x[: min(batch, rows - start)]).argmax(1)
    return fn


def run_case(name: str, reps: int, quick: bool, compile_on: bool) -> dict:
    spec = CASES[name]
    shape, n = spec["shape"], spec["n"] // (10 if quick else 1)
    fwd_rows = spec["fwd_rows"] // (4 if quick else 1)
    load_before = os.getloadavg()
    torch.manual_seed(0)
    model = create_model(spec["arch"], NUM_CLASSES, shape[0], shape[1]).eval()
    for m in model.modules():  # BN with non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    xs = torch.rand((1, *shape))
    x_fwd = torch.rand((max(FWD_BATCHES), *shape))
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_fwd_cl = x_fwd.contiguous(memory_format=torch.channels_last)
    samples_cert = xs.shape[0] * (N0 + n)

    configs: dict[str, tuple[Callable[[], None], int]] = {}
    for b in FWD_BATCHES:
        configs[f"forward NCHW b={b}"] = (forward_fn(model, x_fwd, b, fwd_rows), fwd_rows)
        configs[f"forward channels_last b={b}"] = (forward_fn(cl_model, x_fwd_cl, b, fwd_rows), fwd_rows)
    # the best fp32 forward batch of one pre-pass (used for the "best setting" rows)
    first = {}
    for k, (fn, rows) in configs.items():
        t0 = time.perf_counter()
        fn()
        first[k] = rows / (time.perf_counter() - t0)
    best_key = max(first, key=first.get)
    best_b = int(best_key.split("b=")[1])

    def certify_fn(smooth: Smooth, batch_size: int) -> Callable[[], None]:
        return lambda: [smooth.certify(x, N0, n, ALPHA, batch_size) for x in xs]

    def reference_fn(net, batch_size: int) -> Callable[[], None]:
        return lambda: [reference_certify(net, x, N0, n, batch_size) for x in xs]

    smooths = {
        "certify defaults b=1000": (Smooth(model, NUM_CLASSES, SIGMA, seed=0), 1000),
        f"certify defaults b={best_b} (best forward batch)": (Smooth(model, NUM_CLASSES, SIGMA, seed=0), best_b),
        "certify fold_bn off b=1000": (Smooth(model, NUM_CLASSES, SIGMA, fold_bn=False, seed=0), 1000),
        "certify channels_last off b=1000": (Smooth(model, NUM_CLASSES, SIGMA, channels_last=False, seed=0), 1000),
        "certify bf16 b=1000": (Smooth(model, NUM_CLASSES, SIGMA, amp_dtype=torch.bfloat16, seed=0), 1000),
    }
    if compile_on:
        smooths["certify compile b=1000"] = (Smooth(model, NUM_CLASSES, SIGMA, compile=True, seed=0), 1000)
    configs["reference NCHW b=1000"] = (reference_fn(model, 1000), samples_cert)
    configs["reference channels_last b=1000"] = (reference_fn(cl_model, 1000), samples_cert)
    configs[f"reference NCHW b={best_b}"] = (reference_fn(model, best_b), samples_cert)
    configs[f"reference channels_last b={best_b}"] = (reference_fn(cl_model, best_b), samples_cert)
    warmup_s = {}
    for k, (s, b) in smooths.items():
        t0 = time.perf_counter()
        certify_fn(s, b)()  # untimed: the chunk probe and compilation happen here
        warmup_s[k] = round(time.perf_counter() - t0, 2)
        configs[k] = (certify_fn(s, b), samples_cert)
    default_smooth = smooths["certify defaults b=1000"][0]
    chunk = next(iter(v for k, v in default_smooth.sampler.chunks.items() if k[0] == 1000), 1000)
    configs[f"forward prepared (Smooth's copy) b={chunk}"] = (
        forward_fn(default_smooth.model, x_fwd_cl, chunk, fwd_rows), fwd_rows)

    names = list(configs)
    rates: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]  # rotate: no fixed position
        for k in order:
            fn, rows = configs[k]
            t0 = time.perf_counter()
            fn()
            rates[k].append(rows / (time.perf_counter() - t0))
    load_after = os.getloadavg()
    rows = {k: {"median": round(statistics.median(v)), "min": round(min(v)), "max": round(max(v))}
            for k, v in rates.items()}
    fwd_fp32 = {k: v for k, v in rows.items() if k.startswith("forward ") and "prepared" not in k}
    best_fwd = max(fwd_fp32, key=lambda k: fwd_fp32[k]["median"])
    med = {k: v["median"] for k, v in rows.items()}
    prepared = next(k for k in med if k.startswith("forward prepared"))

    def ratio(a: str, b: str) -> float:
        return round(med[a] / med[b], 3)

    fastest = max((k for k in med if k.startswith("certify")), key=med.get)
    ratios = {
        "certify defaults b=1000 / best fp32 forward (unmodified model)": ratio("certify defaults b=1000", best_fwd),
        "certify defaults b=1000 / forward of Smooth's copy (sampler overhead; > 1 = error)":
            ratio("certify defaults b=1000", prepared),
        f"{fastest} / reference NCHW b=1000 (as written)": ratio(fastest, "reference NCHW b=1000"),
        f"{fastest} / reference channels_last b=1000": ratio(fastest, "reference channels_last b=1000"),
        f"{fastest} / reference channels_last b={best_b}": ratio(fastest, f"reference channels_last b={best_b}"),
        "certify defaults b=1000 / reference NCHW b=1000 (as written)":
            ratio("certify defaults b=1000", "reference NCHW b=1000"),
        "certify defaults b=1000 / reference channels_last b=1000":
            ratio("certify defaults b=1000", "reference channels_last b=1000"),
    }
    return {
        "case": name, "arch": spec["arch"], "shape": list(shape), "n0": N0, "n": n, "inputs": xs.shape[0],
        "forward_rows": fwd_rows, "reps": reps, "best_fp32_forward": best_fwd, "chunk_chosen_for_b1000": chunk,
        "folded_bn": default_smooth.inference_info["folded_bn"], "warmup_s": warmup_s,
        "samples_per_s": rows, "ratios_of_medians": ratios,
        "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in load_after],
    }


def markdown(results: list[dict], env: dict) -> str:
    lines = [f"Machine: {env['machine']}, {env['cpus']} CPU(s) visible, torch {env['torch']}, "
             f"{env['threads']} thread(s). {env['note']}", ""]
    for r in results:
        lines += [f"### {r['arch']} ({'x'.join(map(str, r['shape']))}), certify n0={r['n0']}, n={r['n']}, "
                  f"{r['reps']} interleaved repetitions", "",
                  f"Load average before {r['loadavg_before']}, after {r['loadavg_after']}. "
                  f"Smooth folded {r['folded_bn']} BatchNorm layers; chunk chosen for batch_size 1000: "
                  f"{r['chunk_chosen_for_b1000']}. Warm-up (probe, compilation), seconds: "
                  + ", ".join(f"{k.removeprefix('certify ')} {v}" for k, v in r["warmup_s"].items()) + ".", "",
                  "| configuration | samples/s (median) | min-max |", "|---|---:|---:|"]
        for k, v in r["samples_per_s"].items():
            mark = " (best fp32 forward)" if k == r["best_fp32_forward"] else ""
            lines.append(f"| {k}{mark} | {v['median']} | {v['min']}-{v['max']} |")
        lines += ["", "| ratio of medians | value |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in r["ratios_of_medians"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="10x fewer samples, one repetition, no compile")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--note", default="", help="free text recorded with the results (e.g. other jobs running)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_certify")
    args = p.parse_args()
    reps = 1 if args.quick else args.reps
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "note": args.note,
           "command": "python experiments/bench_certify.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v not in (False, "")),
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results = []
    for name in args.cases.split(","):
        r = run_case(name, reps, args.quick, not (args.quick or args.no_compile))
        print(json.dumps(r), flush=True)
        results.append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"env": env, "results": results}, indent=1) + "\n")
    table = markdown(results, env)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
