"""Losses shared by several methods: soft-label cross-entropy, KL to a target distribution,
entropy, and Jensen–Shannon consistency."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy H(target, softmax(logits)) = -sum_c target_c log p_c, with a probability
    vector per row as target (ALPS, CutMix). ``reduction``: mean | sum | none."""
    if target.shape != logits.shape:
        raise ValueError(f"target must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    per_row = -(target * F.log_softmax(logits, dim=1)).sum(1)
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.mean()
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


def kl_to(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(B,) KL(target || softmax(logits)) = sum_c t_c (log t_c - log p_c) per row, 0 log 0 = 0.
    Gradients flow into both ``target`` and ``logits`` (detach ``target`` for a fixed target)."""
    if target.shape != logits.shape:
        raise ValueError(f"target must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="none").sum(1)


def entropy(probs: torch.Tensor, floor: float = 1e-20) -> torch.Tensor:
    """(B,) Shannon entropy -sum_c p_c log p_c of each row of probabilities (log clamped at ``floor``)."""
    return -(probs * probs.clamp_min(floor).log()).sum(1)


def js_divergence(*logits: torch.Tensor) -> torch.Tensor:
    """Generalised Jensen–Shannon divergence among k >= 2 predictive distributions (AugMix, Eq. 4):
    JS(p_1..p_k) = (1/k) sum_i KL(p_i || M), M = mean_i p_i, averaged over the batch. The mixture
    is clamped at 1e-7 before the log, as in the AugMix reference."""
    if len(logits) < 2:
        raise ValueError("js_divergence needs at least two sets of logits")
    probs = [F.softmax(l, dim=1) for l in logits]
    log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1.0).log()
    return sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / len(probs)
