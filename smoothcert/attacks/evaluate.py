"""Dataset-level empirical robustness (``smoothcert attack``): the evaluated classifier's
prediction (the base model's argmax, or PREDICT of the smoothed classifier) at clean and attacked
inputs, one TSV row per input when asked, and the clean / robust accuracy."""
from __future__ import annotations

import copy
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..runs.logged import LoggedJob, Selection, run_job
from ..data import ImageDataset
from ..logs import read_tsv
from ..noise import get_noise, noise_params
from ..smoothing import Smooth, model_device
from ..validation import ArgumentError, check_alpha, check_int, check_sigma
from .base import Attack, frozen_eval, lp_norm
from .soft_smoothed import SoftSmoothed

ATTACK_COLUMNS = ("idx", "label", "predict", "correct", "clean_predict", "delta_norm", "time")


@dataclass(frozen=True)
class SmoothedEval:
    """The smoothed classifier attacked and evaluated, with ``noise`` (a name from
    ``smoothcert.noise.NOISES``; the run's own noise, see ``noise.config_noise``) at ``sigma``:
    PGD runs on ``SoftSmoothed(f, sigma, M, noise)`` (fresh noise per step), predictions come
    from ``Smooth(f, K, sigma, noise).predict`` with ``n`` samples at level ``alpha``
    (abstentions count as errors)."""

    sigma: float
    num_noise_vec: int = 8
    n: int = 1000
    alpha: float = 0.001
    noise: str = "gaussian"

    def __post_init__(self) -> None:
        check_sigma(self.sigma, positive=True)
        check_int("num_noise_vec", self.num_noise_vec, 1)
        check_int("n", self.n, 1)
        check_alpha(self.alpha)
        if not isinstance(self.noise, str):
            raise ArgumentError("noise", f"noise must be a noise name, got {self.noise!r}")
        object.__setattr__(self, "noise", get_noise(self.noise, self.sigma).name)  # validated, lower case

    def settings(self) -> dict[str, Any]:
        """The settings a log records (and a resume checks): the fields, with ``noise`` only when it
        is not gaussian (``noise_params``), so the logs of Gaussian runs read as before several noises."""
        fields = asdict(self)
        del fields["noise"]
        return {**fields, **noise_params(self.noise)}


@dataclass(frozen=True)
class AttackSummary:
    count: int
    clean_correct: int
    robust_correct: int

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.count if self.count else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return self.robust_correct / self.count if self.count else float("nan")


def predictor(model: nn.Module, num_classes: int, smoothed: SmoothedEval | None,
              batch_size: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Prediction of the evaluated classifier: argmax of f, or PREDICT of g (ABSTAIN = -1) with
    ``smoothed``. The caller's model is never changed: PREDICT runs on a copy (Smooth lays its
    model out channels-last for speed)."""
    if smoothed is None:
        def predict(xs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            with frozen_eval(model), torch.no_grad():
                return model(xs).argmax(1).cpu()
        return predict
    smooth = Smooth(copy.deepcopy(model), num_classes, smoothed.sigma, smoothed.noise)
    return lambda xs, gen: smooth.predict_batch(xs, smoothed.n, smoothed.alpha, batch_size, gen)


@contextmanager
def log_path(out: str | Path | None) -> Iterator[Path]:
    """``out``, or (None: the caller wants only the summary) a log in a folder removed afterwards."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="smoothcert-") as tmp:
        yield Path(tmp) / "log.tsv"


def batch_sizes(batch_size: int, smoothed: SmoothedEval | None, predict_batch: int | None) -> tuple[int, int, dict]:
    """(inputs per batch, PREDICT's noise block, the recorded batch settings) of an attack or a
    certificate check: ``batch_size`` rows per forward pass of the attack -- that many inputs, or
    ``batch_size // M`` with ``smoothed`` (M noisy copies each) --, each batch of inputs drawing
    from its own seeded generator; ``predict_batch`` (default ``batch_size``; ``smoothed`` only)
    the block in which PREDICT draws its samples from that generator (which also bounds its
    forward passes). Both change the draws, not their distribution: recorded, not checked on
    resume (``predict_batch`` only when given, so the metadata of the default reads as before)."""
    batch_size = check_int("batch_size", batch_size, 1)
    recorded: dict[str, Any] = {"batch_size": batch_size}
    if predict_batch is not None:
        if smoothed is None:
            raise ArgumentError("predict_batch", "predict_batch: PREDICT's noise block needs smoothed (the smoothed "
                                                 "classifier)")
        recorded["predict_batch"] = check_int("predict_batch", predict_batch, 1)
    per_batch = batch_size if smoothed is None else max(1, batch_size // smoothed.num_noise_vec)
    return per_batch, batch_size if predict_batch is None else predict_batch, recorded


def attack_dataset(model: nn.Module, dataset: ImageDataset, attack: Attack, out: str | Path | None = None, *,
                   source: nn.Module | None = None, smoothed: SmoothedEval | None = None, batch_size: int = 256,
                   predict_batch: int | None = None, selection: Selection = Selection(), seed: int | None = None,
                   meta: dict[str, Any] | None = None, progress: bool = False) -> AttackSummary:
    """Accuracy of ``model`` (or of its smoothed classifier) under ``attack`` on the selected
    inputs of ``dataset``; with ``out``, one TSV row each into ``out`` (``ATTACK_COLUMNS``:
    predict is the prediction at x', correct = [predict == label], clean_predict at x,
    delta_norm = ||x' - x|| in the attack's norm), resumable.

    White-box by default. Black-box with ``source``: the examples are crafted on ``source``
    alone (its gradients; with ``smoothed``, its soft smoothed classifier) and ``model`` is only
    evaluated, without autograd. ``batch_size`` counts rows per forward pass of the attack: a
    batch holds batch_size inputs, or batch_size // M with ``smoothed`` (M noisy copies each);
    ``predict_batch`` (default batch_size) is PREDICT's noise block (``batch_sizes``)."""
    per_batch, predict_block, recorded = batch_sizes(batch_size, smoothed, predict_batch)
    if not isinstance(attack, Attack):
        raise ArgumentError("attack", "attack must be an FGSM or PGD instance")
    device = model_device(model)
    predict = predictor(model, dataset.num_classes, smoothed, predict_block)
    crafter = model if source is None else source

    def step(idx: list[int], xs: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> list[list[Any]]:
        clean = predict(xs, gen)
        target = crafter if smoothed is None else SoftSmoothed(crafter, smoothed.sigma, smoothed.num_noise_vec,
                                                               smoothed.noise, generator=gen)
        x_adv = attack(target, xs, ys, gen)
        adv = predict(x_adv, gen)
        norms = lp_norm(x_adv - xs, attack.norm).cpu()
        return [[int(p), int(int(p) == int(y)), int(c), round(float(d), 6)]
                for p, y, c, d in zip(adv, ys.cpu(), clean, norms)]

    settings = {"attack": attack.config(), "black_box": source is not None,
                "smoothed": smoothed.settings() if smoothed else None}
    job = LoggedJob(key="attack", columns=ATTACK_COLUMNS, work=step, settings=settings, recorded=recorded,
                    selection=selection, per_batch=per_batch, meta=meta)
    with log_path(out) as path:
        run_job(job, dataset, path, device=device, seed=seed, progress=progress)
        return summarize_attack_log(path)


def summarize_attack_log(path: str | Path) -> AttackSummary:
    """Clean and robust accuracy of an attack log (``ATTACK_COLUMNS``)."""
    header, rows = read_tsv(path)
    if tuple(header) != ATTACK_COLUMNS:
        raise ValueError(f"{str(path)!r} is not an attack log")
    h = {c: k for k, c in enumerate(header)}
    return AttackSummary(len(rows), sum(int(r[h["clean_predict"]]) == int(r[h["label"]]) for r in rows),
                         sum(int(r[h["correct"]]) for r in rows))


__all__ = ["ATTACK_COLUMNS", "AttackSummary", "SmoothedEval", "attack_dataset", "batch_sizes", "log_path",
           "predictor", "summarize_attack_log"]
