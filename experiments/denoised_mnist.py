"""Denoised smoothing on MNIST (issue 25): certify a LeNet trained on clean data only,
(a) as it is, (b) behind a DnCNN trained with MSE, (c) behind that DnCNN fine-tuned with the
stability objective (Salman et al.'s Stab+MSE, their best), (d) behind one-shot denoising with
a DDPM trained here, against (e) the gauss-trained LeNet of the full protocol
(``mnist_certify.py``), at sigma 0.25 and 0.5, with the same images, N and alpha for every row.

Run from the repository root (resumable: every training run resumes from its checkpoint and
every certify log from its rows, so a rerun picks up where it stopped)::

    python experiments/denoised_mnist.py --data-root ../shared/data            # all, then the report
    python experiments/denoised_mnist.py --only ddpm --no-report               # one part (for two lanes)
    python experiments/denoised_mnist.py --report                              # tables from the logs

Parts (``--only``, comma list; each trains what it needs first): ``clean``, ``mse``, ``stab``,
``ddpm`` (train, then certify that pipeline at every sigma) and ``gauss`` (certify the
full-protocol gauss LeNet). Settings are in ``TRAIN`` and the constants below; the report
(``results/denoised_mnist/table.md``/``.json``) gives per sigma and pipeline the certified
accuracy at radii, the ACR with its SE, the ACR difference paired against the bare classifier,
the base pipeline's accuracy on the clean test images, and certification samples per second
(N0 + N over the log's per-input seconds; one thread, on a shared CPU: ratios within one
run are what to read).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from smoothcert.analysis import (acr_difference, acr_standard_error, average_certified_radius, certified_accuracy,
                                 load_log)
from smoothcert.certification import Selection, certify_dataset
from smoothcert.data import get_dataset
from smoothcert.denoisers.loading import through_denoiser
from smoothcert.logs import atomic_write_bytes
from smoothcert.runs import load_model
from smoothcert.smoothing import Smooth
from smoothcert.train import train

SIGMAS = (0.25, 0.5)
SKIP, NUM_IMAGES = 20, 100  # the first 100 of mnist_certify.py's 500 images (test indices 0, 20, ..., 1980)
N0, N, ALPHA = 100, 2_000, 0.001
RADII = {0.25: (0.0, 0.125, 0.25, 0.375, 0.5, 0.625), 0.5: (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)}  # up to 2.7 sigma
SEED = 0
PIPELINES = ("clean", "mse", "stab", "ddpm", "gauss")
LABELS = {"clean": "LeNet, clean training, no denoiser", "mse": "DnCNN (MSE) + clean LeNet",
          "stab": "DnCNN (Stab+MSE) + clean LeNet", "ddpm": "one-shot DDPM + clean LeNet",
          "gauss": "gauss-trained LeNet (full protocol, no denoiser)"}
# training settings of every run here (MNIST, one thread, SGD's default except where said)
TRAIN = {
    # the classifier: LeNet on clean images (gauss with sigma 0), mnist_certify.py's scaled schedule
    "clean": dict(arch="lenet", method="gauss", epochs=12, batch_size=256, lr=0.01, lr_step_size=4),
    # Salman et al.: Adam, lr 1e-3 for MSE; the stability fine-tune starts from the MSE weights at a lower lr
    "mse": dict(arch="dncnn", method="denoiser", optimizer="adam", lr=1e-3, epochs=3, lr_step_size=2,
                batch_size=64, max_train_samples=20_000, max_test_samples=1000),
    "stab": dict(arch="dncnn", method="denoiser", optimizer="adam", lr=1e-4, epochs=2, lr_step_size=2,
                 batch_size=64, max_train_samples=20_000, max_test_samples=1000),
    # Ho et al.'s linear schedule, 1000 steps; the toolkit's epsilon U-Net at width 16 (a quarter of the
    # default's multiply-adds: certifying through it is the slowest row), the whole training set
    "ddpm": dict(arch="ddpm_unet", model_kwargs={"width": 16}, method="ddpm", optimizer="adam", lr=1e-3, epochs=3,
                 lr_step_size=3, batch_size=128, max_test_samples=500),
}
CLEAN_ACC_IMAGES = 1000  # the base pipeline's accuracy on the first 1000 clean test images


def run_dir(args: argparse.Namespace, part: str, sigma: float | None = None) -> Path:
    return Path(args.runs_dir) / (part if sigma is None else f"{part}-sigma{sigma}")


def train_part(args: argparse.Namespace, part: str, sigma: float | None = None) -> Path:
    """Train (or resume) one run; returns its directory."""
    out = run_dir(args, part, sigma)
    s = dict(TRAIN[part])
    if part == "clean":
        params = {"sigma": 0.0}
    elif part == "ddpm":
        params = {"classifier": str(train_part(args, "clean")), "sigma": 0.25}
    else:
        params = {"classifier": str(train_part(args, "clean")), "sigma": sigma,
                  "objective": "mse" if part == "mse" else "stability"}
        if part == "stab":
            s["init"] = str(train_part(args, "mse", sigma))
    t0 = time.time()
    train(out, dataset="mnist", data_root=args.data_root, method_params=params, momentum=0.9, weight_decay=1e-4,
          schedule="step", lr_gamma=0.1, seed=SEED, channels_last=True, resume=(out / "checkpoint.pt").is_file(),
          quiet=args.quiet, **s)
    print(f"trained {out.name} ({time.time() - t0:.0f}s this call)", flush=True)
    return out


def pipeline(args: argparse.Namespace, part: str, sigma: float) -> tuple[torch.nn.Module, dict]:
    """The model certified in row ``part`` at ``sigma`` (training what it needs), and its config."""
    if part == "gauss":
        return load_model(Path(args.gauss_runs) / f"gauss-sigma{sigma}", "cpu")
    clean_model, clean_config = load_model(train_part(args, "clean"), "cpu")
    if part == "clean":
        return clean_model, clean_config
    den = train_part(args, part, None if part == "ddpm" else sigma)
    model, _ = through_denoiser(clean_model, clean_config, den, sigma)
    return model, clean_config


def log_path(args: argparse.Namespace, part: str, sigma: float) -> Path:
    return Path(args.out) / f"{part}-sigma{sigma}.tsv"


def clean_accuracy(model: torch.nn.Module, test) -> float:
    """Accuracy of the base pipeline (no noise) on the first CLEAN_ACC_IMAGES test images."""
    model = model.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, CLEAN_ACC_IMAGES, 250):
            xs, ys = zip(*(test[i] for i in range(start, start + 250)))
            right += int((model(torch.stack(xs)).argmax(1) == torch.as_tensor(ys)).sum())
    return right / CLEAN_ACC_IMAGES


def certify_part(args: argparse.Namespace, part: str) -> None:
    test = get_dataset("mnist", "test", args.data_root)
    for sigma in SIGMAS:
        model, config = pipeline(args, part, sigma)
        log = log_path(args, part, sigma)
        log.parent.mkdir(parents=True, exist_ok=True)
        acc_file = log.with_suffix(".clean_acc.json")
        if not acc_file.is_file():
            atomic_write_bytes(acc_file, json.dumps({"clean_accuracy": clean_accuracy(model, test),
                                                     "images": CLEAN_ACC_IMAGES}).encode(), "out")
        smooth = Smooth(model, 10, sigma, channels_last=True)
        t0 = time.time()
        certify_dataset(smooth, test, log, n0=N0, n=N, alpha=ALPHA, batch_size=args.batch,
                        selection=Selection(SKIP, NUM_IMAGES), seed=SEED,
                        meta={"pipeline": part, "label": LABELS[part], "config": config}, progress=not args.quiet)
        print(f"certified {part} sigma {sigma} ({time.time() - t0:.0f}s this call)", flush=True)


def speed(args: argparse.Namespace, rounds: int = 5) -> None:
    """Certification samples per second of every pipeline, interleaved in one process (one CERTIFY
    of test image 0 with N0 + N samples per pipeline and round, the median over ``rounds``), so
    that the load of a shared CPU affects them alike; written to ``speed.json``."""
    test = get_dataset("mnist", "test", args.data_root)
    x = test[0][0]
    out: dict = {}
    for sigma in SIGMAS:
        smooths = {p: Smooth(pipeline(args, p, sigma)[0], 10, sigma, channels_last=True) for p in PIPELINES}
        times: dict = {p: [] for p in PIPELINES}
        for _ in range(rounds):
            for p, smooth in smooths.items():
                t0 = time.perf_counter()
                smooth.certify(x, N0, N, ALPHA, args.batch)
                times[p].append(time.perf_counter() - t0)
        out[str(sigma)] = {p: (N0 + N) / float(np.median(t)) for p, t in times.items()}
        print(f"sigma {sigma}: " + ", ".join(f"{p} {v:.0f}/s" for p, v in out[str(sigma)].items()), flush=True)
    out["rounds"], out["threads"] = rounds, torch.get_num_threads()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "speed.json").write_text(json.dumps(out, indent=1) + "\n")


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows, lines = [], ["# Denoised smoothing on MNIST (issue 25)", "",
                       f"The first {NUM_IMAGES} of the 500 test images of mnist_certify.py (indices 0, 20, ..., "
                       f"{SKIP * (NUM_IMAGES - 1)}), N0 = {N0}, N = {N:,}, alpha = {ALPHA} for every row "
                       f"(largest certifiable radius sigma x {float(norm.ppf(ALPHA ** (1 / N))):.2f}). "
                       "Clean accuracy: the base pipeline (no noise) on the first "
                       f"{CLEAN_ACC_IMAGES} test images. Samples/s: `speed.json` (`--speed`: one CERTIFY of N0 + N "
                       "samples per pipeline, interleaved, median of 5 rounds, one thread, shared CPU). Paired SE "
                       "over the images.", ""]
    for sigma in SIGMAS:
        present = [p for p in PIPELINES if log_path(args, p, sigma).is_file()]
        logs = {p: load_log(log_path(args, p, sigma)) for p in present}
        logs = {p: lg for p, lg in logs.items() if lg.n >= NUM_IMAGES}
        if not logs:
            continue
        lines += [f"## sigma = {sigma}", "",
                  "| pipeline | n | " + " | ".join(f"r={r:g}" for r in RADII[sigma])
                  + " | ACR (SE) | ACR - ACR(clean, no denoiser) (paired SE) | clean acc. | samples/s | x classifier alone |",
                  "|:---|---:|" + "---:|" * len(RADII[sigma]) + "---:|---:|---:|---:|---:|"]
        speeds = json.loads((out / "speed.json").read_text()).get(str(sigma), {}) if (out / "speed.json").is_file() else {}
        base_speed = speeds.get("clean")
        for p, lg in logs.items():
            acc = certified_accuracy(lg, np.array(RADII[sigma])) * 100
            acr, se = average_certified_radius(lg), acr_standard_error(lg)
            diff = acr_difference(lg, logs["clean"]) if "clean" in logs and p != "clean" else None
            speed = speeds.get(p)
            clean_acc = json.loads(log_path(args, p, sigma).with_suffix(".clean_acc.json").read_text())["clean_accuracy"]
            row = {"sigma": sigma, "pipeline": p, "label": LABELS[p], "n": lg.n,
                   "certified_accuracy": dict(zip(map(str, RADII[sigma]), map(float, acc))), "acr": acr, "acr_se": se,
                   "acr_minus_clean": None if diff is None else diff[0],
                   "acr_minus_clean_se": None if diff is None else diff[1],
                   "clean_accuracy": clean_acc, "samples_per_s": speed,
                   "speed_vs_classifier": None if speed is None or base_speed is None else speed / base_speed}
            rows.append(row)
            lines.append(f"| {LABELS[p]} | {lg.n} | " + " | ".join(f"{a:.1f}" for a in acc)
                         + f" | {acr:.3f} ({se:.3f}) | "
                         + ("" if diff is None else f"{diff[0]:+.3f} ({diff[1]:.3f})")
                         + f" | {100 * clean_acc:.1f} | " + ("" if speed is None else f"{speed:.0f}") + " | "
                         + ("" if row["speed_vs_classifier"] is None else f"{row['speed_vs_classifier']:.3f}") + " |")
        pairs = [("stab", "mse"), ("gauss", "stab"), ("gauss", "mse"), ("ddpm", "mse"), ("gauss", "ddpm")]
        diffs = [(a, b, acr_difference(logs[a], logs[b])) for a, b in pairs if a in logs and b in logs]
        if diffs:
            lines += ["", "Paired: " + "; ".join(f"{a} - {b} {d[0]:+.3f} ({d[1]:.3f})" for a, b, d in diffs) + "."]
            rows.append({"sigma": sigma, "paired": {f"{a}-{b}": {"mean": d[0], "se": d[1]} for a, b, d in diffs}})
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--runs-dir", default="experiments/results/denoised_mnist/runs")
    ap.add_argument("--gauss-runs", default="experiments/results/mnist/runs/full",
                    help="mnist_certify.py's full-protocol run directories (gauss-sigma{S})")
    ap.add_argument("--out", default="experiments/results/denoised_mnist")
    ap.add_argument("--only", default=",".join(PIPELINES), help=f"comma list of {', '.join(PIPELINES)}")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="only write the tables from the logs")
    ap.add_argument("--speed", action="store_true", help="only time the pipelines (speed.json), interleaved")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.speed:
        torch.set_num_threads(args.threads)
        speed(args)
        return
    if not args.report:
        torch.set_num_threads(args.threads)
        parts = [p.strip() for p in args.only.split(",") if p.strip()]
        bad = sorted(set(parts) - set(PIPELINES))
        if bad:
            ap.error(f"--only: unknown part(s) {', '.join(bad)}; choose from {', '.join(PIPELINES)}")
        for part in parts:
            certify_part(args, part)
    if not args.no_report:
        report(args)


if __name__ == "__main__":
    main()
