"""Smoothing noises in pixel space, and the certified radii each one gives.

A noise object draws samples (``sample_``/``perturb``) and turns probability bounds into certified
radii (``radius``, ``radius_two_sided``, ``p_lower_needed``) for the norms it certifies. Everything
that draws smoothing noise in smoothcert -- certification, prediction and the training methods --
draws it through here, and nothing else in the code knows a radius formula.

All noises have one scale parameter ``sigma``, the per-coordinate standard deviation, so runs at
the same sigma are comparable across noises (Yang et al., 2020, use the same convention):

==========  =====================================  ===============================================
noise       density of eps                         one-sided radius for pA_lower = p > 1/2
==========  =====================================  ===============================================
gaussian    N(0, sigma^2 I)                        l2: sigma Phi^-1(p)  (Cohen et al., 2019, Thm. 1)
                                                   l1: the l2 radius (||d||_2 <= ||d||_1)
                                                   linf: the l2 radius / sqrt(d) (||d||_2 <= sqrt(d) ||d||_inf)
laplace     prop. to exp(-||eps||_1 / lam),        l1: -lam ln(2 (1 - p))  (Teng et al., 2020, Thm. 1;
            lam = sigma / sqrt(2)                  Yang et al., 2020, Table 1)
uniform     U[-lam, lam]^d, lam = sigma sqrt(3)    l1: 2 lam (p - 1/2);  linf: 2 lam (1 - (3/2 - p)^(1/d))
                                                   (Yang et al., 2020, Table 1 / Appendix)
==========  =====================================  ===============================================

d is the number of input coordinates. ``radius`` is 0 where there is no certificate (p <= 1/2).

Two-sided radii, from a lower bound pA on the top class and an upper bound pB on every other class
(the certificate of Cohen et al., 2019, Theorem 1, without the shortcut pB = 1 - pA):

* gaussian: l2 radius sigma / 2 (Phi^-1(pA) - Phi^-1(pB)) (Cohen et al., Theorem 1); l1 the same,
  linf that / sqrt(d).
* laplace: l1 radius max(lam / 2 ln(pA / pB), -lam ln(1 - pA + pB)) (Teng et al., 2020, Theorem 1).
* uniform: the likelihood ratio of U(cube) and U(cube + delta) is 0, 1 or infinite, so
  |P(A at x + delta) - P(A at x)| <= TV = 1 - prod_i (1 - |delta_i| / (2 lam)) for every set A
  (Yang et al., 2020, Appendix, uniform noise). The top class stays on top while pA - TV > pB + TV,
  i.e. TV < (pA - pB) / 2: l1 radius lam (pA - pB) (TV <= ||delta||_1 / (2 lam)), linf radius
  2 lam (1 - (1 - (pA - pB) / 2)^(1/d)) (TV is largest with every |delta_i| = ||delta||_inf).
  With pB = 1 - pA both reduce to the one-sided radii above.

Each two-sided radius is at least the one-sided radius at the same pA when pB <= 1 - pA.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import norm as _normal

from .registry import Registry
from .validation import ArgumentError, check_int, check_sigma

NORMS = ("l1", "l2", "linf")
BOUNDS = ("one-sided", "two-sided")


def _as_probs(name: str, p: Any) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if not np.all((arr >= 0) & (arr <= 1)):  # also refuses NaN
        raise ArgumentError(name, f"{name} must be probabilities in [0, 1], got {p!r}")
    return arr


def _out(arr: np.ndarray, like: Any) -> float | np.ndarray:
    """A Python float for a scalar input, else the array."""
    return float(arr) if np.ndim(like) == 0 else arr


def check_bound(bound: Any) -> str:
    """``bound`` as one of ``BOUNDS``; ArgumentError("bound") otherwise."""
    if bound not in BOUNDS:
        raise ArgumentError("bound", f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    return bound


class Noise:
    """A smoothing noise with per-coordinate standard deviation ``sigma`` (module doc).

    Subclasses set ``name``, ``norms`` (the norms they certify), ``natural_norm`` and implement
    ``sample_``, ``_radius``, ``_p_needed`` and (optionally) ``_two_sided``; the public methods
    validate arguments and vectorise."""

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ()
    natural_norm: ClassVar[str] = ""

    def __init__(self, sigma: float):
        self.sigma = check_sigma(sigma, positive=True)

    # -- sampling ----------------------------------------------------------------------------
    def sample_(self, buf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill ``buf`` in place with noise and return it."""
        raise NotImplementedError

    def perturb(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x + noise: a new tensor of x's shape, device and dtype (differentiable in x)."""
        return x + self.sample_(torch.empty_like(x), generator)

    # -- certificates ------------------------------------------------------------------------
    def check_norm(self, norm: Any = None) -> str:
        """``norm`` (None: ``natural_norm``) as one of this noise's ``norms``; ArgumentError("norm")
        for an unknown norm or one this noise cannot certify."""
        if norm is None:
            return self.natural_norm
        key = norm.lower() if isinstance(norm, str) else norm
        if key not in NORMS:
            raise ArgumentError("norm", f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if key not in self.norms:
            raise ArgumentError("norm", f"norm {key} cannot be certified with {self.name} noise; "
                                        f"it certifies {', '.join(self.norms)}")
        return key

    def _dim(self, norm: str, dim: Any) -> int:
        if norm == "linf" or dim is not None:
            if dim is None:
                raise ArgumentError("dim", "dim (the number of input coordinates) is needed for linf radii")
            return check_int("dim", dim, 1)
        return 0

    def radius(self, p_lower: Any, norm: str | None = None, dim: int | None = None) -> float | np.ndarray:
        """Certified radius in ``norm`` for a lower bound ``p_lower`` on the top class's
        probability (float or array); 0 where p_lower <= 1/2 (no certificate)."""
        norm = self.check_norm(norm)
        d = self._dim(norm, dim)
        p = _as_probs("p_lower", p_lower)
        out = np.zeros(p.shape, dtype=np.float64)
        pos = p > 0.5
        out[pos] = self._radius(p[pos], norm, d)
        return _out(out, p_lower)

    def p_lower_needed(self, radius: Any, norm: str | None = None, dim: int | None = None) -> float | np.ndarray:
        """The smallest p_lower whose ``radius(p_lower)`` reaches ``radius`` (>= 0): 1/2 for
        radius 0 (certifying needs p_lower >= 1/2), ``inf`` where no p_lower <= 1 reaches it."""
        norm = self.check_norm(norm)
        d = self._dim(norm, dim)
        r = np.asarray(radius, dtype=np.float64)
        if not np.all(r >= 0):
            raise ArgumentError("radius", f"radius must be >= 0, got {radius!r}")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            p = np.asarray(self._p_needed(r, norm, d), dtype=np.float64)
            p = np.where(r == 0, 0.5, p)
            reach = (p > 0.5) & (p <= 1)  # undo rounding: the radius at p must reach r
            short = np.zeros(p.shape, dtype=bool)
            short[reach] = self._radius(p[reach], norm, d) < r[reach]
            p = np.where(short, np.nextafter(p, 2.0), p)
        return _out(np.where(p > 1, np.inf, p), radius)

    def radius_two_sided(self, pA_lower: Any, pB_upper: Any, norm: str | None = None,
                         dim: int | None = None) -> float | np.ndarray:
        """Certified radius from a lower bound on the top class's probability and an upper bound
        on every other class's (module doc); 0 where pA_lower <= pB_upper. ArgumentError("bound")
        for a noise without a two-sided certificate."""
        norm = self.check_norm(norm)
        d = self._dim(norm, dim)
        pA = _as_probs("pA_lower", pA_lower)
        pB = _as_probs("pB_upper", pB_upper)
        pA, pB = np.broadcast_arrays(pA, pB)
        out = np.zeros(pA.shape, dtype=np.float64)
        pos = pA > pB
        with np.errstate(divide="ignore"):
            out[pos] = self._two_sided(pA[pos], pB[pos], norm, d)
        return float(out) if np.ndim(pA_lower) == 0 and np.ndim(pB_upper) == 0 else out

    # -- formulas (p > 1/2, resp. pA > pB; arrays) -------------------------------------------
    def _radius(self, p: np.ndarray, norm: str, dim: int) -> np.ndarray:
        raise NotImplementedError

    def _p_needed(self, r: np.ndarray, norm: str, dim: int) -> np.ndarray:
        raise NotImplementedError

    def _two_sided(self, pA: np.ndarray, pB: np.ndarray, norm: str, dim: int) -> np.ndarray:
        raise ArgumentError("bound", f"bound two-sided is not available for {self.name} noise")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.sigma == self.sigma  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.sigma))


class GaussianNoise(Noise):
    """Isotropic Gaussian N(0, sigma^2 I) (Cohen et al., 2019): l2, l1 and linf radii."""

    name = "gaussian"
    norms = ("l2", "l1", "linf")
    natural_norm = "l2"

    def sample_(self, buf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return buf.normal_(0.0, self.sigma, generator=generator)

    def _scale(self, norm: str, dim: int) -> float:
        return self.sigma / math.sqrt(dim) if norm == "linf" else self.sigma

    def _radius(self, p: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return self._scale(norm, dim) * _normal.ppf(p)

    def _p_needed(self, r: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return _normal.cdf(r / self._scale(norm, dim))

    def _two_sided(self, pA: np.ndarray, pB: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return self._scale(norm, dim) / 2 * (_normal.ppf(pA) - _normal.ppf(pB))


class LaplaceNoise(Noise):
    """i.i.d. Laplace coordinates, density prop. to exp(-||eps||_1 / lam), lam = sigma / sqrt(2):
    l1 radii (Teng et al., 2020)."""

    name = "laplace"
    norms = ("l1",)
    natural_norm = "l1"

    @property
    def lam(self) -> float:
        return self.sigma / math.sqrt(2)

    def sample_(self, buf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # inverse CDF from one uniform u in [0, 1): the sign from u < 1/2, the magnitude
        # -lam ln(1 - w) ~ Exp(1/lam) from w = frac(2u) in [0, 1) (finite: 1 - w > 0)
        buf.uniform_(0.0, 1.0, generator=generator)
        sign = (buf < 0.5).to(buf.dtype).mul_(-2.0).add_(1.0)  # -1 for u < 1/2, else +1
        return buf.mul_(2.0).frac_().neg_().log1p_().mul_(sign).mul_(-self.lam)

    def _radius(self, p: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return -self.lam * np.log(2.0 * (1.0 - p))

    def _p_needed(self, r: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return 1.0 - 0.5 * np.exp(-r / self.lam)

    def _two_sided(self, pA: np.ndarray, pB: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return np.maximum(self.lam / 2 * np.log(pA / pB), -self.lam * np.log1p(pB - pA))


class UniformNoise(Noise):
    """i.i.d. uniform coordinates on [-lam, lam], lam = sigma * sqrt(3): l1 and linf radii
    (Yang et al., 2020)."""

    name = "uniform"
    norms = ("l1", "linf")
    natural_norm = "l1"

    @property
    def lam(self) -> float:
        return self.sigma * math.sqrt(3)

    def sample_(self, buf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return buf.uniform_(-self.lam, self.lam, generator=generator)

    def _tv_radius(self, tv: np.ndarray, norm: str, dim: int) -> np.ndarray:
        """The largest radius whose worst-case total variation stays below ``tv`` (in (0, 1/2])."""
        if norm == "l1":
            return 2 * self.lam * tv
        return -2 * self.lam * np.expm1(np.log1p(-tv) / dim)  # 2 lam (1 - (1 - tv)^(1/d))

    def _radius(self, p: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return self._tv_radius(p - 0.5, norm, dim)

    def _p_needed(self, r: np.ndarray, norm: str, dim: int) -> np.ndarray:
        if norm == "l1":
            return 0.5 + r / (2 * self.lam)
        with np.errstate(divide="ignore", invalid="ignore"):
            tv = np.where(r < 2 * self.lam, -np.expm1(dim * np.log1p(-r / (2 * self.lam))), np.inf)
        return 0.5 + tv

    def _two_sided(self, pA: np.ndarray, pB: np.ndarray, norm: str, dim: int) -> np.ndarray:
        return self._tv_radius((pA - pB) / 2, norm, dim)


# name -> Noise class, in the one Registry (``NOISES.get`` raises ArgumentError("noise") for an unknown name)
NOISES: Registry[type[Noise]] = Registry("noise", "noise")
for _cls in (GaussianNoise, LaplaceNoise, UniformNoise):
    NOISES.add(_cls.name, _cls)
del _cls


def get_noise(noise: str | Noise = "gaussian", sigma: Any = None) -> Noise:
    """The noise ``noise`` (a name from ``NOISES`` or a ``Noise``) at ``sigma``. A ``Noise`` is
    returned as is (``sigma`` may then be None, else it must equal the object's)."""
    if isinstance(noise, Noise):
        if sigma is not None and check_sigma(sigma, positive=True) != noise.sigma:
            raise ArgumentError("sigma", f"sigma {sigma!r} differs from the noise object's sigma {noise.sigma!r}")
        return noise
    if not isinstance(noise, str) or noise.lower() not in NOISES:
        raise ArgumentError("noise", f"noise must be one of {', '.join(NOISES)} or a Noise object, got {noise!r}")
    if sigma is None:
        raise ArgumentError("sigma", f"sigma is needed for {noise} noise")
    return NOISES.get(noise.lower())(sigma)


def training_noise(noise: Any, sigma: float) -> str:
    """The name of a training method's ``noise`` (validated); ArgumentError("noise") for an
    unknown name, or for a noise other than gaussian when ``sigma`` is 0 (no noise is drawn,
    so the choice would be ignored)."""
    if not isinstance(noise, str) or noise.lower() not in NOISES:
        raise ArgumentError("noise", f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
    if sigma == 0 and noise.lower() != "gaussian":
        raise ArgumentError("noise", f"noise {noise.lower()} needs sigma > 0")
    return noise.lower()


def noise_params(noise: str) -> dict[str, Any]:
    """``{"noise": noise}`` for a method's ``params()``, empty for gaussian: the configs of
    Gaussian runs stay as they were before several noises existed (so they resume unchanged),
    and ``config_noise`` reads a missing entry as gaussian."""
    return {} if noise == "gaussian" else {"noise": noise}


def config_noise(config: dict[str, Any]) -> str:
    """The noise a run was trained with, from its config.json (``method_params["noise"]``;
    runs that record none -- every run before several noises existed -- trained with gaussian)."""
    params = config.get("method_params") or {}
    return str(params.get("noise", "gaussian")) if isinstance(params, dict) else "gaussian"


def add_noise(x: torch.Tensor, sigma: float, noise: str | Noise = "gaussian",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """x + noise at ``sigma``; identity when sigma == 0 (training methods allow sigma = 0)."""
    if check_sigma(sigma) == 0:
        return x
    return get_noise(noise, sigma).perturb(x, generator)


def add_gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2 I); identity when sigma == 0."""
    return add_noise(x, sigma, "gaussian", generator)


__all__ = ["BOUNDS", "NOISES", "NORMS", "GaussianNoise", "LaplaceNoise", "Noise", "UniformNoise", "add_gaussian_noise",
           "add_noise", "check_bound", "config_noise", "get_noise", "noise_params", "training_noise"]
