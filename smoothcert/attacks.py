"""Empirical robustness: FGSM and PGD (L2 and Linf) on a base model or on the soft smoothed
classifier, and the dataset-level evaluations behind ``smoothcert attack``.

Attacks follow torchattacks' shape: one class per attack, the attack's settings in the object,
one calling convention ``attack(model, x, y) -> x_adv`` (an optional ``generator`` for random
starts). ``model`` maps (B, C, H, W) pixels in [0, 1] to (B, K) logits -- or log-probabilities,
as ``SoftSmoothed`` returns; the cross-entropy below is the same for both.

* ``FGSM(eps, norm)`` (Goodfellow et al., 2015): x' = clip_[0,1](x + eps * d(grad)) with
  d = sign for Linf and d = grad / ||grad||_2 for L2 (the fast gradient method).
* ``PGD(eps, steps, step_size, norm, random_start)`` (Madry et al., 2018):
  x_{t+1} = clip_[0,1](x + Proj_eps(x_t + a * d(grad_x CE(f(x_t), y)) - x)), where Proj_eps
  projects onto the eps-ball of the norm. Clipping after the projection only moves coordinates
  towards x, so x' stays in the ball and in [0, 1]. ``eps = inf`` is the unbounded PGD of the
  gradient-masking sanity check.

During an attack the model is in eval mode and its parameters do not require grad (only the
input gets a gradient); every module's train/eval flag and every parameter's requires_grad are
restored afterwards, also after an error (``frozen_eval``).

``SoftSmoothed`` is the soft smoothed classifier of Salman et al. (NeurIPS 2019):
G(x) = E_{d ~ N(0, sigma^2 I)} softmax(f(x + d)), estimated by the mean softmax over M noisy
copies of x. The copies share the one input (hence one adversarial delta); its forward returns
log G, so the attack loss is their SmoothAdv objective -log G_y(x'). SmoothAdv training
(``methods.smoothadv``) and ``smoothcert attack --smoothed`` both run ``PGD`` on it.

``attack_dataset`` and ``check_certificates`` evaluate a dataset split into resumable TSV logs.
A certificate (cA, R) from CERTIFY promises g(x + delta) = cA for ||delta||_2 < R with
probability >= 1 - alpha_c, and PREDICT returns a class other than g(x') with probability <=
alpha_p; so a PREDICT at a point inside the ball answers neither cA nor abstain with probability
<= alpha_c + alpha_p. ``check_certificates`` attacks each certified input inside its ball and
tests the number of such violations against Binomial(K, alpha_c + alpha_p).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import nn

from .data import ImageDataset
from .logs import read_tsv
from .noise import GaussianNoise
from .runner import Selection, run_logged
from .smoothing import ABSTAIN, Smooth, model_device
from .validation import check_int

NORMS = ("linf", "l2")
ATTACK_COLUMNS = ("idx", "label", "predict", "correct", "clean_predict", "delta_norm", "time")
CHECK_COLUMNS = ("idx", "label", "predict", "correct", "certified", "radius", "eps", "delta_norm", "violation",
                 "time")


# -- geometry -----------------------------------------------------------------------------
def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of a batch ``delta`` (B, ...): a (B,) tensor."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if check_norm(norm) == "linf" else flat.norm(dim=1)


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped to broadcast over the batch ``like`` (B, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(grad) (Linf), grad / ||grad||_2 (L2)."""
    if check_norm(norm) == "linf":
        return grad.sign()
    return grad / _rows(lp_norm(grad, "l2").clamp_min(1e-12), grad)


def project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of each row of ``delta`` onto the ``norm`` ball of radius ``eps`` (B,)."""
    e = _rows(eps.to(delta.dtype), delta)
    if check_norm(norm) == "linf":
        return torch.maximum(torch.minimum(delta, e), -e)
    n = _rows(lp_norm(delta, "l2").clamp_min(1e-12), delta)
    return delta * (e / n).clamp(max=1.0)


@contextmanager
def frozen_eval(model: Any) -> Iterator[Any]:
    """Inside the block: eval mode, parameters with requires_grad=False. On exit every module's
    train/eval flag and every parameter's requires_grad are restored (also after an error).
    A plain callable passes through untouched."""
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.requires_grad_(g)


# -- the soft smoothed classifier ---------------------------------------------------------
class SoftSmoothed(nn.Module):
    """log G(x), G(x) = (1/M) sum_k softmax(f(x + d_k)), d_k ~ N(0, sigma^2 I) (Salman et al.,
    2019): the soft smoothed classifier that SmoothAdv attacks.

    ``noise`` (optional, shape (M, *x.shape)) fixes the M noise vectors -- SmoothAdv draws them
    once per batch and reuses them in every attack step and in the training step. Without it each
    forward draws M fresh vectors through ``GaussianNoise`` (with ``generator``), so each PGD
    step follows a fresh estimate of the gradient of log G.
    """

    def __init__(self, base_classifier: nn.Module, sigma: float, num_noise_vec: int = 1,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.base_classifier = base_classifier
        self.noise_dist = GaussianNoise(sigma)
        self.num_noise_vec = num_noise_vec
        if noise is not None and noise.shape[0] != self.num_noise_vec:
            raise ValueError(f"noise must hold num_noise_vec={num_noise_vec} vectors, got shape {tuple(noise.shape)}")
        self.fixed_noise = noise
        self.generator = generator

    @property
    def sigma(self) -> float:
        return self.noise_dist.sigma

    def draw_noise(self, x: torch.Tensor) -> torch.Tensor:
        """M noise vectors for the batch ``x``: a (M, *x.shape) tensor."""
        return self.noise_dist.sample_(x.new_empty((self.num_noise_vec, *x.shape)), self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.fixed_noise if self.fixed_noise is not None else self.draw_noise(x)
        if noise.shape[1:] != x.shape:
            raise ValueError(f"fixed noise of shape {tuple(noise.shape)} does not fit inputs {tuple(x.shape)}")
        logits = self.base_classifier((x.unsqueeze(0) + noise).flatten(0, 1))
        probs = F.softmax(logits.float(), dim=1).view(self.num_noise_vec, x.shape[0], -1).mean(0)
        return probs.clamp_min(1e-20).log()


# -- attacks ------------------------------------------------------------------------------
def _check_eps(eps: float | torch.Tensor, allow_inf: bool) -> float | torch.Tensor:
    if isinstance(eps, torch.Tensor):
        if eps.dim() != 1 or not bool(((eps > 0) & (eps < math.inf)).all()):
            raise ValueError("eps must be a number > 0, or a (B,) tensor of finite numbers > 0")
        return eps.detach().float()
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0) \
            or (eps == math.inf and not allow_inf):
        raise ValueError(f"eps must be a {'' if allow_inf else 'finite '}number > 0, got {eps!r}")
    return float(eps)


class Attack:
    """Base class: validates the batch, runs ``perturb`` inside ``frozen_eval`` with autograd on,
    returns a detached x' in [0, 1]. Subclasses set ``norm``/``eps`` and implement ``perturb``."""

    norm: str = "linf"
    eps: float | torch.Tensor = 0.0

    def __call__(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError("x must be a batch tensor (B, C, H, W)")
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be a ({x.shape[0]},) tensor of labels, got {getattr(y, 'shape', y)}")
        if isinstance(self.eps, torch.Tensor) and self.eps.shape != (x.shape[0],):
            raise ValueError(f"a per-input eps must have shape ({x.shape[0]},), got {tuple(self.eps.shape)}")
        x = x.detach().clone() if x.is_inference() else x.detach()
        if bool((x < 0).any() or (x > 1).any()):
            raise ValueError("x must be pixels in [0, 1]")
        with frozen_eval(model), torch.enable_grad():
            x_adv = self.perturb(model, x, y, generator)
        return x_adv.detach()

    def perturb(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _eps_rows(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.eps, torch.Tensor):
            return self.eps.to(x.device)
        return torch.full((x.shape[0],), self.eps, device=x.device)

    @staticmethod
    def gradient(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x of the summed cross-entropy, per-example cross-entropy) at ``x``."""
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad, loss.detach()

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class FGSM(Attack):
    """Fast gradient sign method: x' = clip_[0,1](x + eps * d(grad)), one gradient."""

    def __init__(self, eps: float | torch.Tensor, norm: str = "linf"):
        self.eps = _check_eps(eps, allow_inf=False)
        self.norm = check_norm(norm)

    def perturb(self, model, x, y, generator=None):
        grad, _ = self.gradient(model, x, y)
        step = _rows(self._eps_rows(x), x) * ascent_direction(grad, self.norm)
        return (x + step).clamp_(0.0, 1.0)

    def config(self) -> dict[str, Any]:
        return {"attack": "fgsm", "norm": self.norm, "eps": _plain(self.eps)}


class PGD(Attack):
    """Projected gradient ascent on the cross-entropy (Madry et al., 2018), ``steps`` steps of
    size ``step_size`` (default 2.5 * eps / steps, Madry et al.'s rule; a (B,) eps gives
    per-input steps). ``random_start``: x_0 uniform in the eps-ball (then clipped to [0, 1]),
    else x_0 = x. With ``track_loss`` the per-example losses of x_0..x_steps are kept in
    ``loss_history`` (steps + 1, B) -- one extra forward."""

    def __init__(self, eps: float | torch.Tensor, steps: int = 10, step_size: float | None = None,
                 norm: str = "linf", random_start: bool = False, track_loss: bool = False):
        self.eps = _check_eps(eps, allow_inf=True)
        self.steps = check_int("steps", steps, 1)
        self.norm = check_norm(norm)
        unbounded = not isinstance(self.eps, torch.Tensor) and self.eps == math.inf
        if step_size is None:
            if unbounded:
                raise ValueError("step_size must be given when eps is unbounded (inf)")
            self.step_size: float | torch.Tensor = 2.5 * self.eps / self.steps
        else:
            if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) \
                    or not (0 < step_size < math.inf):
                raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
            self.step_size = float(step_size)
        if random_start and unbounded:
            raise ValueError("random_start needs a bounded eps")
        self.random_start = bool(random_start)
        self.track_loss = bool(track_loss)
        self.loss_history: torch.Tensor | None = None

    def start(self, x: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x_0: x, or x + a uniform draw from the eps-ball, clipped to [0, 1]."""
        if not self.random_start:
            return x.clone()
        e = _rows(eps, x)
        if self.norm == "linf":
            delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * e
        else:  # uniform in the L2 ball: uniform direction, radius eps * U^(1/d)
            u = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            u = u / _rows(lp_norm(u, "l2").clamp_min(1e-12), u)
            r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / x[0].numel())
            delta = u * e * _rows(r, x)
        return (x + delta).clamp_(0.0, 1.0)

    def perturb(self, model, x, y, generator=None):
        eps = self._eps_rows(x)
        step = _rows(self.step_size.to(x.device), x) if isinstance(self.step_size, torch.Tensor) else self.step_size
        x_adv = self.start(x, eps, generator)
        history = []
        for _ in range(self.steps):
            grad, loss = self.gradient(model, x_adv, y)
            history.append(loss)
            x_adv = x_adv + step * ascent_direction(grad, self.norm)
            x_adv = (x + project(x_adv - x, eps, self.norm)).clamp_(0.0, 1.0)
        if self.track_loss:
            with torch.no_grad():
                history.append(F.cross_entropy(model(x_adv), y, reduction="none"))
            self.loss_history = torch.stack(history)
        return x_adv

    def config(self) -> dict[str, Any]:
        return {"attack": "pgd", "norm": self.norm, "eps": _plain(self.eps), "steps": self.steps,
                "step_size": _plain(self.step_size), "random_start": self.random_start}


def _plain(v: float | torch.Tensor) -> Any:
    """A JSON-friendly value (inf as the string "inf", per-input tensors as "per-input")."""
    if isinstance(v, torch.Tensor):
        return "per-input"
    return "inf" if v == math.inf else v


# -- dataset-level evaluation -------------------------------------------------------------
@dataclass(frozen=True)
class SmoothedEval:
    """The smoothed classifier attacked and evaluated: PGD runs on ``SoftSmoothed(f, sigma, M)``
    (fresh noise per step), predictions come from ``Smooth.predict`` with ``n`` samples at level
    ``alpha`` (abstentions count as errors)."""

    sigma: float
    num_noise_vec: int = 8
    n: int = 1000
    alpha: float = 0.001

    def __post_init__(self) -> None:
        GaussianNoise(self.sigma)  # validates sigma
        for name in ("num_noise_vec", "n"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")


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


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def _predictor(model: nn.Module, num_classes: int, smoothed: SmoothedEval | None,
               batch_size: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Prediction of the evaluated classifier: argmax of f, or PREDICT of g (ABSTAIN = -1)."""
    if smoothed is None:
        def predict(xs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            with frozen_eval(model), torch.no_grad():
                return model(xs).argmax(1).cpu()
        return predict
    smooth = Smooth(model, num_classes, smoothed.sigma)
    return lambda xs, gen: smooth.predict_batch(xs, smoothed.n, smoothed.alpha, batch_size, gen)


def attack_dataset(model: nn.Module, dataset: ImageDataset, attack: Attack, out: str | Path, *,
                   source: nn.Module | None = None, smoothed: SmoothedEval | None = None, batch_size: int = 256,
                   selection: Selection = Selection(), seed: int | None = None, meta: dict[str, Any] | None = None,
                   progress: bool = False) -> AttackSummary:
    """Accuracy of ``model`` (or of its smoothed classifier) under ``attack`` on the selected
    inputs of ``dataset``, one TSV row each into ``out`` (``ATTACK_COLUMNS``: predict is the
    prediction at x', correct = [predict == label], clean_predict at x, delta_norm = ||x' - x||
    in the attack's norm). Resumable.

    White-box by default. Black-box with ``source``: the examples are crafted on ``source``
    alone (its gradients; with ``smoothed``, its soft smoothed classifier) and ``model`` is only
    evaluated, without autograd. ``batch_size`` counts rows per forward: a batch holds
    batch_size inputs, or batch_size // M with ``smoothed`` (M noisy copies each); PREDICT
    draws its samples in batches of batch_size."""
    batch_size = _check_batch_size(batch_size)
    if not isinstance(attack, Attack):
        raise ValueError("attack must be an FGSM or PGD instance")
    device = model_device(model)
    predict = _predictor(model, dataset.num_classes, smoothed, batch_size)
    crafter = model if source is None else source

    def step(idx: list[int], xs: torch.Tensor, ys: torch.Tensor, gen: torch.Generator) -> list[list[Any]]:
        clean = predict(xs, gen)
        target = crafter if smoothed is None else SoftSmoothed(crafter, smoothed.sigma, smoothed.num_noise_vec,
                                                               generator=gen)
        x_adv = attack(target, xs, ys, gen)
        adv = predict(x_adv, gen)
        norms = lp_norm(x_adv - xs, attack.norm).cpu()
        return [[int(p), int(int(p) == int(y)), int(c), round(float(d), 6)]
                for p, y, c, d in zip(adv, ys.cpu(), clean, norms)]

    per_batch = batch_size if smoothed is None else max(1, batch_size // smoothed.num_noise_vec)
    settings = {"attack": attack.config(), "black_box": source is not None,
                "smoothed": asdict(smoothed) if smoothed else None}
    run_logged(dataset, out, ATTACK_COLUMNS, kind="attack", key="attack", indices=selection.indices(len(dataset)),
               per_batch=per_batch, step=step, device=device, seed=seed, settings=settings,
               recorded={"batch_size": batch_size}, meta=meta, selection=selection, progress=progress)
    return summarize_attack_log(out)


def summarize_attack_log(path: str | Path) -> AttackSummary:
    """Clean and robust accuracy of an attack log (``ATTACK_COLUMNS``)."""
    header, rows = read_tsv(path)
    if tuple(header) != ATTACK_COLUMNS:
        raise ValueError(f"{str(path)!r} is not an attack log")
    h = {c: k for k, c in enumerate(header)}
    return AttackSummary(len(rows), sum(int(r[h["clean_predict"]]) == int(r[h["label"]]) for r in rows),
                         sum(int(r[h["correct"]]) for r in rows))


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


def check_certificates(model: nn.Module, dataset: ImageDataset, log: str | Path, sigma: float, out: str | Path, *,
                       cert_alpha: float = 0.001, n: int = 1000, alpha: float = 0.001, num_noise_vec: int = 8,
                       steps: int = 10, step_size: float | None = None, radius_scale: float = 0.99,
                       level: float = 0.01, batch_size: int = 256, selection: Selection = Selection(),
                       seed: int | None = None, meta: dict[str, Any] | None = None,
                       progress: bool = False) -> CertificateCheck:
    """Try to break the certificates of a certify ``log`` (made with noise level ``sigma`` and
    failure probability ``cert_alpha``): for each certified input (cA, R), L2 PGD against the
    soft smoothed classifier pushes away from cA within radius ``radius_scale`` * R (step size
    default 2.5 * eps / steps per input), then PREDICT (n, alpha) classifies the result. A
    violation is a prediction that is neither cA nor abstain. Under a correct certificate that
    has probability <= cert_alpha + alpha per input; the count is tested against that binomial.
    Rows go to ``out`` (``CHECK_COLUMNS``, resumable); ``selection`` picks among the certified
    rows."""
    batch_size = _check_batch_size(batch_size)
    if not 0 < radius_scale <= 1:
        raise ValueError(f"radius_scale must be in (0, 1], got {radius_scale!r}")
    for name, v in (("cert_alpha", cert_alpha), ("level", level)):
        if not 0 < v < 1:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    spec = SmoothedEval(sigma, num_noise_vec, n, alpha)
    PGD(1.0, steps, step_size, "l2")  # validates steps and step_size
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
    predict = _predictor(model, dataset.num_classes, spec, batch_size)

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

    settings = {"certify_log": str(log), "sigma": sigma, "cert_alpha": cert_alpha, "smoothed": asdict(spec),
                "steps": steps, "step_size": step_size, "radius_scale": radius_scale}
    run_logged(dataset, out, CHECK_COLUMNS, kind="certificate check", key="check", indices=sorted(by_idx),
               per_batch=max(1, batch_size // num_noise_vec), step=step, device=device, seed=seed, settings=settings,
               recorded={"batch_size": batch_size}, meta=meta, selection=selection, progress=progress)
    header, rows = read_tsv(out)
    h = {c: k for k, c in enumerate(header)}
    rows = [r for r in rows if int(r[h["idx"]]) in by_idx]
    violations = sum(int(r[h["violation"]]) for r in rows)
    abstained = sum(int(r[h["predict"]]) == ABSTAIN for r in rows)
    null_rate = cert_alpha + alpha
    return CertificateCheck(len(rows), violations, abstained, null_rate,
                            violation_pvalue(violations, len(rows), null_rate), level)


__all__ = ["ATTACK_COLUMNS", "CHECK_COLUMNS", "NORMS", "FGSM", "PGD", "Attack", "AttackSummary", "CertificateCheck",
           "SmoothedEval", "SoftSmoothed", "ascent_direction", "attack_dataset", "check_certificates",
           "frozen_eval", "lp_norm", "project", "read_certificates", "summarize_attack_log", "violation_pvalue"]
