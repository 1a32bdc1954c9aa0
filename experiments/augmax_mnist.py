"""Normal training vs AugMix vs AugMax + DuBIN on MNIST, judged by common corruptions.

A small CPU protocol (about 15 minutes on one core), the same for the four runs:

* data: the first ``--train-samples`` MNIST training images; the first ``--test-samples`` test
  images for the corruption benchmark (``smoothcert.corruptions``: 12 corruptions x severities
  1..5, CIFAR-10-C parameters, seed 0);
* model: cifar_resnet20 with 1 input channel on 28x28 inputs (LeNet has no residual blocks, so it
  cannot take DuBIN); BatchNorm (``train --normalize bn``) for normal training and AugMix, DuBIN
  (``--normalize dubin``) for AugMax, and a control run of normal training with DuBIN (its
  InstanceNorm half alone removes per-image brightness and contrast changes);
* training: ``smoothcert.train.train``, SGD (momentum 0.9, weight decay 1e-4), batch 64, lr 0.05
  on a cosine schedule, ``--epochs`` epochs, seed 0; methods ``gauss`` with sigma 0 (plain
  cross-entropy), ``augmix`` (lambda 12) and ``augmax`` (lambda 10, 5 steps of size 0.1) with
  their defaults (k = 3 chains of depth 1..3, severity 3);
* evaluation: SA, RA, accuracy per corruption, and mCE with the normal-training run as baseline.

Writes, under ``--out`` (default experiments/results/augmax_mnist): one run directory per method
(config.json, train_log.tsv; checkpoint.pt is git-ignored), ``<run>/corruptions.json`` and
``table.md``. Rerunning resumes finished work (training resumes; evaluation is redone).

Usage: python experiments/augmax_mnist.py [--data-root ../shared/data] [--epochs 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from smoothcert.corruptions import evaluate_corruptions
from smoothcert.data import get_dataset
from smoothcert.logs import atomic_write_bytes, atomic_write_json, read_tsv
from smoothcert.runs import load_model
from smoothcert.train import train

RUNS = [  # name, method, method params, norm
    ("normal", "gauss", {"sigma": 0.0}, "bn"),
    ("normal_dubin", "gauss", {"sigma": 0.0}, "dubin"),  # control: what DuBIN alone does
    ("augmix", "augmix", {"js_lambda": 12.0}, "bn"),
    ("augmax_dubin", "augmax", {"js_lambda": 10.0, "augmax_steps": 5, "augmax_step_size": 0.1}, "dubin"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default="experiments/results/augmax_mnist")
    ap.add_argument("--train-samples", type=int, default=6000)
    ap.add_argument("--test-samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CPU may be shared)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    test_set = get_dataset("mnist", "test", args.data_root)
    results, train_seconds = {}, {}
    for name, method, params, norm in RUNS:
        run_dir = out / name
        t0 = time.perf_counter()
        train(run_dir, dataset="mnist", data_root=args.data_root, arch="cifar_resnet20", method=method,
              method_params=params, model_kwargs={"norm": norm}, epochs=args.epochs, batch_size=args.batch,
              lr=args.lr, schedule="cosine", seed=0, device=args.device, resume=True,
              max_train_samples=args.train_samples, max_test_samples=args.test_samples)
        _, rows = read_tsv(run_dir / "train_log.tsv")
        train_seconds[name] = sum(float(r[1]) for r in rows)
        print(f"{name}: trained ({train_seconds[name]:.0f} s logged, {time.perf_counter() - t0:.0f} s now)", flush=True)

        model, _ = load_model(run_dir, args.device)
        t0 = time.perf_counter()
        res = evaluate_corruptions(model, test_set, "all", (1, 2, 3, 4, 5), batch_size=250, seed=0,
                                   baseline=results.get("normal"), max_images=args.test_samples,
                                   device=args.device)
        res.update({"run": name, "method": method, "method_params": params, "norm": norm,
                    "eval_seconds": round(time.perf_counter() - t0, 1)})
        atomic_write_json(res, run_dir / "corruptions.json")
        results[name] = res
        mce = "" if res["mCE"] is None else f"  mCE {100 * res['mCE']:.1f}"
        print(f"{name}: SA {100 * res['SA']:.2f}  RA {100 * res['RA']:.2f}{mce}  ({res['eval_seconds']} s)", flush=True)

    atomic_write_bytes(out / "table.md", table(results, train_seconds, args).encode())
    print((out / "table.md").read_text())


def table(results: dict, train_seconds: dict, args: argparse.Namespace) -> str:
    """Markdown: SA, RA, mCE per run; then accuracy per corruption (mean over severities 1..5)."""
    names = list(results)
    lines = [f"MNIST, cifar_resnet20 (1x28x28), {args.train_samples} training images, {args.epochs} epochs, "
             f"{results[names[0]]['num_images']} test images, 12 corruptions x 5 severities.", "",
             "| run | method | norm | SA (%) | RA (%) | mCE (%) | training time (s) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for n in names:
        r = results[n]
        mce = "100.0 (baseline)" if n == "normal" else f"{100 * r['mCE']:.1f}"
        lines.append(f"| {n} | {r['method']} | {r['norm']} | {100 * r['SA']:.2f} | {100 * r['RA']:.2f} | {mce} | "
                     f"{train_seconds[n]:.0f} |")
    lines += ["", "Accuracy (%) per corruption, mean over severities 1-5:", "",
              "| corruption | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for c in results[names[0]]["corruptions"]:
        lines.append(f"| {c} | " + " | ".join(f"{100 * results[n]['corruption_accuracy'][c]:.1f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
