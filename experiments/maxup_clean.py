"""Does MaxUp improve clean accuracy? MNIST with 2 000 training images, LeNet, a fixed epoch budget.

Protocol (the same for every run; issue 16):

* data: the first ``--train-samples`` (2 000) MNIST training images; all 10 000 test images;
* model: LeNet (``smoothcert.models``, no normalisation), SGD (momentum 0.9, weight decay 5e-4),
  batch 64, lr 0.05 on a per-step cosine schedule, ``--epochs`` epochs;
* augmentations (``smoothcert.augment`` specs): ``cutout:8`` (an 8x8 square set to 0),
  ``cutmix`` (alpha 1, soft labels), ``crop:3`` (random crop of the 3-pixel zero-padded image,
  i.e. a translation by up to 3 pixels; no horizontal flip: a mirrored digit is another digit or
  none), each trained as plain augmentation (the ``maxup`` method with m = 1, one copy per input)
  and as MaxUp with m = 4 (the worst of 4 copies); plus a ``none`` baseline (no augmentation);
* seeds 0, 1, 2 (the seed fixes the initial weights, the batch order and the augmentation draws);
* recorded: test accuracy on the 10 000 images, the final training loss, the training seconds
  per epoch (process CPU and wall clock; the machine is shared, so the wall clock is noisy),
  ``os.getloadavg()``.

Each run writes ``<out>/<aug>_m<m>_seed<seed>.json``; a rerun skips the runs already written
(resumable). Several processes may work through the list at once: a run in progress holds
``<name>.lock`` (with its pid; a lock whose process is gone is taken over). ``--table`` prints the
markdown table from whatever is there.

Usage: python experiments/maxup_clean.py [--data-root /work/shared/data] [--epochs 40] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from smoothcert.data import get_dataset
from smoothcert.logs import atomic_write_json
from smoothcert.methods import create_method
from smoothcert.models import create_model

AUGMENTS = ("none", "cutout:8", "cutmix", "crop:3")
SEEDS = (0, 1, 2)


def runs(m: int) -> list[tuple[str, int, int]]:
    """(augment, m, seed) of every run: each augmentation at m = 1 and m = ``m`` (``none`` only at 1)."""
    return [(a, mm, s) for a in AUGMENTS for mm in ((1,) if a == "none" else (1, m)) for s in SEEDS]


def run_name(augment: str, m: int, seed: int) -> str:
    return f"{augment.replace(':', '')}_m{m}_seed{seed}"


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return correct / len(y)


def train_one(augment: str, m: int, seed: int, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    model = create_model("lenet", 10, in_channels=1, input_size=28)
    method = create_method("maxup", augment=augment, m=m)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(y) / args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / (args.epochs * steps_per_epoch))))
    order = torch.Generator().manual_seed(seed)
    cpu_s, wall_s, last_loss = [], [], float("nan")
    for epoch in range(args.epochs):
        model.train()
        method.on_epoch_start(epoch, args.epochs)
        perm = torch.randperm(len(y), generator=order)
        c0, w0, total = time.process_time(), time.perf_counter(), 0.0
        for i in range(0, len(y), args.batch):
            idx = perm[i:i + args.batch]
            loss = method.loss(model, x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        cpu_s.append(time.process_time() - c0)
        wall_s.append(time.perf_counter() - w0)
        last_loss = total / len(y)
        if not math.isfinite(last_loss):
            raise RuntimeError(f"{run_name(augment, m, seed)}: non-finite training loss at epoch {epoch}")
    return {"model": model, "cpu_s_per_epoch": statistics.median(cpu_s),
            "wall_s_per_epoch": statistics.median(wall_s), "final_train_loss": last_loss}


def claim(lock: Path) -> bool:
    """Take the lock file of a run (False if a live process holds it)."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False  # held by a live process
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # stale
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def table(out: Path, m: int) -> str:
    """Markdown table: per (augmentation, m) the mean and sample std of test accuracy over seeds, and
    the median CPU seconds per epoch."""
    rows = ["| augmentation | m | seeds | test acc. (%) mean ± std | per seed | CPU s / epoch |",
            "|:---|---:|---:|---:|:---|---:|"]
    for a in AUGMENTS:
        for mm in ((1,) if a == "none" else (1, m)):
            rs = [json.loads(p.read_text()) for s in SEEDS if (p := out / f"{run_name(a, mm, s)}.json").is_file()]
            if not rs:
                continue
            acc = [100 * r["test_accuracy"] for r in rs]
            sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
            cpu = statistics.median(r["cpu_s_per_epoch"] for r in rs)
            rows.append(f"| {a} | {mm} | {len(rs)} | {statistics.mean(acc):.2f} ± {sd:.2f} | "
                        f"{', '.join(f'{v:.2f}' for v in acc)} | {cpu:.2f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default="/work/shared/data")
    ap.add_argument("--out", default="experiments/results/maxup_clean")
    ap.add_argument("--train-samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CPU may be shared)")
    ap.add_argument("--table", action="store_true", help="only print the table of the results written so far")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(out, args.m))
        return
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = get_dataset("mnist", "train", args.data_root), get_dataset("mnist", "test", args.data_root)
    x, y = train_set.x[:args.train_samples], train_set.y[:args.train_samples]
    settings = {"train_samples": args.train_samples, "test_samples": len(test_set.y), "epochs": args.epochs,
                "batch": args.batch, "lr": args.lr, "schedule": "cosine per step", "momentum": 0.9,
                "weight_decay": 5e-4, "arch": "lenet", "threads": args.threads}
    for augment, m, seed in runs(args.m):
        path = out / f"{run_name(augment, m, seed)}.json"
        if path.is_file():
            if json.loads(path.read_text())["settings"] != settings:
                raise SystemExit(f"{path} was written with other settings; use another --out")
            continue
        lock = path.with_suffix(".lock")
        if not claim(lock):
            continue
        t0 = time.perf_counter()
        res = train_one(augment, m, seed, x, y, args)
        acc = accuracy(res.pop("model"), test_set.x, test_set.y)
        res.update({"augment": augment, "m": m, "seed": seed, "test_accuracy": acc, "settings": settings,
                    "run_wall_s": time.perf_counter() - t0, "loadavg": os.getloadavg(),
                    "torch": torch.__version__})
        atomic_write_json(res, path)
        lock.unlink(missing_ok=True)
        print(f"{path.stem}: test acc {100 * acc:.2f}%  cpu {res['cpu_s_per_epoch']:.2f} s/epoch  "
              f"({res['run_wall_s']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    if all((out / f"{run_name(*r)}.json").is_file() for r in runs(args.m)):
        print(table(out, args.m))


if __name__ == "__main__":
    main()
