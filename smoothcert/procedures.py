"""CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
Randomized Smoothing" (ICML 2019), Section 3.2 / Pseudocode, and their sequential forms: readable
procedures over one sampler (``smoothcert.sampling.Sampler``), for a batch of inputs.

The smoothed classifier is g(x) = argmax_c P(f(x + eps) = c), eps drawn from the sampler's noise.
Each procedure gets its vote counts from ``sampler.counts`` (one host sync per round) and turns
them into a decision with the statistics of ``smoothcert.stats`` (Clopper–Pearson bounds, the
abstain test) and ``smoothcert.sequential`` (the anytime-valid confidence sequence and the
stopping rule); radii come from the noise (``noise.radius``), the one place that knows a radius
formula. ``certificate`` is CERTIFY's last step (counts -> class and radius) and lives here only.

=======================  =========================================================================
``certify``              n0 selection samples pick cA, n fresh estimation samples bound pA:
                         with probability >= 1 - alpha, g(x + delta) = cA for ||delta|| < radius.
``predict``              n samples, top two counts, abstain test: returns a class other than g(x)
                         with probability at most alpha.
``certify_sequential``   CERTIFY whose estimation stops once the certificate cannot improve; the
                         bound on pA is a confidence sequence, so the guarantee is the same.
``certify_sequential_packed``  ``certify_sequential`` over a stream of inputs whose samples
                         fill each forward batch (a pool of active inputs, each with its own
                         generator and its own looks).
``predict_sequential``   PREDICT tested at a schedule of looks with an anytime-valid test.
=======================  =========================================================================

All return (B,) tensors with ``ABSTAIN`` (-1) where they abstain (radius 0).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from .noise import Noise, check_bound
from .sampling import NoiseStream, Sampler
from .sequential import DEFAULT_SEQUENCE, StoppingRule, confidence_sequence
from .stats import abstain_test_pvalue, clopper_pearson_lower, clopper_pearson_upper
from .validation import ArgumentError, check_alpha, check_int

ABSTAIN = -1


def check_options(noise: Noise, norm: str | None = None, bound: str = "one-sided", dim: int | None = None,
                  sequential: bool = False) -> tuple[str, str]:
    """(norm, bound) validated for ``noise``: None is the noise's natural norm.
    ArgumentError("norm") for a norm the noise cannot certify, ArgumentError("bound") for an
    unknown bound, a two-sided bound the noise has no certificate for, or a two-sided bound
    with ``sequential`` (the confidence sequence bounds pA alone)."""
    norm = noise.check_norm(norm)
    bound = check_bound(bound)
    if sequential and bound != "one-sided":
        raise ArgumentError("bound", f"bound: sequential certification bounds pA alone (one-sided), got {bound!r}")
    d = 1 if dim is None else dim
    if bound == "two-sided":
        noise.radius_two_sided(0.5, 0.5, norm, d)
    else:
        noise.radius(0.5, norm, d)
    return norm, bound


def certificate(noise: Noise, cA: np.ndarray, nA: np.ndarray, nB: np.ndarray, n: int, alpha: float, *,
                norm: str, bound: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The last step of CERTIFY: from the selected classes ``cA``, their estimation counts ``nA``
    and the runner-up counts ``nB`` (out of ``n``), the (predictions, radii) as int64 / float64
    arrays (``ABSTAIN`` and 0 where abstained). See ``certify`` for the bounds."""
    if bound == "one-sided":
        pA_lower = clopper_pearson_lower(nA, n, alpha)
        certified = pA_lower >= 0.5
        radius = noise.radius(pA_lower, norm, dim)
    else:
        pA_lower = clopper_pearson_lower(nA, n, alpha / 2)
        pB_upper = np.minimum(clopper_pearson_upper(nB, n, alpha / 2), 1.0 - pA_lower)
        certified = pA_lower >= pB_upper
        radius = noise.radius_two_sided(pA_lower, pB_upper, norm, dim)
    pred = np.where(certified, cA, ABSTAIN).astype(np.int64)
    return pred, np.where(certified, radius, 0.0).astype(np.float64)


def certify(
    sampler: Sampler,
    xs: torch.Tensor,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    norm: str | None = None,
    bound: str = "one-sided",
    with_counts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CERTIFY (Cohen et al., 2019) for each input of ``xs`` (B, C, H, W): returns (predictions,
    radii), a (B,) int64 tensor (``ABSTAIN`` where abstained) and a (B,) float64 tensor (0 where
    abstained); with ``with_counts``, also nA, the (B,) int64 estimation counts of the selected class
    cA (out of ``n``; also where abstained), from which pA is estimated (nA / n).

    Selection: the top class cA of n0 noisy samples. Estimation: n fresh samples.
    ``bound="one-sided"`` (Cohen et al., 2019, CERTIFY): pA_lower is the one-sided (1 - alpha)
    Clopper–Pearson lower bound on P(f(x + eps) = cA); abstain if pA_lower < 1/2, else
    return cA with radius ``noise.radius(pA_lower)`` (gaussian, l2: sigma Phi^-1(pA_lower)).
    ``bound="two-sided"`` (Theorem 1 without pB = 1 - pA): pA_lower at level alpha / 2 and
    pB_upper, the (1 - alpha / 2) upper bound on the runner-up class's count nB among the
    estimation samples (Bonferroni: both hold with probability >= 1 - alpha); abstain if
    pA_lower < pB_upper, else radius ``noise.radius_two_sided(pA_lower, pB_upper)``. The
    runner-up's bound covers every other class: the class c* with the largest pB has count <= the
    runner-up count, and the bound grows with the count. As nB <= n - nA and the bounds are
    monotone, pB_upper <= 1 - pA_lower, so the two-sided radius is never below the one-sided
    radius at level alpha / 2 (the cap at 1 - pA_lower in ``certificate`` only guards float
    rounding).

    *Guarantee.* In both cases, with probability >= 1 - alpha over the samples,
    g(x + delta) = cA for every ||delta||_norm < radius (``norm`` None: the noise's natural norm).
    """
    n0 = check_int("n0", n0, 1)
    n = check_int("n", n, 1)
    alpha = check_alpha(alpha)
    xs = sampler.batch(xs, "xs")
    dim = int(xs[0].numel())
    norm, bound = check_options(sampler.noise, norm, bound, dim)
    cA = sampler.counts(xs, n0, batch_size, generator).argmax(1)  # selection
    counts = sampler.counts(xs, n, batch_size, generator)  # estimation: fresh samples
    nA = counts.gather(1, cA[:, None]).squeeze(1)
    nB = counts.scatter(1, cA[:, None], -1).max(1).values  # runner-up: any class but cA
    cA_np, nA_np, nB_np = torch.stack([cA, nA, nB]).cpu().numpy()  # the one host sync
    pred, radius = certificate(sampler.noise, cA_np, nA_np, nB_np, n, alpha, norm=norm, bound=bound, dim=dim)
    if with_counts:
        return torch.from_numpy(pred), torch.from_numpy(radius), torch.from_numpy(nA_np.astype(np.int64))
    return torch.from_numpy(pred), torch.from_numpy(radius)


def predict(
    sampler: Sampler,
    xs: torch.Tensor,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PREDICT (Cohen et al., 2019) for each input of ``xs``: draw n noisy samples, take the
    top two counts nA >= nB (classes cA, cB); return cA if the two-sided binomial test of
    nA ~ Bin(nA + nB, 1/2) has p-value <= alpha, else ``ABSTAIN``. A (B,) int64 tensor.

    *Guarantee* (their Theorem 2): the returned class is not g(x) with probability at most alpha.
    """
    n = check_int("n", n, 1)
    alpha = check_alpha(alpha)
    xs = sampler.batch(xs, "xs")
    top2 = sampler.counts(xs, n, batch_size, generator).topk(2, dim=1)
    nA, nB, cA = torch.stack([top2.values[:, 0], top2.values[:, 1], top2.indices[:, 0]]).cpu().numpy()
    pvalue = np.array([abstain_test_pvalue(a, b) for a, b in zip(nA, nB)])
    return torch.from_numpy(np.where(pvalue <= alpha, cA, ABSTAIN).astype(np.int64))


def certify_sequential(
    sampler: Sampler,
    xs: torch.Tensor,
    n0: int,
    n_max: int,
    alpha: float,
    batch_size: int,
    radii: Sequence[float] | np.ndarray | None = None,
    tol: float | None = None,
    generator: torch.Generator | None = None,
    *,
    norm: str | None = None,
    bound: str = "one-sided",
    sequence: str = DEFAULT_SEQUENCE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CERTIFY with a sequential stopping rule (``smoothcert.sequential``) for each input of
    ``xs``: returns (predictions, radii, n_used), (B,) int64 / float64 / int64 tensors.

    Selection is CERTIFY's (n0 samples pick cA). Estimation draws fresh samples in rounds up
    to the looks of an anytime-valid confidence sequence for pA (``sequence``: ``"mixture"``,
    the one-sided Beta-mixture sequence, by default; ``"cp-union"`` / ``"cp-geometric"``, the
    Clopper–Pearson union bounds; see ``smoothcert.sequential.SEQUENCES``) and stops each input
    once its certificate cannot improve within ``n_max`` samples: with a sorted grid ``radii``
    the radius is the largest grid radius certified (a lower bound on the radius the same
    samples certify), without it the radius itself
    (to within ``tol``, default 0.01 sigma). ``n_used`` counts estimation samples (<= n_max).
    One host sync per round; only inputs still running draw samples. ``norm`` as in
    ``certify`` (the noise's radius for that norm); the bound is one-sided (the confidence
    sequence bounds pA alone), ``bound="two-sided"`` is refused.

    *Guarantee.* With probability >= 1 - alpha every returned radius is certified, whatever the
    stopping time (the theorem is in ``smoothcert.sequential``).
    """
    n0 = check_int("n0", n0, 1)
    n_max = check_int("n_max", n_max, 1)
    alpha = check_alpha(alpha)
    batch_size = check_int("batch_size", batch_size, 1)
    xs = sampler.batch(xs, "xs")
    dim = int(xs[0].numel())
    norm, bound = check_options(sampler.noise, norm, bound, dim, sequential=True)
    rule = StoppingRule(sampler.noise, confidence_sequence(sequence, n_max, alpha, radii), radii, tol, norm, dim)
    B = xs.shape[0]
    cA = sampler.counts(xs, n0, batch_size, generator).argmax(1)  # selection
    cA_np = np.zeros(B, dtype=np.int64)
    nA = np.zeros(B, dtype=np.int64)
    n_used = np.zeros(B, dtype=np.int64)
    radius = np.full(B, -np.inf)
    running = np.arange(B)
    drawn = 0
    for k, n_k in enumerate(rule.cs.looks):  # estimation, up to look k
        sel = torch.from_numpy(running).to(xs.device)
        new = sampler.counts(xs[sel], int(n_k) - drawn, batch_size, generator).gather(1, cA[sel, None]).squeeze(1)
        top, new_np = torch.stack([cA[sel], new]).cpu().numpy()  # the one host sync of the round
        drawn = int(n_k)
        cA_np[running] = top
        nA[running] += new_np
        n_used[running] = drawn
        stop, radius[running] = rule.step(nA[running], k)
        running = running[~stop]
        if running.size == 0:
            break
    certified = radius > -np.inf
    pred = np.where(certified, cA_np, ABSTAIN)
    radius = np.where(certified, np.maximum(radius, 0.0), 0.0)
    return torch.from_numpy(pred), torch.from_numpy(radius.astype(np.float64)), torch.from_numpy(n_used)


@dataclass
class _Active:
    """An input of the pool: its stream, the round it is in (-1: selection), what it still needs."""

    key: Any
    x: torch.Tensor
    stream: NoiseStream
    look: int = -1
    need: int = 0
    votes: np.ndarray | None = None  # selection counts
    cA: int = 0
    nA: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class PackedResult:
    """One input's outcome in ``certify_sequential_packed``: its ``key``, prediction (``ABSTAIN``
    where abstained), radius (0 there), estimation samples ``n_used`` and its share of the wall
    clock ``seconds`` (each forward batch's time split by the rows it drew)."""

    key: Any
    pred: int
    radius: float
    n_used: int
    seconds: float


def certify_sequential_packed(
    sampler: Sampler,
    inputs: Iterable[tuple[Any, torch.Tensor, torch.Generator | None]],
    n0: int,
    n_max: int,
    alpha: float,
    batch_size: int,
    radii: Sequence[float] | np.ndarray | None = None,
    tol: float | None = None,
    *,
    pool: int = 256,
    norm: str | None = None,
    bound: str = "one-sided",
    sequence: str = DEFAULT_SEQUENCE,
) -> Iterator[PackedResult]:
    """``certify_sequential`` for a stream of inputs packed into full forward batches: yields a
    ``PackedResult`` per input of ``inputs`` (``(key, x, generator)``, x of shape (C, H, W)) as
    each one stops, in the order they stop.

    A pool of at most ``pool`` active inputs shares each forward batch of ``batch_size`` rows
    (``max_batch`` rows if the sampler has a smaller one): the rows go to the active inputs in
    the order they joined, each getting what it still needs up to its next look (its n0
    selection samples first, then the estimation samples up to each look of the confidence
    sequence), and new inputs join (pulled from ``inputs`` lazily) while the pool has room and
    the active inputs need fewer rows than a batch holds; an input that stops frees its rows for
    the next one. So the forward batches are full while enough inputs are active, whatever the
    looks.

    *The statistics are each input's own.* An input is looked at exactly at the looks of its
    stopping rule (``sequential.StoppingRule``: selection on n0 samples, then the confidence
    sequence's looks, fixed in advance), with the counts of its own samples; the other inputs of
    a batch change when its samples are drawn, not which or how many are examined at each
    look. Its draws are i.i.d. noise from ``generator`` whatever batch they share
    (``sampling.NoiseStream``), so the guarantee of ``certify_sequential`` holds for every input
    unchanged: with probability >= 1 - alpha its radius is certified.

    *Reproducibility.* An input's noise comes from its own ``generator``, drawn in the blocks
    ``certify_sequential`` draws for that input alone (one round per look, ``batch_size`` rows a
    block), so its samples -- and its decision -- are those of ``certify_sequential(sampler,
    x[None], ..., generator)`` whatever ``pool``, the other inputs and their order (up to the
    float rounding of a forward pass in another batch, which can break an exact tie of logits
    differently). With ``generator`` None every input draws from the sampler's default
    generator, and its noise then depends on the order of the inputs and the pool.
    """
    n0 = check_int("n0", n0, 1)
    n_max = check_int("n_max", n_max, 1)
    alpha = check_alpha(alpha)
    batch_size = check_int("batch_size", batch_size, 1)
    pool = check_int("pool", pool, 1)
    norm, bound = check_options(sampler.noise, norm, bound, None, sequential=True)
    cs = confidence_sequence(sequence, n_max, alpha, radii)
    looks = [int(n) for n in cs.looks]
    rule: StoppingRule | None = None
    source = iter(inputs)
    active: list[_Active] = []
    exhausted = False
    rows_per_batch = 0
    while True:
        while not exhausted and len(active) < pool and (not active or sum(a.need for a in active) < rows_per_batch):
            try:
                key, x, generator = next(source)
            except StopIteration:
                exhausted = True
                break
            x = sampler.batch(x, "x", single=True)[0]
            if rule is None:
                dim = int(x.numel())
                norm, bound = check_options(sampler.noise, norm, bound, dim, sequential=True)
                rule = StoppingRule(sampler.noise, cs, radii, tol, norm, dim)
            stream = sampler.stream(x, batch_size, generator)
            rows_per_batch = stream.block
            stream.start(n0)
            active.append(_Active(key, x, stream, need=n0, votes=np.zeros(sampler.num_classes, dtype=np.int64)))
        if not active:
            return
        t0 = time.perf_counter()
        served, rows, left = [], [], rows_per_batch
        for a in active:  # in the order they joined
            k = min(a.need, left)
            if k:
                served.append(a)
                rows.append(k)
                left -= k
            if not left:
                break
        counts = sampler.counts_rows(torch.stack([a.x for a in served]), rows, [a.stream for a in served],
                                     batch_size).numpy()
        at_look: dict[int, list[_Active]] = {}
        for a, k, c in zip(served, rows, counts):
            a.need -= k
            if a.look < 0:
                a.votes += c
            else:
                a.nA += int(c[a.cA])
            if a.need == 0:
                if a.look < 0:  # selection done: the top class, then the first look's samples
                    a.cA = int(np.argmax(a.votes))
                    a.look, a.need = 0, looks[0]
                    a.stream.start(a.need)
                else:
                    at_look.setdefault(a.look, []).append(a)
        finished: list[tuple[_Active, float]] = []
        for k, group in at_look.items():  # the looks: vectorised over the inputs at the same look
            stop, radius = rule.step(np.array([a.nA for a in group], dtype=np.int64), k)
            for a, s, r in zip(group, stop, radius):
                if s:
                    finished.append((a, float(r)))
                else:
                    a.look += 1
                    a.need = looks[a.look] - looks[a.look - 1]
                    a.stream.start(a.need)
        dt = time.perf_counter() - t0
        total = sum(rows)
        for a, k in zip(served, rows):
            a.seconds += dt * k / total
        done = {id(a) for a, _ in finished}
        active = [a for a in active if id(a) not in done]
        for a, r in finished:
            certified = r > -np.inf
            yield PackedResult(a.key, a.cA if certified else ABSTAIN, max(r, 0.0) if certified else 0.0,
                               looks[a.look], a.seconds)


def predict_sequential(
    sampler: Sampler,
    xs: torch.Tensor,
    n_max: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    sequence: str = DEFAULT_SEQUENCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PREDICT with early stopping for each input of ``xs``: (predictions, n_used), (B,)
    int64 tensors (``ABSTAIN`` where undecided at n_max).

    Samples are drawn in rounds up to the looks of ``confidence_sequence(sequence, n_max,
    alpha)``; at each look the top two counts c1 >= c2 are tested (``decides``) and the top
    class is returned once the test rejects. ``"mixture"`` (default): the one-sided
    Beta-mixture test of p <= 1/2 on the c1 + c2 votes at level alpha / (num_classes - 1);
    ``"cp-union"`` / ``"cp-geometric"``: PREDICT's two-sided binomial test of c1 ~ Bin(c1 + c2,
    1/2) at the look's level alpha_k.

    *Guarantee.* A class other than g(x) is returned with probability at most alpha, whatever
    the stopping time. Mixture: a wrong class c needs the test of the votes for c and g(x) alone
    to reject (the runner-up has at least g(x)'s votes, and the test statistic falls with each
    vote for the runner-up), which is anytime-valid on that sub-stream (Ville's inequality, the
    theorem of ``smoothcert.sequential``) at level alpha / (num_classes - 1); a union bound over
    the classes c != g(x). CP: a wrong class at look k needs a false rejection at level alpha_k
    (Cohen et al., 2019, Theorem 2, for the fixed sample size n_k), and a union bound over the
    looks gives sum_k alpha_k <= alpha.
    """
    n_max = check_int("n_max", n_max, 1)
    alpha = check_alpha(alpha)
    batch_size = check_int("batch_size", batch_size, 1)
    cs = confidence_sequence(sequence, n_max, alpha)
    xs = sampler.batch(xs, "xs")
    B = xs.shape[0]
    counts = torch.zeros(B, sampler.num_classes, dtype=torch.long, device=xs.device)
    pred = np.full(B, ABSTAIN, dtype=np.int64)
    n_used = np.zeros(B, dtype=np.int64)
    running = np.arange(B)
    drawn = 0
    for k, n_k in enumerate(cs.looks):
        sel = torch.from_numpy(running).to(xs.device)
        counts[sel] += sampler.counts(xs[sel], int(n_k) - drawn, batch_size, generator)
        top2 = counts[sel].topk(2, dim=1)
        values, labels = torch.stack([top2.values, top2.indices]).cpu().numpy()  # one host sync
        drawn = int(n_k)
        n_used[running] = drawn
        decided = cs.decides(values[:, 0], values[:, 1], k, sampler.num_classes)
        pred[running[decided]] = labels[decided, 0]
        running = running[~decided]
        if running.size == 0:
            break
    return torch.from_numpy(pred), torch.from_numpy(n_used)


__all__ = ["ABSTAIN", "PackedResult", "certificate", "certify", "certify_sequential", "certify_sequential_packed",
           "check_options", "predict", "predict_sequential"]
