"""Round down the radii of committed certify logs that the first release rounded to nearest.

The first release logged ``round(radius, 4)``, so a logged radius could exceed the certificate by
up to 5e-5; since commit 31d4d37 the runner logs ``logs.floor_decimal(radius, 4)`` (rounded down).
Our logs record no counts, but a fixed-N one-sided certificate takes one of at most N/2 + 1
values, ``noise.radius(CP_lower(nA, N, alpha))`` for nA = 0..N (the library's own functions), so
each logged value leaves a few candidate counts:

* a log **needs the fix** when some positive radius has no count whose rounded-down radius is the
  logged value (it cannot have been rounded down): the 18 MNIST logs of the first release fail it
  on 4 % to 88 % of their rows, every later log on none;
* a fixed row's radius becomes ``floor_decimal`` of the smallest candidate radius over the counts
  consistent with the logged value under either rounding (``[r - 5e-5, r + 1e-4)``): exact where
  all candidates round down alike, else at most 1e-4 low, never above the certificate.

Only logs whose ``.meta.json`` records the settings (``certify``: sigma, N, alpha; noise, norm
and bound as recorded, a first-release meta meaning Gaussian, L2, one-sided) are considered;
two-sided, sequential and Linf certificates are skipped (their radius is not a function of nA
alone). The published extracts under ``results/mnist/published/`` are another project's logs
and are left as published. A fixed log's meta gets ``radius_rounding``; a second run finds
nothing to do (the fixed values are consistent with rounding down).

    python experiments/fix_rounding.py            # fix and list the logs it rewrote
    python experiments/fix_rounding.py --check    # list what it would rewrite, write nothing
"""
from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from smoothcert.logs import atomic_write_bytes, atomic_write_json, floor_decimal, read_tsv
from smoothcert.noise import get_noise
from smoothcert.runner import LEGACY_DEFAULTS
from smoothcert.stats import clopper_pearson_lower

RESULTS = Path(__file__).resolve().parent / "results"
SKIPPED_DIRS = ("published",)  # another project's logs, kept as published
PLACES = 4
STEP = 10.0 ** -PLACES
EPS = 1e-9  # float slack around the interval ends (only ever widens the candidate set)
NOTE = ("logged rounded to nearest (first release); rewritten rounded down by experiments/fix_rounding.py: "
        "floor_4 of the smallest radius noise.radius(CP_lower(nA, N, alpha)) over the counts nA consistent "
        "with the logged value (exact where they all round down alike, else at most 1e-4 low)")


def possible_radii(settings: dict) -> np.ndarray:
    """Sorted distinct positive radii a fixed-N one-sided certificate with ``settings`` can give."""
    return _possible_radii(str(settings["noise"]), float(settings["sigma"]), str(settings["norm"]), int(settings["N"]),
                           float(settings["alpha"]))


@lru_cache(maxsize=None)
def _possible_radii(noise: str, sigma: float, norm: str, n: int, alpha: float) -> np.ndarray:
    p_lower = clopper_pearson_lower(np.arange(n + 1), n, alpha)
    radii = np.asarray(get_noise(noise, sigma).radius(p_lower, norm))
    return np.unique(radii[radii > 0])


def _any_in(values: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    """The values in [lo, hi) (sorted input), or None."""
    a, b = np.searchsorted(values, lo, side="left"), np.searchsorted(values, hi, side="left")
    return values[a:b] if b > a else None


def settings_of(meta: dict | None) -> dict | None:
    """The certify settings if the radius is a function of nA alone (fixed N, one-sided, no dim)."""
    run = (meta or {}).get("certify")
    if not isinstance(run, dict) or not all(k in run for k in ("sigma", "N", "alpha")):
        return None
    run = {**LEGACY_DEFAULTS, **{k: v for k, v in run.items() if v is not None}}
    if run["sequential"] or run["bound"] != "one-sided" or run["norm"] == "linf":
        return None
    return run


def fix(log: Path, meta: dict, settings: dict, write: bool) -> int | None:
    """Rewrite ``log``'s radius column (see the module doc); the number of rows changed, or None
    when the log is consistent with rounding down already."""
    header, rows = read_tsv(log)
    k = header.index("radius")
    radii = possible_radii(settings)
    logged = [float(row[k]) for row in rows]
    floor_ok = [r == 0 or _any_in(radii, r - EPS, r + STEP - EPS) is not None for r in logged]
    if all(floor_ok):
        return None
    changed = 0
    for row, r in zip(rows, logged):
        if r == 0:
            continue
        cands = _any_in(radii, r - STEP / 2 - EPS, r + STEP + EPS)
        if cands is None:
            raise ValueError(f"{log}: radius {row[k]} is no radius of these settings {settings}")
        new = floor_decimal(float(cands[0]), PLACES)
        if float(new) != r:
            row[k] = new
            changed += 1
    if write:
        text = "\t".join(header) + "\n" + "".join("\t".join(row) + "\n" for row in rows)
        atomic_write_bytes(log, text.encode("utf-8"))
        atomic_write_json({**meta, "radius_rounding": {"note": NOTE, "rows_changed": changed}},
                          Path(str(log) + ".meta.json"))
    return changed


def candidates(root: Path = RESULTS) -> list[tuple[Path, dict, dict]]:
    """(log, meta, settings) of each certify log under ``root`` whose meta records settings that
    determine its radius by nA alone (``settings_of``); the published extracts left out."""
    found = []
    for log in sorted(root.rglob("*.tsv")):
        meta_file = Path(str(log) + ".meta.json")
        if any(part in SKIPPED_DIRS for part in log.relative_to(root).parts) or not meta_file.is_file():
            continue
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        settings = settings_of(meta)
        if settings is not None and "radius" in read_tsv(log)[0]:
            found.append((log, meta, settings))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder searched for certify logs")
    parser.add_argument("--check", action="store_true", help="list the logs that need the fix; write nothing")
    args = parser.parse_args()
    root = Path(args.results)
    touched = []
    for log, meta, settings in candidates(root):
        changed = fix(log, meta, settings, write=not args.check)
        if changed is not None:
            touched.append(log)
            print(f"{'needs the fix' if args.check else 'rewrote'}: {log.relative_to(root.parent)} "
                  f"({changed} of {len(read_tsv(log)[1])} radii {'to lower' if args.check else 'lowered'})")
    print(f"{len(touched)} logs {'need the fix' if args.check else 'rewritten'}")


if __name__ == "__main__":
    main()
