"""Testing a certify log's certificates empirically (``smoothcert check-certificates``).

A certificate (cA, R) from CERTIFY promises g(x + delta) = cA for ||delta||_2 < R with probability
>= 1 - alpha_c (Cohen et al., 2019, Theorem 1 and Proposition 2), and PREDICT returns a class
other than g(x') with probability <= alpha_p (their Proposition 1); so PREDICT at a point inside
the ball answers neither cA nor abstain with probability <= alpha_c + alpha_p. ``check_certificates``
attacks each certified input inside its ball and tests the number of such violations against
Binomial(K, alpha_c + alpha_p) with an exact one-sided binomial test.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy.stats import binomtest
from torch import nn

from ..runs.logged import LoggedJob, Selection, meta_path, run_job
from ..data import ImageDataset
from ..logs import read_tsv
from ..smoothing import ABSTAIN, model_device
from ..validation import ArgumentError, check_alpha, check_float, check_int
from .base import lp_norm
from .evaluate import SmoothedEval, batch_sizes, log_path, predictor
from .pgd import PGD
from .soft_smoothed import SoftSmoothed

CHECK_COLUMNS = ("idx", "label", "predict", "correct", "certified", "radius", "eps", "delta_norm", "violation",
                 "time")


@dataclass(frozen=True)
class CertificateCheck:
    """Outcome of ``check_certificates``: ``violations`` of ``checked`` certified inputs were
    predicted (PREDICT) as a class other than the certified one inside their certified ball;
    ``p_value`` = P(Binomial(checked, null_rate) >= violations), ``significant`` if < ``level``."""

    checked: int
    violations: int
    abstained: int
    null_rate: float
    p_value: float
    level: float

    @property
    def violation_rate(self) -> float:
        return self.violations / self.checked if self.checked else 0.0

    @property
    def significant(self) -> bool:
        return self.p_value < self.level


def violation_pvalue(violations: int, checked: int, null_rate: float) -> float:
    """One-sided exact binomial test: P(Binomial(checked, null_rate) >= violations)."""
    if checked == 0 or violations == 0:
        return 1.0
    return float(binomtest(violations, checked, min(null_rate, 1.0), alternative="greater").pvalue)


def read_certificates(log: str | Path) -> list[tuple[int, int, int, float]]:
    """(idx, label, cA, radius) for each certified row (predict != -1, radius > 0) of a certify log
    (columns idx label predict radius ..., Cohen et al.'s format)."""
    header, rows = read_tsv(log)
    need = ("idx", "label", "predict", "radius")
    if any(c not in header for c in need):
        raise ValueError(f"{str(log)!r} is not a certify log (needs columns {' '.join(need)}, has {' '.join(header)})")
    h = {c: header.index(c) for c in need}
    try:
        certs = [(int(r[h["idx"]]), int(r[h["label"]]), int(r[h["predict"]]), float(r[h["radius"]])) for r in rows]
    except ValueError:
        raise ValueError(f"{str(log)!r} has a malformed row") from None
    return [c for c in certs if c[2] != ABSTAIN and c[3] > 0]


def check_gaussian_l2(log: str | Path) -> None:
    """ArgumentError("log") if the log's metadata records certificates other than Gaussian-noise
    L2 ones (another ``noise`` or ``norm``): the check attacks the Gaussian soft smoothed
    classifier in L2. Logs without metadata, or without those settings, are Gaussian L2."""
    mp = meta_path(log)
    if not mp.is_file():
        return
    try:
        settings = json.loads(mp.read_text()).get("certify") or {}
    except (ValueError, AttributeError):
        return  # unreadable metadata: read_certificates judges the log itself
    noise, norm = settings.get("noise", "gaussian"), settings.get("norm") or "l2"
    if noise != "gaussian" or norm != "l2":
        raise ArgumentError("log", f"log: {str(log)!r} holds {noise} noise {norm} certificates; check-certificates "
                                   "tests Gaussian L2 certificates only")


def check_certificates(model: nn.Module, dataset: ImageDataset, log: str | Path, sigma: float,
                       out: str | Path | None = None, *, cert_alpha: float = 0.001, n: int = 1000,
                       alpha: float = 0.001, num_noise_vec: int = 8, steps: int = 10, step_size: float | None = None,
                       radius_scale: float = 0.99, level: float = 0.01, batch_size: int = 256,
                       predict_batch: int | None = None, selection: Selection = Selection(), seed: int | None = None,
                       meta: dict[str, Any] | None = None, progress: bool = False) -> CertificateCheck:
    """Try to break the certificates of a certify ``log`` (made with noise level ``sigma`` and
    failure probability ``cert_alpha``): for each certified input (cA, R), L2 PGD against the
    soft smoothed classifier pushes away from cA within radius ``radius_scale`` * R (step size
    default 2.5 * eps / steps per input), then PREDICT (n, alpha) classifies the result. A
    violation is a prediction that is neither cA nor abstain. Under a correct certificate that
    has probability <= cert_alpha + alpha per input (module doc); the count is tested against that
    binomial. With ``out``, rows go there (``CHECK_COLUMNS``, resumable); ``selection`` picks
    among the certified rows. ``batch_size`` and ``predict_batch``: as ``attack_dataset``'s
    (``evaluate.batch_sizes``)."""
    batch_size = check_int("batch_size", batch_size, 1)
    radius_scale = check_float("radius_scale", radius_scale, 0.0, 1.0, lo_open=True)
    cert_alpha = check_float("cert_alpha", cert_alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    level = check_float("level", level, 0.0, 1.0, lo_open=True, hi_open=True)
    check_alpha(alpha)
    spec = SmoothedEval(sigma, num_noise_vec, n, alpha)
    per_batch, predict_block, recorded = batch_sizes(batch_size, spec, predict_batch)
    PGD(1.0, steps, step_size, "l2")  # validates steps and step_size
    check_gaussian_l2(log)
    certs = read_certificates(log)
    chosen = [certs[k] for k in selection.indices(len(certs))]
    by_idx = {c[0]: c for c in chosen}
    for idx, label, _, _ in chosen:
        if not 0 <= idx < len(dataset):
            raise ValueError(f"certify log has idx {idx}, outside the dataset split (size {len(dataset)})")
        if int(dataset[idx][1]) != label:
            raise ValueError(f"certify log says idx {idx} has label {label}, the dataset says {int(dataset[idx][1])}:"
                             " wrong dataset or split?")
    device = model_device(model)
    predict = predictor(model, dataset.num_classes, spec, predict_block)

    def step(idx: list[int], xs: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> list[list[Any]]:
        c_a = torch.tensor([by_idx[i][2] for i in idx], device=device)
        radius = torch.tensor([by_idx[i][3] for i in idx], device=device)
        eps = radius * radius_scale
        pgd = PGD(eps, steps, step_size, "l2")
        x_adv = pgd(SoftSmoothed(model, sigma, num_noise_vec, generator=gen), xs, c_a, gen)
        pred = predict(x_adv, gen)
        norms = lp_norm(x_adv - xs, "l2").cpu()
        return [[int(p), int(int(p) == int(y)), int(c), float(r), round(float(e), 6), round(float(d), 6),
                 int(int(p) not in (int(c), ABSTAIN))]
                for p, y, c, r, e, d in zip(pred, ys.cpu(), c_a.cpu(), radius.cpu(), eps.cpu(), norms)]

    settings = {"certify_log": str(log), "sigma": sigma, "cert_alpha": cert_alpha, "smoothed": spec.settings(),
                "steps": steps, "step_size": step_size, "radius_scale": radius_scale}
    job = LoggedJob(key="check", kind="certificate check", columns=CHECK_COLUMNS, work=step, settings=settings,
                    recorded=recorded, selection=selection, indices=sorted(by_idx), per_batch=per_batch,
                    meta=meta)
    with log_path(out) as path:
        run_job(job, dataset, path, device=device, seed=seed, progress=progress)
        header, rows = read_tsv(path)
    h = {c: k for k, c in enumerate(header)}
    rows = [r for r in rows if int(r[h["idx"]]) in by_idx]
    violations = sum(int(r[h["violation"]]) for r in rows)
    abstained = sum(int(r[h["predict"]]) == ABSTAIN for r in rows)
    null_rate = cert_alpha + alpha  # CERTIFY's failure probability plus PREDICT's (module doc)
    return CertificateCheck(len(rows), violations, abstained, null_rate,
                            violation_pvalue(violations, len(rows), null_rate), level)


__all__ = ["CHECK_COLUMNS", "CertificateCheck", "check_certificates", "read_certificates", "violation_pvalue"]
