"""PGD (Madry et al., 2018): x_{t+1} = clip_[0,1](x + Proj_eps(x_t + a * d(grad_x CE(f(x_t), y)) - x)),
where Proj_eps projects onto the eps-ball of the norm. Clipping after the projection only moves
coordinates towards x, so x' stays in the ball and in [0, 1]. ``eps = inf`` is the unbounded PGD
of the gradient-masking sanity check."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..validation import ArgumentError, check_int
from .base import Attack, _check_eps, _plain, _rows, ascent_direction, check_norm, lp_norm, project


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
                raise ArgumentError("step_size", "step_size must be given when eps is unbounded (inf)")
            self.step_size: float | torch.Tensor = 2.5 * self.eps / self.steps
        else:
            if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) \
                    or not (0 < step_size < math.inf):
                raise ArgumentError("step_size", f"step_size must be a finite number > 0, got {step_size!r}")
            self.step_size = float(step_size)
        if random_start and unbounded:
            raise ArgumentError("random_start", "random_start needs a bounded eps")
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


__all__ = ["PGD"]
