"""Benchmark: the training cost of each method in gauss epochs (LeNet, MNIST): issue 15's and issue 24's.

The full-protocol runs time whole epochs while other runs share the CPU, so their per-epoch seconds
carry the load of the moment. This script measures one ``Trainer.step`` (loss, backward, SGD
update) of each method with the exact parameters of ``mnist_certify.py``'s full protocol (past
every warm-up), on real MNIST training batches, interleaving the methods over several rounds and
taking medians, so that load from other processes affects all of them alike. The ratio
step(method) / step(gauss) is the cost of an epoch in gauss epochs (data loading and the per-epoch
test pass are the same for every method, and small); x 90 epochs it is the total training cost.
Consistency, SmoothMix and CAT-RS step on batches of 256 / m (``mnist_certify.batch_size``, as
their reference code does), so an epoch of theirs is 256 / batch steps of that size: the record's
``epoch_gauss_epochs`` = gauss_steps x 256 / batch is the cost of an epoch in gauss epochs. CAT-RS
also pays its p_b pass once before training (``prior_n`` Gaussian votes of the prior model per
training input): ``setup_gauss_epochs`` at the published prior_n = 10 000 and at our 100.

Prints one JSON line per method and writes them to experiments/results/mnist/train_cost.jsonl:
    python experiments/mnist_train_cost.py [--threads 1] [--rounds 5] [--data-root ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import seconds_per_call  # noqa: E402
from mnist_certify import CATRS_PRIOR_N, batch_size, method_params  # noqa: E402

from smoothcert.data import get_dataset  # noqa: E402
from smoothcert.methods import create_method  # noqa: E402
from smoothcert.methods.catrs import smoothed_confidences  # noqa: E402
from smoothcert.models import create_model  # noqa: E402
from smoothcert.train import Trainer  # noqa: E402

SIGMA = 0.5
VARIANTS = {  # label: (method, m)
    "gauss": ("gauss", 5), "maxup-gauss m=5": ("maxup-gauss", 5), "maxup-gauss m=25": ("maxup-gauss", 25),
    "maxup-gauss m=50": ("maxup-gauss", 50),
    "alps": ("alps", 5), "smoothadv (eps 1, T 10, M 4)": ("smoothadv", 5),
    # issue 24: the published MNIST settings (mnist_certify.method_params)
    "stability": ("stability", 5), "consistency (m 2)": ("consistency", 5), "macer (k 16)": ("macer", 5),
    "smoothmix (m 4, T 4)": ("smoothmix", 5), "catrs (M 4, T 4)": ("catrs", 5),
}
TRAIN_INPUTS = 60_000  # MNIST's training set: the p_b pass covers every input


class _Subset:
    """The first len(idx) inputs of a dataset reordered as ``idx`` (for timing the p_b pass)."""

    def __init__(self, dataset, idx):
        self.dataset, self.idx = dataset, idx
        self.input_shape, self.num_classes = dataset.input_shape, dataset.num_classes

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        return self.dataset[self.idx[i]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0, help="per method and round")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default="experiments/results/mnist/train_cost.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = get_dataset("mnist", "train", args.data_root)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(train), generator=g)[:256].tolist()
    x = torch.stack([train[i][0] for i in idx])
    y = torch.tensor([int(train[i][1]) for i in idx])
    steps, batches, setup = {}, {}, {}
    for label, (method, m) in VARIANTS.items():
        torch.manual_seed(0)
        model = create_model("lenet", num_classes=10, in_channels=1, input_size=28)
        meth = create_method(method, **method_params(method, SIGMA, "full", m))
        meth.on_epoch_start(89, 90)  # the last epoch: past every warm-up, ramp and deferral
        trainer = Trainer(model, meth, epochs=90, lr=0.01, momentum=0.9, weight_decay=1e-4, device="cpu",
                          channels_last=True)
        b = batches[label] = batch_size(method, SIGMA, "full")
        xb, yb, ib = x[:b], y[:b], torch.arange(b)
        if method == "catrs":  # its p_b for these inputs (the pass over the training set, timed once)
            t0 = time.perf_counter()
            meth.confidences = smoothed_confidences(meth.prior_model, _Subset(train, idx), 10, SIGMA, CATRS_PRIOR_N,
                                                    batch=1000, seed=0)
            setup[label] = (time.perf_counter() - t0) / len(idx) / CATRS_PRIOR_N  # seconds per input and vote
        steps[label] = (lambda t=trainer, xb=xb, yb=yb, ib=ib: t.step(xb, yb, ib) if t.method.uses_index
                        else t.step(xb, yb))
        steps[label]()  # warm
    times: dict[str, list[float]] = {v: [] for v in steps}
    t0 = time.time()
    for _ in range(args.rounds):
        for v, fn in steps.items():
            times[v].append(seconds_per_call(fn, torch.device("cpu"), args.min_seconds))
    med = {v: statistics.median(t) for v, t in times.items()}
    env = {"kind": "env", "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
           "rounds": args.rounds, "batch": 256, "sigma": SIGMA, "wall_s": round(time.time() - t0, 1),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if hasattr(os, "getloadavg"):
        env["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    gauss_epoch = med["gauss"] * TRAIN_INPUTS / batches["gauss"]  # seconds
    lines = [env]
    for v in steps:
        epoch = med[v] / med["gauss"] * batches["gauss"] / batches[v]
        rec = {"kind": "step", "method": VARIANTS[v][0], "label": v,
               "params": method_params(VARIANTS[v][0], SIGMA, "full", VARIANTS[v][1]), "batch": batches[v],
               "seconds": round(med[v], 5), "seconds_all": [round(t, 5) for t in times[v]],
               "gauss_steps": round(med[v] / med["gauss"], 2), "epoch_gauss_epochs": round(epoch, 2),
               "cost_90_epochs_in_gauss_epochs": round(90 * epoch, 1)}
        if v in setup:
            rec["setup_gauss_epochs"] = {str(n): round(setup[v] * TRAIN_INPUTS * n / gauss_epoch, 1)
                                         for n in (10_000, CATRS_PRIOR_N)}
        lines.append(rec)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for line in lines:
            print(json.dumps(line), flush=True)
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
