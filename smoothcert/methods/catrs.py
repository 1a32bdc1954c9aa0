"""CAT-RS: confidence-aware training of smoothed classifiers (Jeong, Kim & Shin, "Confidence-aware
Training of Smoothed Classifiers for Certified Robustness", AAAI 2023, Sec. 3, Eq. 4-9).

**Before training** (``setup``, once; cached in the run directory as ``catrs_prior.cache.pt``, keyed
by the prior model's fingerprint, prior_n, sigma and the number of inputs): the
smoothed confidence p_b(x) = counts / ``prior_n`` of a pre-trained Gaussian model (``prior``: its
run directory or checkpoint) for every training input: ``prior_n`` noisy copies at the same sigma,
the base model's votes counted by ``Smooth.sample_counts`` (the paper uses N = 10 000).

**Each step**, for a batch x with labels y and M = ``num_noise_vec`` Gaussian noise vectors d_k:

1. logits z_k = f(x + d_k); the current smoothed confidence of the true class is estimated by
   w = (1/M) sum_k 1[argmax z_k = y] (with ``confidence_mask``: p_b(x)_y instead, the paper's
   remedy for cold starts);
2. K ~ Binomial(M, w), clipped to >= 1: the number of copies accepted as "should be correct";
   L_low = (1/M) sum of the K smallest CE(z_k, y) (the bottom-K cross-entropy, Eq. 5);
3. for the inputs with K = M (confident), the worst-case noise: each d_k is moved by
   ``num_steps`` steps of normalised L2 gradient ascent (step 2 eps / num_steps, ``epsilon`` in
   pixel L2 units) on KL(p_b(x) || softmax f(x + d_k)), projected to the L2 ball of radius eps
   around d_k and rescaled as the reference does, d' <- (d' - mean d') / rms(d') * rms(d_k) +
   mean(d_k) per row (the row mean is kept exactly, the root-mean-square up to the small mean),
   so it stays a plausible Gaussian sample; L_high = lbd * max_k KL(p_b(x) || softmax f(x + d'_k)) (Eq. 7);
4. L = mean over the batch of L_low + 1[K = M] * L_high.

Batching: the reference cuts each loaded batch into M mini-batches with one SGD step each:
``--batch-size 256/M`` here gives the same steps. Published settings: M = 4, eps = 1.0 (the code's
256/256), 4 steps, lbd 0.5 / 1 / 2 at sigma 0.25 / 0.5 / 1.0 (CIFAR-100; lbd 1 is the code's
default). The noise search keeps Gaussian samples on their shell, so only Gaussian noise is
accepted. The ImageNet-only options of the reference (lr_drop, a doubled radius after warm-up)
are not part of this objective.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..attacks.base import ascent_direction, frozen_eval, project
from ..losses import kl_to
from ..noise import GaussianNoise
from ..validation import ArgumentError, check_int, check_sigma
from . import register_method
from .base import Method, TrainContext
from .common import check_number, noisy_copies, per_copy, unwrap

PRIOR_NAME = "catrs_prior.cache.pt"  # runs.directory.CACHE_SUFFIX: a method cache, not run content


def smoothed_confidences(model: nn.Module, dataset: Any, num_classes: int, sigma: float, n: int, *,
                         limit: int | None = None, batch: int = 1000, seed: int = 0, inputs_per_call: int = 64,
                         progress: bool = False) -> torch.Tensor:
    """(len, K) float tensor: counts / n of ``n`` Gaussian votes of ``model`` for each of the first
    ``limit`` inputs of ``dataset`` (all by default), in dataset order (CAT-RS's p_b)."""
    from ..smoothing import Smooth

    size = len(dataset) if limit is None else min(limit, len(dataset))
    smooth = Smooth(model, num_classes, sigma, seed=seed)
    out = torch.empty(size, num_classes)
    with tqdm(total=size, desc="CAT-RS smoothed confidences", disable=not progress, leave=False) as bar:
        for start in range(0, size, inputs_per_call):
            stop = min(size, start + inputs_per_call)
            xs = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(start, stop)])
            out[start:stop] = smooth.sample_counts(xs, n, batch).float().cpu() / n
            bar.update(stop - start)
    return out


def worst_noise(model: nn.Module, x: torch.Tensor, d: torch.Tensor, target: torch.Tensor, epsilon: float,
                num_steps: int) -> torch.Tensor:
    """CAT-RS's adversarial noise (module doc, step 3): the (M, *x.shape) noise ``d`` moved to
    increase KL(target || softmax f(x + d_k)), each row kept within L2 ``epsilon`` of its start and
    rescaled to the start's per-row mean and (about) its root-mean-square. The model runs frozen in eval mode."""
    m = d.shape[0]
    d0 = d.detach().flatten(0, 1)  # (M * B, ...)
    rows = lambda v: v.view(-1, *[1] * (d0.dim() - 1))  # noqa: E731
    mu0, rms0 = rows(d0.flatten(1).mean(1)), rows(d0.flatten(1).pow(2).mean(1).sqrt())
    xs = x.detach().repeat(m, *[1] * (x.dim() - 1))
    targets = target.detach().repeat(m, 1)
    radius = torch.full((d0.shape[0],), float(epsilon), device=x.device)
    noise = d0
    with frozen_eval(model), torch.enable_grad():
        for _ in range(num_steps):
            noise = noise.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(kl_to(targets, model(xs + noise).float()).sum(), noise)
            noise = d0 + project(noise + (2 * epsilon / num_steps) * ascent_direction(grad, "l2") - d0, radius, "l2")
            flat = noise.flatten(1)
            noise = (noise - rows(flat.mean(1))) / rows(flat.pow(2).mean(1).sqrt().clamp_min(1e-12))
            noise = mu0 + noise * rms0
    return noise.detach().view_as(d)


@register_method("catrs")
class CATRS(Method):
    """Bottom-K noisy cross-entropy + lbd x worst-noise KL to the pre-trained smoothed confidence
    on confident inputs (module doc)."""

    uses_index = True

    def __init__(self, sigma: float, prior: str, num_noise_vec: int = 4, epsilon: float = 1.0, num_steps: int = 4,
                 lbd: float = 1.0, confidence_mask: bool = False, prior_n: int = 10_000, prior_batch: int = 1000,
                 noise: str = "gaussian"):
        super().__init__()
        self.sigma = check_sigma(sigma, positive=True)
        if noise != "gaussian":
            raise ArgumentError("noise", f"catrs: noise must be gaussian (its worst-case noise search keeps "
                                         f"Gaussian samples on their shell), got {noise!r}")
        self.num_noise_vec = check_int("num_noise_vec", num_noise_vec, 1)
        self.epsilon = check_number("epsilon", epsilon, positive=True)
        self.num_steps = check_int("num_steps", num_steps, 1)
        self.lbd = check_number("lbd", lbd)
        if not isinstance(confidence_mask, bool):
            raise ArgumentError("confidence_mask", f"confidence_mask must be true or false, got {confidence_mask!r}")
        self.confidence_mask = confidence_mask
        self.prior_n = check_int("prior_n", prior_n, 1)
        self.prior_batch = check_int("prior_batch", prior_batch, 1)
        if not isinstance(prior, (str, Path)) or not str(prior):
            raise ArgumentError("prior", f"prior must be the run directory (or checkpoint) of a Gaussian-trained "
                                         f"model, got {prior!r}")
        from ..runs import load_model, model_fingerprint

        try:
            self.prior_model, prior_config = load_model(prior)
        except ValueError as e:
            raise ArgumentError("prior", f"prior: {e}") from None
        self.prior = str(prior)  # as given: the fingerprint, not the path, identifies the model
        self.prior_fingerprint = model_fingerprint(self.prior_model)
        self.prior_sigma = float(prior_config.get("sigma") or 0.0)
        self.noise = GaussianNoise(self.sigma)
        self.confidences: torch.Tensor | None = None

    def setup(self, context: TrainContext) -> None:
        """p_b for the training inputs: read from ``PRIOR_NAME`` in the run directory when it was
        made by the same prior model with the same n and sigma, else computed (and saved by the
        writing process)."""
        from ..logs import atomic_torch_save, safe_torch_load

        key = {"prior_fingerprint": self.prior_fingerprint, "prior_n": self.prior_n, "sigma": self.sigma,
               "inputs": len(context.train_set) if context.limit is None else min(context.limit, len(context.train_set))}
        path = None if context.run_dir is None else Path(context.run_dir) / PRIOR_NAME
        if path is not None and path.is_file():
            cached = safe_torch_load(path)
            if isinstance(cached, dict) and cached.get("key") == key:
                self.confidences = cached["confidences"]
                return
        self.confidences = smoothed_confidences(
            self.prior_model.to(context.device), context.train_set, context.num_classes, self.sigma, self.prior_n,
            limit=context.limit, batch=self.prior_batch, seed=context.seed, progress=context.progress)
        if path is not None and context.writer:
            atomic_torch_save({"key": key, "confidences": self.confidences}, path)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if self.confidences is None or index is None:
            raise RuntimeError("catrs: setup() must run before loss(), and loss needs the batch's dataset indices")
        m, K = self.num_noise_vec, self.confidences.shape[1]
        p_b = self.confidences[index.cpu()].to(device=x.device, dtype=torch.float32)
        d, inputs = noisy_copies(self.noise, x, m)
        logits0 = per_copy(model(inputs), m)  # (M, B, K)
        if self.confidence_mask:
            w = p_b.gather(1, y.view(-1, 1)).squeeze(1)
        else:
            w = F.one_hot(logits0.detach().argmax(2), K).float().mean(0).gather(1, y.view(-1, 1)).squeeze(1)
        accept = torch.distributions.Binomial(m, probs=w.clamp(0.0, 1.0)).sample().long().clamp_(min=1)
        ce = torch.stack([F.cross_entropy(logits0[k], y, reduction="none") for k in range(m)], 1).sort(1).values
        keep = (torch.arange(m, device=x.device).view(1, -1) < accept.view(-1, 1)).to(ce.dtype)
        low = (ce * keep).mean(1)
        confident = (accept == m).to(ce.dtype)
        d_adv = worst_noise(unwrap(model), x, d, p_b, self.epsilon, self.num_steps)
        logits_adv = model((x.unsqueeze(0) + d_adv).flatten(0, 1))
        self._record_accuracy(logits_adv, y.repeat(m))
        kl = per_copy(kl_to(p_b.repeat(m, 1), logits_adv.float()).unsqueeze(1), m).squeeze(2)  # (M, B)
        return (low + self.lbd * kl.max(0).values * confident).mean()

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "prior": self.prior, "prior_fingerprint": self.prior_fingerprint,
                "prior_n": self.prior_n, "prior_batch": self.prior_batch, "num_noise_vec": self.num_noise_vec, "epsilon": self.epsilon,
                "num_steps": self.num_steps, "lbd": self.lbd, "confidence_mask": self.confidence_mask}


__all__ = ["CATRS", "PRIOR_NAME", "smoothed_confidences", "worst_noise"]
