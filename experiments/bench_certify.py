"""Benchmark: certification throughput against the bare model and against a naive loop.

For each case (LeNet on 1x28x28, ResNet-20 on 3x32x32; random weights) prints one JSON line:

* (b) ``forward``: the bare model's forward throughput (samples/s) under inference_mode at each
  batch size and memory format; the best is the ceiling any sampler can reach.
* (a) ``certify``: ``Smooth.certify`` throughput in noise samples/s ((n0 + n) per input), at the
  best batch size and memory format of (b).
* (c) ``naive``: the reference implementation's loop (``x.repeat`` + ``randn_like`` each batch,
  predictions copied to the host and counted with numpy each batch, ``torch.no_grad``, the
  model in its default memory format), same batch size.

Ratios a/b (target >= 0.90) and a/c (target >= 2.0 for LeNet on a 2-core CPU) are in the line.
Usage: python experiments/bench_certify.py [--device cuda] [--inputs 3] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from smoothcert import Smooth, create_model

CASES = {
    "lenet": dict(arch="lenet", shape=(1, 28, 28), n_cpu=20_000, n_gpu=200_000),
    "cifar_resnet20": dict(arch="cifar_resnet20", shape=(3, 32, 32), n_cpu=4_000, n_gpu=100_000),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, device: torch.device, min_seconds: float) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), repeated for at least ``min_seconds``."""
    fn()
    sync(device)
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return dt / calls


def forward_throughput(model, shape, device, batch_sizes, min_seconds):
    results = []
    for fmt_name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model.to(memory_format=fmt)
        for b in batch_sizes:
            x = torch.rand((b, *shape), device=device).contiguous(memory_format=fmt)

            def fwd():
                with torch.inference_mode():
                    model(x).argmax(1)

            results.append({"format": fmt_name, "batch": b, "samples_per_s": b / time_it(fwd, device, min_seconds)})
    return results


def naive_counts(model, x, num, sigma, num_classes, batch_size):
    """Cohen et al.'s ``_sample_noise`` as written: host-side counting every batch."""
    with torch.no_grad():
        counts = np.zeros(num_classes, dtype=int)
        remaining = num
        while remaining > 0:
            this_batch = min(batch_size, remaining)
            remaining -= this_batch
            batch = x.repeat((this_batch, 1, 1, 1))
            noise = torch.randn_like(batch, device=x.device) * sigma
            predictions = model(batch + noise).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
        return counts


def run_case(name: str, device: torch.device, inputs: int, quick: bool) -> dict:
    spec = CASES[name]
    torch.manual_seed(0)
    model = create_model(spec["arch"], 10, spec["shape"][0], spec["shape"][1]).to(device).eval()
    n = spec["n_gpu"] if device.type == "cuda" else spec["n_cpu"]
    if quick:
        n //= 10
    n0, sigma = 100, 0.25
    batch_sizes = [250, 500, 1000, 2000] if device.type == "cpu" else [1000, 4000, 10000]
    min_s = 0.5 if quick else 2.0
    fwd = forward_throughput(model, spec["shape"], device, batch_sizes, min_s)
    best = max(fwd, key=lambda r: r["samples_per_s"])
    channels_last = best["format"] == "channels_last"
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    smooth = Smooth(model, 10, sigma, channels_last=channels_last, seed=0)
    xs = torch.rand((inputs, *spec["shape"]), device=device)

    def certify_all():
        for x in xs:
            smooth.certify(x, n0, n, 0.001, best["batch"])

    t_cert = time_it(certify_all, device, min_s)
    cert_rate = inputs * (n0 + n) / t_cert

    def naive_all():
        for x in xs:
            c0 = naive_counts(model, x, n0, sigma, 10, best["batch"])
            c = naive_counts(model, x, n, sigma, 10, best["batch"])
            _ = c[c0.argmax()]

    model.to(memory_format=torch.contiguous_format)  # the reference code's model, as it is
    t_naive = time_it(naive_all, device, min_s)
    naive_rate = inputs * (n0 + n) / t_naive
    return {
        "case": name, "device": str(device), "threads": torch.get_num_threads(), "n0": n0, "n": n, "inputs": inputs,
        "best_forward": best, "forward": fwd,
        "certify_samples_per_s": round(cert_rate), "naive_samples_per_s": round(naive_rate),
        "ratio_certify_over_forward": round(cert_rate / best["samples_per_s"], 3),
        "ratio_certify_over_naive": round(cert_rate / naive_rate, 3),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--inputs", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--quick", action="store_true", help="10x fewer samples, shorter timing windows")
    args = p.parse_args()
    device = torch.device(args.device)
    for name in args.cases.split(","):
        r = run_case(name, device, args.inputs, args.quick)
        for row in r["forward"]:
            row["samples_per_s"] = round(row["samples_per_s"])
        r["best_forward"]["samples_per_s"] = round(r["best_forward"]["samples_per_s"])
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
