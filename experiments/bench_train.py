"""Benchmark: the cost of a training step per method, and MaxUp against its bound.

For each case (LeNet on 1x28x28, ResNet-20 on 3x32x32; random batches and weights) prints one
JSON line per measurement:

* ``step``: seconds per ``Trainer.step`` (loss, backward, SGD update) of gauss, maxup-gauss with
  m = 4 and m = 25 (warm-up over), and smoothadv with T = 10, M = 2 (if its module exists);
  also ``forward_nograd``: one forward of the batch without autograd, BatchNorm on batch
  statistics (what a MaxUp selection pass runs).
* ``maxup_bound``: maxup-gauss step / (m * forward_nograd + gauss step), all measured in this run
  (target <= 1.15).
* ``memory``: peak memory of a maxup-gauss m = 25 step against a gauss step (target <= 1.5x).
  CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the step. CPU: the
  peak of live bytes from the allocation and free events that ``torch.profiler`` records
  (``profile_memory=True``) during one step, relative to its start -- memory the step allocates
  through PyTorch's CPU allocator, not the process RSS (which the allocator's caching blurs).

Timings interleave the variants over several rounds and report medians, so that load from
other processes affects all of them alike. Usage:
    python experiments/bench_train.py [--device cuda] [--threads 1] [--rounds 5] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from smoothcert.methods import create_method, list_methods
from smoothcert.methods.common import batch_stats_only
from smoothcert.models import create_model
from smoothcert.train import Trainer

CASES = {
    "lenet": dict(arch="lenet", shape=(1, 28, 28), batch_cpu=256, batch_gpu=256),
    "cifar_resnet20": dict(arch="cifar_resnet20", shape=(3, 32, 32), batch_cpu=64, batch_gpu=256),
}
SIGMA = 0.25


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(fn, device: torch.device, min_seconds: float) -> float:
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        dt = time.perf_counter() - t0
        if dt >= min_seconds and calls >= 2:
            return dt / calls


def make_step(arch: str, shape, batch: int, method: str, params: dict, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=10, in_channels=shape[0], input_size=shape[1])
    meth = create_method(method, **params)
    meth.on_epoch_start(100, 101)  # past any warm-up or epsilon ramp
    trainer = Trainer(model, meth, epochs=101, device=device)
    x = torch.rand((batch, *shape), device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return (lambda: trainer.step(x, y)), trainer


def make_forward(arch: str, shape, batch: int, device: torch.device):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_channels=shape[0], input_size=shape[1]).to(device).train()
    x = torch.rand((batch, *shape), device=device)

    def fwd():
        with torch.no_grad(), batch_stats_only(model):
            model(x)

    return fwd


def peak_bytes(fn, device: torch.device) -> int:
    """Peak memory allocated during one call of ``fn`` above what was allocated before it."""
    fn()  # warm (optimizer state, workspaces)
    sync(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def run_case(name: str, spec: dict, device: torch.device, rounds: int, min_seconds: float, quick: bool) -> list[dict]:
    batch = spec["batch_gpu"] if device.type == "cuda" else spec["batch_cpu"]
    arch, shape = spec["arch"], spec["shape"]
    variants = {
        "gauss": ("gauss", {"sigma": SIGMA}),
        "maxup-gauss m=4": ("maxup-gauss", {"sigma": SIGMA, "m": 4}),
        "maxup-gauss m=25": ("maxup-gauss", {"sigma": SIGMA, "m": 25}),
    }
    lines: list[dict] = []
    if "smoothadv" in list_methods():
        variants["smoothadv T=10 M=2"] = ("smoothadv", {"sigma": SIGMA, "epsilon": 0.25, "num_steps": 10,
                                                         "num_noise_vec": 2})
    else:
        lines.append({"case": name, "kind": "skipped", "variant": "smoothadv", "reason": "smoothcert.methods.smoothadv is missing"})
    if quick:
        variants.pop("maxup-gauss m=25")
    fns = {v: make_step(arch, shape, batch, *variants[v], device)[0] for v in variants}
    fns["forward_nograd"] = make_forward(arch, shape, batch, device)
    for fn in fns.values():  # warm-up
        fn()
    sync(device)
    times: dict[str, list[float]] = {v: [] for v in fns}
    for _ in range(rounds):
        for v, fn in fns.items():
            times[v].append(seconds_per_call(fn, device, min_seconds))
    med = {v: statistics.median(t) for v, t in times.items()}
    common = {"case": name, "arch": arch, "input": list(shape), "batch": batch, "device": str(device)}
    for v in fns:
        lines.append({**common, "kind": "step" if v != "forward_nograd" else "forward_nograd", "variant": v,
                      "seconds": round(med[v], 6), "seconds_min": round(min(times[v]), 6),
                      "samples_per_s": round(batch / med[v], 1)})
    for m in (4, 25):
        v = f"maxup-gauss m={m}"
        if v in med:
            bound = m * med["forward_nograd"] + med["gauss"]
            lines.append({**common, "kind": "maxup_bound", "m": m, "step_seconds": round(med[v], 6),
                          "bound_seconds": round(bound, 6), "ratio": round(med[v] / bound, 3), "target": 1.15,
                          "meets_target": med[v] / bound <= 1.15})
    if not quick:
        mem_gauss = peak_bytes(make_step(arch, shape, batch, *variants["gauss"], device)[0], device)
        mem_maxup = peak_bytes(make_step(arch, shape, batch, *variants["maxup-gauss m=25"], device)[0], device)
        lines.append({**common, "kind": "memory", "method": "cuda max_memory_allocated" if device.type == "cuda"
                      else "torch.profiler CPU allocator events", "gauss_peak_mb": round(mem_gauss / 2**20, 2),
                      "maxup25_peak_mb": round(mem_maxup / 2**20, 2), "ratio": round(mem_maxup / mem_gauss, 3),
                      "target": 1.5, "meets_target": mem_maxup / mem_gauss <= 1.5})
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU).")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=None, help="per variant and round")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--quick", action="store_true", help="m = 4 only, no memory, 2 rounds")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.rounds
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.5 if device.type == "cuda" else 1.0)
    env = {"kind": "env", "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "rounds": rounds, "min_seconds": min_seconds,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()}
    print(json.dumps(env), flush=True)
    for name in args.cases.split(","):
        for line in run_case(name, CASES[name], device, rounds, min_seconds, args.quick):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
