"""Training methods and augmentations: each one's defining property.

* MaxUp trains on each input's argmax-loss copy (its gradient is that copy's gradient), ranks
  the copies without autograd and without touching BatchNorm running statistics, selects on
  low-resolution copies when asked, uses soft labels for CutMix; with m = 1 it is Gaussian
  augmentation, and Gaussian augmentation is CE(f(x + sigma * z), y).
* ALPS moves exactly E/2 of the label mass to the least-likely class of f(x~).
* The augmentations do what their papers define (crops, boxes, mixing weights = pixel fractions).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from smoothcert import augment as A
from smoothcert.losses import soft_cross_entropy
from smoothcert.methods import create_method
from smoothcert.methods.alps import alps_target
from smoothcert.methods.common import batch_stats_only
from smoothcert.models import create_model

K = 4  # classes


def make_model(arch: str = "digits_cnn", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(arch, K, 1, 8, mean=[0.5], std=[0.25]).train()


def make_batch(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, K, (n,), generator=g)


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def assert_same_grads(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def bn_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def reference_worst(model, copies, target_of, resolution=None):
    """Per input, the copy with the largest loss (first on ties), ranked with batch statistics
    and without autograd: the rule MaxUp must implement."""
    with torch.no_grad(), batch_stats_only(model):
        losses = torch.stack([
            target_of(j)(model(c if resolution is None else A.downsample(c, resolution))) for j, c in enumerate(copies)])
    return losses.argmax(0)


# -- MaxUp -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["digits_cnn", "cifar_resnet20"])  # without and with BatchNorm
def test_maxup_gauss_gradient_is_the_argmax_loss_copy_gradient(arch):
    x, y = make_batch()
    sigma, m = 0.5, 5
    model = make_model(arch)
    ref = copy.deepcopy(model)
    method = create_method("maxup-gauss", sigma=sigma, m=m, warmup_epochs=0)
    torch.manual_seed(7)
    loss = method.loss(model, x, y)
    loss.backward()

    torch.manual_seed(7)
    copies = [A.gaussian(x, sigma) for _ in range(m)]  # copy j is the j-th draw
    j = reference_worst(ref, copies, lambda _: (lambda logits: F.cross_entropy(logits, y, reduction="none")))
    assert len(set(j.tolist())) > 1  # the choice is per input
    chosen = torch.stack(copies)[j, torch.arange(len(y))]
    loss_ref = F.cross_entropy(ref(chosen), y)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))
    # BatchNorm: exactly one update of the running statistics, by the training forward
    for k, v in bn_buffers(model).items():
        torch.testing.assert_close(v, bn_buffers(ref)[k])
    if arch == "cifar_resnet20":
        assert int(model.state_dict()["1.bn1.num_batches_tracked"]) == 1


def test_selection_leaves_batchnorm_running_stats_untouched():
    x, y = make_batch()
    model = make_model("cifar_resnet20")
    before = bn_buffers(model)
    method = create_method("maxup-gauss", sigma=0.5, m=6, warmup_epochs=0)
    method.select(model, x, y, 6)
    after = bn_buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_selection_runs_m_forwards_without_autograd_then_one_with():
    x, y = make_batch()
    model = make_model()
    seen: list[bool] = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(torch.is_grad_enabled()))
    create_method("maxup-gauss", sigma=0.25, m=4, warmup_epochs=0).loss(model, x, y)
    assert seen == [False] * 4 + [True]


def test_m_equal_1_is_gauss_and_gauss_is_noisy_cross_entropy():
    x, y = make_batch()
    sigma = 0.3
    results = []
    for method in (create_method("gauss", sigma=sigma), create_method("maxup-gauss", sigma=sigma, m=1),
                   create_method("maxup", augment="gaussian", m=1, sigma=sigma)):
        model = make_model()
        torch.manual_seed(3)
        loss = method.loss(model, x, y)
        loss.backward()
        results.append((loss.detach(), grads(model)))
    model = make_model()
    torch.manual_seed(3)
    loss_ref = F.cross_entropy(model(x + sigma * torch.randn_like(x)), y)
    loss_ref.backward()
    for loss, g in results:
        torch.testing.assert_close(loss, loss_ref.detach())
        assert_same_grads(g, grads(model))


def test_warmup_epochs_train_plain_gauss_first():
    x, y = make_batch()
    method = create_method("maxup-gauss", sigma=0.25, m=3)  # warmup_epochs defaults to 5
    assert method.params() == {"sigma": 0.25, "m": 3, "warmup_epochs": 5}
    model = make_model()
    calls: list[bool] = []
    model.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    for epoch, expected in ((0, [True]), (4, [True]), (5, [False] * 3 + [True])):
        calls.clear()
        method.on_epoch_start(epoch, 10)
        method.loss(model, x, y)
        assert calls == expected, epoch


def test_maxup_cutmix_trains_on_the_worst_copy_with_its_soft_labels():
    x, y = make_batch(16)
    m = 4
    model = make_model()
    ref = copy.deepcopy(model)
    method = create_method("maxup", augment="cutmix", m=m)
    torch.manual_seed(11)
    loss = method.loss(model, x, y)
    loss.backward()

    torch.manual_seed(11)
    copies = [A.cutmix(x, y, 1.0) for _ in range(m)]
    probs = [t.probs(K) for _, t in copies]
    j = reference_worst(ref, [c for c, _ in copies], lambda i: (lambda logits: soft_cross_entropy(logits, probs[i], "none")))
    rows = torch.arange(len(y))
    chosen_x = torch.stack([c for c, _ in copies])[j, rows]
    chosen_p = torch.stack(probs)[j, rows]
    assert (chosen_p.max(1).values < 1).any()  # soft labels reach the loss
    loss_ref = soft_cross_entropy(ref(chosen_x), chosen_p)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))


def test_low_resolution_selection_ranks_small_copies_and_trains_at_full_size():
    x, y = make_batch(16)
    m, R = 3, 4
    model = make_model("cifar_resnet20")  # global pooling: takes any size
    ref = copy.deepcopy(model)
    shapes: list[tuple[bool, tuple[int, ...]]] = []
    model.register_forward_hook(lambda mod, inp, out: shapes.append((torch.is_grad_enabled(), tuple(inp[0].shape[-2:]))))
    method = create_method("maxup", augment="cutout:3", m=m, select_resolution=R, sigma=0.2)
    torch.manual_seed(5)
    loss = method.loss(model, x, y)
    loss.backward()
    assert shapes == [(False, (R, R))] * m + [(True, (8, 8))]

    torch.manual_seed(5)
    copies = [A.gaussian(A.cutout(x, 3), 0.2) for _ in range(m)]  # sigma > 0: the noise ends the chain
    j = reference_worst(ref, copies, lambda _: (lambda logits: F.cross_entropy(logits, y, reduction="none")), R)
    chosen = torch.stack(copies)[j, torch.arange(len(y))]
    loss_ref = F.cross_entropy(ref(chosen), y)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))


def test_select_resolution_the_model_cannot_take_is_a_value_error():
    x, y = make_batch()
    method = create_method("maxup", augment="cutout", m=2, select_resolution=4)
    with pytest.raises(ValueError, match="select_resolution 4"):
        method.loss(make_model("digits_cnn"), x, y)  # fixed-size fully connected layer


@pytest.mark.parametrize("name, params, message", [
    ("maxup-gauss", {"sigma": 0.25, "m": 0}, "m must be"),
    ("maxup-gauss", {"sigma": -0.1, "m": 2}, "sigma must be"),
    ("maxup-gauss", {"sigma": 0.0, "m": 2}, "sigma must be"),
    ("gauss", {"sigma": float("nan")}, "sigma must be"),
    ("maxup", {"augment": "gaussian", "m": 2}, "gaussian needs sigma"),
    ("maxup", {"augment": "cutout:0", "m": 2}, "integer >= 1"),
    ("maxup", {"augment": "cutmix:-1", "m": 2}, "alpha must be > 0"),
    ("maxup", {"augment": "rotate", "m": 2}, "choose from"),
    ("maxup", {"augment": "cutout", "m": 2, "select_resolution": 0}, "select_resolution must be"),
    ("alps", {"alps_eps": 0.0}, "alps_eps must be in"),
    ("alps", {"alps_eps": 1.5}, "alps_eps must be in"),
    ("alps", {"alps_alpha": 0}, "alps_alpha must be"),
])
def test_bad_method_parameters_name_the_argument(name, params, message):
    with pytest.raises(ValueError, match=message):
        create_method(name, **params)


def test_gauss_with_sigma_zero_is_plain_training():
    x, y = make_batch()
    model = make_model()
    loss = create_method("gauss", sigma=0.0).loss(model, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))


# -- ALPS ------------------------------------------------------------------------------------------
def test_alps_target_moves_exactly_half_eps_to_the_least_likely_class():
    torch.manual_seed(0)
    logits = torch.randn(64, 10)
    y = logits.argmax(1)  # so that the least-likely class is never y
    for eps in (0.1, 0.5, 1.0):
        rho = alps_target(logits, y, eps)
        k = logits.argmin(1)
        rows = torch.arange(64)
        torch.testing.assert_close(rho.sum(1), torch.ones(64))
        torch.testing.assert_close(rho[rows, k], torch.full((64,), eps / 2))
        torch.testing.assert_close(rho[rows, y], torch.full((64,), 1 - eps / 2))
        torch.testing.assert_close((rho - F.one_hot(y, 10)).abs().sum(1), torch.full((64,), float(eps)))  # L1 = E


def test_alps_loss_is_soft_ce_at_the_mixed_noisy_input():
    x, y = make_batch(16)
    a, b, eps, sigma = 8.0, 2.0, 0.4, 0.25
    model = make_model()
    ref = copy.deepcopy(model)
    method = create_method("alps", sigma=sigma, alps_alpha=a, alps_beta=b, alps_eps=eps)
    torch.manual_seed(2)
    loss = method.loss(model, x, y)
    loss.backward()

    torch.manual_seed(2)
    lam = A.sample_beta(a, b, 16).view(-1, 1, 1, 1)
    perm = torch.randperm(16)
    x_tilde = lam * x + (1 - lam) * x[perm] + sigma * torch.randn_like(x)
    logits = ref(x_tilde)
    k = logits.detach().argmin(1)
    rho = (1 - eps / 2) * F.one_hot(y, K) + (eps / 2) * F.one_hot(k, K)
    loss_ref = -(rho * F.log_softmax(logits, 1)).sum(1).mean()
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    assert_same_grads(grads(model), grads(ref))


def test_alps_default_beta_has_its_mode_in_three_quarters_to_one():
    p = create_method("alps").params()
    a, b = p["alps_alpha"], p["alps_beta"]
    assert 0.75 < (a - 1) / (a + b - 2) < 1


# -- augmentations ---------------------------------------------------------------------------------
def test_sample_beta_follows_the_beta_distribution():
    draws = A.sample_beta(2.0, 5.0, 4000, torch.Generator().manual_seed(0)).numpy()
    assert stats.kstest(draws, stats.beta(2.0, 5.0).cdf).pvalue > 0.01
    assert np.all((draws >= 0) & (draws <= 1))


def test_crop_flip_outputs_are_crops_of_the_padded_image_maybe_flipped():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 2, 6, 5, generator=g)
    p = 2
    out = A.crop_flip(x, p, generator=g)
    padded = F.pad(x, (p, p, p, p))
    seen = set()
    for b in range(32):
        matches = [(dy, dx, f) for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (False, True)
                   if torch.equal(out[b], (lambda c: c.flip(-1) if f else c)(padded[b, :, dy:dy + 6, dx:dx + 5]))]
        assert matches, b
        seen.add(matches[0][2])
    assert seen == {False, True}
    flat = A.crop_flip(x, 0, generator=torch.Generator().manual_seed(1))  # padding 0: flips only
    assert all(torch.equal(flat[b], x[b]) or torch.equal(flat[b], x[b].flip(-1)) for b in range(32))


def test_cutout_zeroes_one_clipped_square():
    x = torch.ones(64, 1, 10, 10)
    out = A.cutout(x, 4, generator=torch.Generator().manual_seed(0))
    for b in range(64):
        zero = (out[b, 0] == 0).nonzero()
        rows, cols = zero[:, 0], zero[:, 1]
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(zero) == h * w and h <= 4 and w <= 4  # one rectangle, clipped at the border
        assert (h == 4 or rows.min() == 0 or rows.max() == 9) and (w == 4 or cols.min() == 0 or cols.max() == 9)


def test_cutmix_label_weights_are_the_pasted_pixel_fractions():
    B = 32
    x = torch.arange(1, B + 1, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, 8, 8) / B  # image b is constant
    y = torch.arange(B)
    out, t = A.cutmix(x, y, 1.0, generator=torch.Generator().manual_seed(0))
    assert t.labels.shape == (2, B)
    perm = t.labels[1]
    assert sorted(perm.tolist()) == list(range(B))
    for b in range(B):
        from_partner = (out[b, 0] == x[perm[b], 0, 0, 0]).float().mean() if perm[b] != b else None
        if from_partner is not None:
            assert float(t.weights[1, b]) == pytest.approx(float(from_partner))
    assert (t.weights[1] > 0).any() and (t.weights[1] < 1).all()


def test_mixup_mixes_images_and_labels_with_the_same_lambda():
    B = 16
    x = torch.rand(B, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(B)
    out, t = A.mixup(x, y, 0.4, generator=torch.Generator().manual_seed(0))
    lam, perm = t.weights[0].view(-1, 1, 1, 1), t.labels[1]
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[perm])
    eye = torch.eye(B)  # y = arange(B): the soft label is lam e_b + (1 - lam) e_perm(b)
    torch.testing.assert_close(t.probs(B), lam.view(-1, 1) * eye + (1 - lam.view(-1, 1)) * eye[perm])


def test_augmentation_chain_parses_and_puts_the_noise_last():
    aug = A.Augmentation("crop-flip:2+cutmix", sigma=0.25)
    assert aug.spec == "crop-flip:2+cutmix+gaussian" and aug.mixes_labels
    assert A.Augmentation("none").steps == [] and A.Augmentation("none", 0.5).spec == "gaussian"
    x, y = make_batch(8)
    out, t = A.Augmentation("cutout:2")(x, y)
    assert t.is_hard and torch.equal(t.labels[0], y) and out.shape == x.shape


def test_downsample_sets_the_shorter_side():
    x = torch.rand(2, 3, 16, 24)
    assert A.downsample(x, 8).shape == (2, 3, 8, 12)
    assert A.downsample(x, 16) is x
