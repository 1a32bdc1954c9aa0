"""Check that committed MNIST certify logs come from the committed checkpoints (issue 15).

For every complete log of a protocol (default: full), this reloads the run directory named in the
log's meta.json, re-runs CERTIFY on the first K images of the log's selection with the recorded
settings and seed, and compares:

* the model fingerprint (``model_sha256``, SHA-256 of the state dict) recorded in the log's meta
  with the one of the checkpoint as it is now;
* each re-certified row (predict, radius, correct) with the committed row of the same idx.

CERTIFY draws its noise from a generator seeded per input (``runner.derived_seed(seed, idx)``), so
a re-run of any one image reproduces its row exactly; a differing row means the log and the
checkpoint do not belong together (or the sampler changed since the log was written). Logs of the
first release recorded no fingerprint and rounded radii to nearest (the runner now rounds down):
for those, the same prediction with a radius 1e-4 away is reported as such, not as a mismatch. Writes
``--out/verify_{protocol}.json`` and prints one line per run; exits 1 if anything differs. A run
directory without its checkpoint (not committed) is listed as not checked.

    python experiments/mnist_verify.py --runs-dir experiments/results/mnist/runs --images 3
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mnist_certify import NUM_IMAGES, PROTOCOLS, SEED, SKIP, read_log, run_sigma
from smoothcert.analysis import read_meta
from smoothcert.certification import Selection, certify_dataset
from smoothcert.data import get_dataset
from smoothcert.logs import atomic_write_bytes, read_tsv
from smoothcert.runs import load_model
from smoothcert.smoothing import Smooth

COMPARED_COLUMNS = ("idx", "label", "predict", "radius", "correct")


def rows_by_idx(path: Path) -> dict[str, list[str]]:
    """The log's rows keyed by idx, restricted to the compared columns (time differs by design)."""
    header, rows = read_tsv(path)
    cols = [header.index(c) for c in COMPARED_COLUMNS]
    return {r[cols[0]]: [r[c] for c in cols] for r in rows}


def verify_log(log: Path, runs_dir: Path, images: int, data_root: str, device: str) -> dict:
    """Re-certify the first ``images`` inputs of ``log`` from its run directory; the comparison."""
    meta = read_meta(log)
    cert = meta["certify"]
    run_dir = runs_dir / Path(meta["model"]).relative_to(Path(meta["model"]).parents[1])  # protocol/name
    if not (run_dir / "checkpoint.pt").is_file():
        return {"log": str(log), "run_dir": str(run_dir), "checkpoint": "missing", "sha256_match": None,
                "rows_match": None}
    model, _ = load_model(run_dir, device)
    smooth = Smooth(model, 10, cert["sigma"], channels_last=cert.get("channels_last", True))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        redo = Path(tmp) / log.name
        certify_dataset(smooth, get_dataset("mnist", "test", data_root), redo, n0=cert["N0"], n=cert["N"],
                        alpha=cert["alpha"], batch_size=cert["batch"], selection=Selection(SKIP, images),
                        seed=meta.get("seed", SEED))
        fresh = rows_by_idx(redo)
        fingerprint = read_meta(redo)["certify"]["model_sha256"]
    committed = rows_by_idx(log)
    diffs = [{"idx": i, "committed": committed.get(i), "recertified": row}
             for i, row in fresh.items() if committed.get(i) != row]
    recorded = cert.get("model_sha256")
    return {"log": str(log), "run_dir": str(run_dir), "images": sorted(map(int, fresh)),
            "sha256_recorded": recorded, "sha256_checkpoint": fingerprint,
            "sha256_match": None if recorded is None else recorded == fingerprint,
            "rows_match": not diffs, "rows_match_but_last_radius_digit": bool(diffs) and all(
                _last_digit_only(d["committed"], d["recertified"]) for d in diffs),
            "diffs": diffs, "seconds": round(time.time() - t0, 1)}


def _last_digit_only(committed: list[str] | None, fresh: list[str]) -> bool:
    """Same prediction and label, radii 1e-4 apart: a log of the first release, which rounded radii to
    nearest where the runner now rounds down (same counts, same bound)."""
    if committed is None:
        return False
    same = [a == b for k, (a, b) in enumerate(zip(committed, fresh)) if COMPARED_COLUMNS[k] != "radius"]
    r = COMPARED_COLUMNS.index("radius")
    return all(same) and abs(float(committed[r]) - float(fresh[r])) <= 1e-4 + 1e-9


def status(r: dict) -> str:
    """One word for a run: exact, legacy (no fingerprint recorded; radii differ in the last digit only), or DIFFERS."""
    if r["sha256_match"] is False:
        return "DIFFERS"
    if r["rows_match"]:
        return "exact" if r["sha256_match"] else "exact rows, no fingerprint recorded"
    if r["sha256_match"] is None and r["rows_match_but_last_radius_digit"]:
        return "legacy: no fingerprint recorded, radii 1e-4 apart (rounded to nearest then, down now)"
    return "DIFFERS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="full")
    ap.add_argument("--runs-dir", default="experiments/results/mnist/runs")
    ap.add_argument("--out", default="experiments/results/mnist")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--images", type=int, default=3, help="images re-certified per log (the first of the selection)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.images < 1:
        ap.error("--images must be >= 1")
    torch.set_num_threads(args.threads)
    logs = sorted(l for l in (Path(args.out) / args.protocol).glob("*.tsv")
                  if not l.name.endswith(".train_log.tsv") and read_log(l).n == NUM_IMAGES)
    results = []
    for log in logs:
        r = verify_log(log, Path(args.runs_dir), args.images, args.data_root, args.device)
        results.append(r)
        if r.get("checkpoint") == "missing":
            print(f"{log.stem}: no checkpoint in {r['run_dir']} (not committed), not checked", flush=True)
            continue
        r["status"] = status(r)
        print(f"{log.stem} (sigma {run_sigma(log.stem)}): {r['status']} on idx {r['images']} ({r['seconds']} s)",
              flush=True)
    checked = [r for r in results if r.get("checkpoint") != "missing"]
    ok = bool(checked) and all(r["status"] != "DIFFERS" for r in checked)
    atomic_write_bytes(Path(args.out) / f"verify_{args.protocol}.json",
                       (json.dumps({"protocol": args.protocol, "images_per_log": args.images, "all_match": ok,
                                   "checked": len(checked), "runs": results}, indent=2) + "\n")
                       .encode())
    print("all match" if ok else "MISMATCH", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
