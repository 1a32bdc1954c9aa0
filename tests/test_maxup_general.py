"""``maxup_loss`` beyond images (issue 16): a small PointNet on synthetic point clouds and a small
sequence model (embedding + GRU) with embedding-level noise and word dropout.

* the gradient is the gradient of each input's argmax-loss copy (computed here directly, by
  replaying the same m draws), the copies are ranked with BatchNorm on batch statistics and
  its running statistics untouched, and the chosen copy is the one drawn (not a new draw);
* m = 1 is plain augmentation; soft (B, K) labels work;
* memory does not grow with m: peak allocator bytes at m = 25 within 1.5x of m = 1
  (torch.profiler's CPU allocator events; on CUDA also the caching allocator's peak), and at
  most two of the drawn copies alive at any time (weak references to each copy drawn);
* bad augment callables, losses and m are ArgumentErrors naming the argument.
"""
from __future__ import annotations

import copy
import gc
import json
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from smoothcert import augment as A
from smoothcert import maxup_loss
from smoothcert.losses import soft_cross_entropy
from smoothcert.methods import create_method
from smoothcert.methods.common import batch_stats_only
from smoothcert.methods.maxup import maxup_select
from smoothcert.validation import ArgumentError

K = 3  # classes
V, T, D = 20, 12, 16  # vocabulary, sequence length, embedding width


# -- models and data -------------------------------------------------------------------------------
class PointNet(nn.Module):
    """Shared per-point MLP (3 -> 16 -> 32, BatchNorm) and a max over the points, then a linear head."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv1d(3, width, 1), nn.BatchNorm1d(width), nn.ReLU(),
                                 nn.Conv1d(width, 2 * width, 1), nn.BatchNorm1d(2 * width), nn.ReLU())
        self.head = nn.Linear(2 * width, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, 3)
        return self.head(self.mlp(x.transpose(1, 2)).amax(2))


class SeqModel(nn.Module):
    """Embedding -> (+ noise on the embedding output) -> GRU -> last hidden state -> linear."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.embedding = nn.Embedding(V, D, padding_idx=0)
        self.gru = nn.GRU(D, hidden, batch_first=True)
        self.head = nn.Linear(hidden, K)

    def forward(self, tokens: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embedding(tokens)
        if noise is not None:
            e = e + noise
        return self.head(self.gru(e)[1][0])


def point_clouds(B: int = 16, N: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on ellipsoids whose axes depend on the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (B,), generator=g)
    axes = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.5, 0.5], [0.5, 2.0, 1.0]])[y]
    d = torch.randn(B, N, 3, generator=g)
    return d / d.norm(dim=2, keepdim=True) * axes[:, None, :], y


def sequences(B: int = 16, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V, (B, T), generator=g), torch.randint(0, K, (B,), generator=g)


# -- augmentations (plain callables: any callable works) --------------------------------------------
def rotate_scale_jitter(x: torch.Tensor, y):
    """The paper's ModelNet40 augmentation: rotation about the vertical (y) axis, per-axis scaling,
    clipped jitter."""
    B = x.shape[0]
    t = 2 * math.pi * torch.rand(B)
    c, s, o, z = t.cos(), t.sin(), torch.ones_like(t), torch.zeros_like(t)
    rot = torch.stack([c, z, s, z, o, z, -s, z, c], 1).view(B, 3, 3)
    scale = torch.empty(B, 1, 3).uniform_(0.8, 1.25)
    return (x @ rot) * scale + (0.02 * torch.randn_like(x)).clamp(-0.05, 0.05), y


def point_mixup(x: torch.Tensor, y: torch.Tensor):
    """Point-wise mixup with (B, K) soft labels (hard labels or soft ones in)."""
    p = F.one_hot(y, K).float() if y.dim() == 1 else y
    lam = torch.rand(x.shape[0])
    perm = torch.randperm(x.shape[0])
    return (lam.view(-1, 1, 1) * x + (1 - lam.view(-1, 1, 1)) * x[perm],
            lam.view(-1, 1) * p + (1 - lam.view(-1, 1)) * p[perm])


def embedding_noise(x: torch.Tensor, y):
    """x -> (tokens, noise): the model adds the noise to its embedding output."""
    return (x, 0.5 * torch.randn(*x.shape, D)), y


def word_dropout(x: torch.Tensor, y):
    """Each token replaced by the padding id 0 with probability 0.3."""
    return x.masked_fill(torch.rand(x.shape) < 0.3, 0), y


CASES = {  # name: (model, data, augment)
    "pointnet-rotate-scale-jitter": (PointNet, point_clouds, rotate_scale_jitter),
    "gru-embedding-noise": (SeqModel, sequences, embedding_noise),
    "gru-word-dropout": (SeqModel, sequences, word_dropout),
}


# -- reference: the rule, computed directly ---------------------------------------------------------
def forward(model: nn.Module, x) -> torch.Tensor:
    return model(*x) if isinstance(x, tuple) else model(x)


def per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return soft_cross_entropy(logits, y, "none") if y.dim() == 2 else F.cross_entropy(logits, y, reduction="none")


def pick(j: torch.Tensor, items: list):
    """Per input i: item j[i] (tensors or tuples of tensors)."""
    if isinstance(items[0], tuple):
        return tuple(pick(j, [it[k] for it in items]) for k in range(len(items[0])))
    return torch.stack(items)[j, torch.arange(len(j))]


def reference_loss(model: nn.Module, x, y, augment, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same m draws (seed), ranked by per-input loss without autograd on batch statistics,
    each input's worst copy trained on: (loss, chosen copy indices)."""
    torch.manual_seed(seed)
    copies = [augment(x, y) for _ in range(m)]
    with torch.no_grad(), batch_stats_only(model):
        losses = torch.stack([per_sample(forward(model, xa), ya) for xa, ya in copies])
    j = losses.argmax(0)
    xs, ys = pick(j, [c[0] for c in copies]), pick(j, [c[1] for c in copies])
    return per_sample(forward(model, xs), ys).mean(), j


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def assert_same_grads(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and len(a) > 0
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def make(case: str, seed: int = 0):
    make_model, data, augment = CASES[case]
    torch.manual_seed(seed)
    model = make_model().train()
    return model, *data(), augment


# -- the rule ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_is_the_argmax_loss_copy_gradient(case):
    model, x, y, augment = make(case)
    ref = copy.deepcopy(model)
    m = 5
    torch.manual_seed(7)
    loss = maxup_loss(model, x, y, augment, m)
    loss.backward()
    loss_ref, j = reference_loss(ref, x, y, augment, m, seed=7)
    loss_ref.backward()
    assert len(set(j.tolist())) > 1  # the choice is per input
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))
    # BatchNorm (PointNet): one update of the running statistics, by the training forward only
    buffers, buffers_ref = bn_buffers(model), bn_buffers(ref)
    assert buffers.keys() == buffers_ref.keys()
    for k in buffers:
        torch.testing.assert_close(buffers[k], buffers_ref[k])
    if "pointnet" in case:
        assert int(buffers["mlp.1.num_batches_tracked"]) == 1


def test_loss_is_the_mean_over_inputs_of_the_worst_copy_loss():
    model, x, y, augment = make("pointnet-rotate-scale-jitter")
    model.eval()  # no BatchNorm subtleties: every forward is the same function
    m = 6
    torch.manual_seed(3)
    copies = [augment(x, y)[0] for _ in range(m)]
    with torch.no_grad():
        worst = torch.stack([F.cross_entropy(model(c), y, reduction="none") for c in copies]).amax(0).mean()
    torch.manual_seed(3)
    torch.testing.assert_close(maxup_loss(model, x, y, augment, m).detach(), worst)


@pytest.mark.parametrize("case", sorted(CASES))
def test_m_equal_1_is_plain_augmentation(case):
    model, x, y, augment = make(case)
    ref = copy.deepcopy(model)
    calls: list[bool] = []
    model.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    torch.manual_seed(4)
    loss = maxup_loss(model, x, y, augment, 1)
    loss.backward()
    torch.manual_seed(4)
    xa, ya = augment(x, y)
    loss_ref = F.cross_entropy(forward(ref, xa), ya)
    loss_ref.backward()
    assert calls == [True]  # one forward, with autograd: no selection pass
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))


def test_m_ranking_forwards_without_autograd_then_one_with():
    model, x, y, augment = make("gru-embedding-noise")
    seen: list[bool] = []
    model.register_forward_hook(lambda *a: seen.append(torch.is_grad_enabled()))
    maxup_loss(model, x, y, augment, 4)
    assert seen == [False] * 4 + [True]


def test_soft_labels_are_selected_with_their_copy():
    model, x, y, _ = make("pointnet-rotate-scale-jitter")
    ref = copy.deepcopy(model)
    m = 4
    torch.manual_seed(9)
    loss = maxup_loss(model, x, y, point_mixup, m)
    loss.backward()
    loss_ref, j = reference_loss(ref, x, y, point_mixup, m, seed=9)
    loss_ref.backward()
    assert len(set(j.tolist())) > 1
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))
    # the labels returned are the chosen copies' soft labels; soft labels also go in
    torch.manual_seed(9)
    _, y_sel = maxup_select(model, x, y, point_mixup, m)
    torch.manual_seed(9)
    probs = torch.stack([point_mixup(x, y)[1] for _ in range(m)])
    torch.testing.assert_close(y_sel, probs[j, torch.arange(len(y))])
    assert (y_sel.max(1).values < 0.99).any()
    soft_in = F.one_hot(y, K).float() * 0.9 + 0.1 / K
    assert torch.isfinite(maxup_loss(model, x, soft_in, point_mixup, m))


def test_selection_leaves_batchnorm_running_stats_untouched():
    model, x, y, augment = make("pointnet-rotate-scale-jitter")
    before = bn_buffers(model)
    maxup_select(model, x, y, augment, 6)
    after = bn_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(mod.track_running_stats for mod in model.modules()
                                  if isinstance(mod, nn.BatchNorm1d))


# -- memory --------------------------------------------------------------------------------------------
def peak_cpu_bytes(fn) -> int:
    """Peak of live bytes during ``fn()`` relative to its start, from torch.profiler's CPU
    allocator events (tracemalloc does not see torch's allocator)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_cuda_bytes(fn) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def on(device: str, case: str):
    model, x, y, augment = make(case)
    if "pointnet" in case:  # narrow: the activations kept for backward do not dwarf the input copies
        torch.manual_seed(0)
        model = PointNet(width=4).train()
    model.to(device)
    to = lambda v: tuple(t.to(device) for t in v) if isinstance(v, tuple) else v.to(device)  # noqa: E731

    def aug(xx, yy):
        xa, ya = augment(xx.cpu(), yy.cpu())
        return to(xa), ya.to(device)

    return model, x.to(device), y.to(device), aug if device != "cpu" else augment


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["pointnet-rotate-scale-jitter", "gru-embedding-noise"])
def test_peak_memory_does_not_grow_with_m(case, device):
    model, x, y, augment = on(device, case)

    def step(m: int):
        def fn():
            model.zero_grad(set_to_none=False)
            maxup_loss(model, x, y, augment, m).backward()
        return fn

    step(1)()  # allocate .grad before measuring
    peak = peak_cuda_bytes if device == "cuda" else peak_cpu_bytes
    p1, p25 = peak(step(1)), peak(step(25))
    assert p1 > 0
    assert p25 <= 1.5 * p1, (p1, p25)


def test_at_most_two_drawn_copies_alive_whatever_m():
    """Weak references to every tensor the augmentation returns: how many are alive at once."""
    model, x, y, _ = make("gru-embedding-noise")
    alive: set[int] = set()
    most = [0]

    def counted(xx, yy):
        gc.collect()
        (tokens, noise), ya = embedding_noise(xx, yy)
        key = id(noise)
        alive.add(key)
        weakref.finalize(noise, alive.discard, key)
        most[0] = max(most[0], len(alive))
        return (tokens, noise), ya

    for m in (2, 25):
        most[0] = 0
        maxup_loss(model, x, y, counted, m).backward()
        assert most[0] <= 2, (m, most[0])  # the running worst copy and the new draw


# -- the method takes the same callables -------------------------------------------------------------
def test_maxup_method_takes_a_callable_and_equals_maxup_loss():
    model, x, y, augment = make("pointnet-rotate-scale-jitter")
    ref = copy.deepcopy(model)
    method = create_method("maxup", augment=augment, m=4)
    torch.manual_seed(5)
    loss = method.loss(model, x, y)
    loss.backward()
    torch.manual_seed(5)
    loss_ref = maxup_loss(ref, x, y, augment, 4)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))
    assert method.last_count == len(y)
    assert json.dumps(method.params())  # the run config stays JSON


def test_registry_augmentations_are_the_chain_steps():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, K, (8,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, K))
    losses = []
    for augment in ("cutout:3+crop:1", lambda a, b: A.get_augmentation("crop", padding=1)(
            *A.get_augmentation("cutout", size=3)(a, b))):
        torch.manual_seed(1)
        losses.append(create_method("maxup", augment=augment, m=3).loss(model, x, y))
    torch.testing.assert_close(losses[0], losses[1])
    assert "crop" in A.list_augmentations()
    with pytest.raises(ArgumentError, match="^augment: unknown augmentation 'rotate'"):
        A.get_augmentation("rotate")
    with pytest.raises(ArgumentError, match="^augment: cutout's size"):
        A.get_augmentation("cutout", size=0)


def test_crop_without_flip_is_a_translation():
    x = torch.rand(64, 1, 6, 6)
    out = A.crop_flip(x, 2, flip=False)
    pad = F.pad(x, (2, 2, 2, 2))
    for b in range(len(x)):  # every output is one of the 25 shifted windows, never mirrored
        assert any(torch.equal(out[b], pad[b, :, i:i + 6, j:j + 6]) for i in range(5) for j in range(5))


# -- bad input -----------------------------------------------------------------------------------------
def _bad_batch(x, y):
    return x[:-1], y


def _bad_labels(x, y):
    return x, y[:-1]


def _nan_copy(x, y):
    return x.masked_fill(torch.rand(x.shape) < 0.01, float("nan")), y


def _inf_soft_labels(x, y):
    p = F.one_hot(y, K).float()
    p[0, 0] = float("inf")
    return x, p


def _not_a_pair(x, y):
    return x


@pytest.mark.parametrize("augment, m, loss_fn, arg, message", [
    (rotate_scale_jitter, 0, None, "m", "m must be an integer >= 1"),
    (rotate_scale_jitter, 2.5, None, "m", "m must be an integer >= 1"),
    ("cutout", 2, None, "augment", "augment must be a callable"),
    (_bad_batch, 3, None, "augment", "augment returned x_aug with batch size 15, expected 16"),
    (_bad_batch, 1, None, "augment", "augment returned x_aug with batch size 15, expected 16"),
    (_bad_labels, 3, None, "augment", "augment returned y_aug with batch size 15, expected 16"),
    (_nan_copy, 3, None, "augment", "augment returned non-finite values"),
    (_nan_copy, 1, None, "augment", "augment returned non-finite values"),
    (_inf_soft_labels, 2, None, "augment", "augment returned non-finite values"),
    (_not_a_pair, 2, None, "augment", "augment must return a pair"),
    (rotate_scale_jitter, 2, lambda logits, y: F.cross_entropy(logits, y), "loss_fn",
     "loss_fn must return one loss per input"),
])
def test_bad_input_is_an_argument_error_naming_it(augment, m, loss_fn, arg, message):
    model, x, y, _ = make("pointnet-rotate-scale-jitter")
    with pytest.raises(ArgumentError, match="^" + message) as e:
        maxup_loss(model, x, y, augment, m, loss_fn)
    assert e.value.arg == arg


def test_bad_method_augment_is_an_argument_error():
    with pytest.raises(ArgumentError, match="^augment must be a spec like 'cutmix' or a callable") as e:
        create_method("maxup", augment=3, m=2)
    assert e.value.arg == "augment"
