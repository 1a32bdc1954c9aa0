"""AugMix/AugMax objectives, the AugMax search, and DuBN/DuBIN routing and conversion."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothcert.data import get_dataset
from smoothcert.logs import atomic_torch_save, atomic_write_json
from smoothcert.methods import create_method
from smoothcert.methods.augmax import AugMax, augmax_search, random_start
from smoothcert.methods.augmix import AugMix, augmix_chains, mix, sample_mixing
from smoothcert.models import create_model
from smoothcert.models.cifar_resnet import BasicBlock
from smoothcert.models.dubin import DuBIN, DuBN, apply_norm, apply_normalization, dual_bn_route, has_dual_bn
from smoothcert.runs import load_model


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = get_dataset("digits", "train")
    return ds.x[:256], ds.y[:256]


@pytest.fixture(scope="module")
def trained_cnn(digits) -> nn.Module:  # noqa: ANN001
    """digits_cnn after a short training run: a model whose loss landscape means something."""
    torch.manual_seed(0)
    x, y = digits
    model = create_model("digits_cnn", 10, 1, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        i = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_mixing_is_a_convex_combination() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=g)
    chains = torch.rand(3, 5, 3, 8, 8, generator=g)
    w, m = sample_mixing(5, 3, g)
    assert torch.allclose(w.sum(1), torch.ones(5)) and (w >= 0).all() and ((m >= 0) & (m <= 1)).all()
    assert torch.allclose(mix(x, chains, w, torch.ones(5)), x)
    assert torch.allclose(mix(x, chains, F.one_hot(torch.full((5,), 2), 3).float(), torch.zeros(5)), chains[2])
    manual = m.view(-1, 1, 1, 1) * x + (1 - m.view(-1, 1, 1, 1)) * (w.T.view(3, 5, 1, 1, 1) * chains).sum(0)
    assert torch.allclose(mix(x, chains, w, m), manual, atol=1e-6)
    # Dirichlet(1, 1, 1): each weight has mean 1/3 and variance 1/18
    w_many, m_many = sample_mixing(20000, 3, g)
    assert torch.allclose(w_many.mean(0), torch.full((3,), 1 / 3), atol=0.01)
    assert abs(w_many[:, 0].var().item() - 1 / 18) < 0.003 and abs(m_many.mean().item() - 0.5) < 0.01


def _ce(model: nn.Module, x, chains, w, m, y) -> float:  # noqa: ANN001
    with torch.no_grad():
        return F.cross_entropy(model.eval()(mix(x, chains, w, m)), y).item()


def test_search_increases_the_loss_over_the_random_start(trained_cnn: nn.Module, digits) -> None:  # noqa: ANN001
    x, y = digits
    x, y = x[:128], y[:128]
    torch.manual_seed(1)
    chains = augmix_chains(x, 3, 3, 3, torch.Generator().manual_seed(1))
    p0, m0 = random_start(128, 3, torch.Generator().manual_seed(2))
    start = _ce(trained_cnn, x, chains, F.softmax(p0, 1), m0, y)
    losses = [start]
    for steps in (1, 3, 5):
        w, m = augmax_search(trained_cnn, x, y, chains, steps=steps, step_size=0.1, p_init=p0, m_init=m0)
        losses.append(_ce(trained_cnn, x, chains, w, m, y))
    assert all(a < b for a, b in zip(losses, losses[1:])), losses  # each run of steps climbs further
    assert losses[-1] > 1.5 * start, losses
    w0, m0_ = augmax_search(trained_cnn, x, y, chains, steps=0, p_init=p0, m_init=m0)
    assert torch.allclose(w0, F.softmax(p0, 1)) and torch.equal(m0_, m0)  # no steps: the random start


def test_search_stays_on_the_simplex_and_m_in_unit_interval(trained_cnn: nn.Module, digits) -> None:  # noqa: ANN001
    x, y = digits
    x, y = x[:64], y[:64]
    chains = augmix_chains(x, 4, 2, 3, torch.Generator().manual_seed(3))
    w, m = augmax_search(trained_cnn, x, y, chains, steps=12, step_size=0.7, generator=torch.Generator().manual_seed(4))
    assert w.shape == (64, 4) and m.shape == (64,)
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(64), atol=1e-6)
    assert (m >= 0).all() and (m <= 1).all() and ((m == 0) | (m == 1)).any()  # the clip was needed and applied
    assert not w.requires_grad and not m.requires_grad


def test_search_restores_train_mode_and_requires_grad(digits) -> None:  # noqa: ANN001
    x, y = digits
    model = create_model("cifar_resnet20", 10, 1, 8, norm="dubin")
    model.train()
    model[1].layer3.eval()  # a submodule deliberately left in eval mode
    model[1].fc.weight.requires_grad_(False)  # a frozen parameter
    modes = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    stats = model[1].bn1.bn_adv.running_mean.clone()
    chains = augmix_chains(x[:16], 3, 3, 3)
    augmax_search(model, x[:16], y[:16], chains, steps=2)
    assert modes == {n: m.training for n, m in model.named_modules()}
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())  # the search leaves no gradient behind
    assert torch.equal(stats, model[1].bn1.bn_adv.running_mean)  # eval mode: statistics untouched
    assert all(m.route == "clean" for m in model.modules() if isinstance(m, DuBN))


def test_objectives_are_ce_plus_lambda_js(trained_cnn: nn.Module, digits) -> None:  # noqa: ANN001
    x, y = digits
    x, y = x[:32], y[:32]
    model = trained_cnn.train()  # no BatchNorm: logits of a sample do not depend on the batch
    clean_ce = F.cross_entropy(model(x), y)
    for method in (AugMix(js_lambda=0.0), AugMax(js_lambda=0.0, augmax_steps=2)):
        assert torch.allclose(method.loss(model, x, y), clean_ce, atol=1e-6)
        assert method.last_count == 32 and int(method.last_correct) == int((model(x).argmax(1) == y).sum())
    for method in (AugMix(js_lambda=12.0), AugMax(js_lambda=10.0, augmax_steps=2)):
        torch.manual_seed(5)
        loss = method.loss(model, x, y)
        assert loss > clean_ce + 1e-4 and loss.requires_grad and model.training


def test_augmax_trains_both_dubn_branches(digits) -> None:  # noqa: ANN001
    x, y = digits
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", 10, 1, 8, norm="dubin").train()
    bn = model[1].layer3[0].bn1  # a DuBN
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    loss = AugMax(augmax_steps=1).loss(model, x[:16], y[:16])
    loss.backward()
    after = bn.state_dict()
    for branch in ("bn_clean", "bn_adv"):
        assert not torch.equal(before[f"{branch}.running_mean"], after[f"{branch}.running_mean"])
        assert getattr(bn, branch).weight.grad is not None and getattr(bn, branch).weight.grad.abs().sum() > 0
    # AugMix never routes to the adversarial branch
    model.zero_grad()
    AugMix().loss(model, x[:16], y[:16]).backward()
    assert bn.bn_adv.weight.grad is None or bn.bn_adv.weight.grad.abs().sum() == 0


def test_registry_and_bad_parameters() -> None:
    m = create_method("augmax", js_lambda=3.0, augmax_steps=7, augmax_step_size=0.05)
    assert isinstance(m, AugMax) and m.params()["augmax_steps"] == 7 and m.params()["augmax_step_size"] == 0.05
    assert create_method("augmix").params()["js_lambda"] == 12.0 and AugMax().params()["js_lambda"] == 10.0
    for kw, name in [({"augmax_steps": -1}, "augmax_steps"), ({"augmax_step_size": 0}, "augmax_step_size"),
                     ({"js_lambda": -1}, "js_lambda"), ({"mixture_width": 0}, "mixture_width"),
                     ({"severity": 11}, "severity")]:
        with pytest.raises(ValueError, match=name):
            AugMax(**kw)


# -- DuBN / DuBIN ------------------------------------------------------------------------------------
def test_dubn_routes_clean_and_adversarial_batches_to_different_statistics() -> None:
    torch.manual_seed(0)
    net = apply_norm(nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4)), "dubn")
    dubn = net[1]
    clean = torch.randn(32, 2, 6, 6)
    adv = torch.randn(32, 2, 6, 6) * 3 + 5
    net.train()
    for _ in range(100):
        net(clean)
        with dual_bn_route(net, "adv"):
            net(adv)
    h_clean, h_adv = net[0](clean), net[0](adv)
    assert torch.allclose(dubn.bn_clean.running_mean, h_clean.mean((0, 2, 3)), atol=0.02)
    assert torch.allclose(dubn.bn_adv.running_mean, h_adv.mean((0, 2, 3)), atol=0.02)
    assert not torch.allclose(dubn.bn_clean.running_mean, dubn.bn_adv.running_mean, atol=0.1)
    net.eval()  # test time: the clean route and its statistics
    assert dubn.route == "clean"
    expect = F.batch_norm(h_adv, dubn.bn_clean.running_mean, dubn.bn_clean.running_var, dubn.bn_clean.weight,
                          dubn.bn_clean.bias, False, 0.0, dubn.bn_clean.eps)
    assert torch.allclose(net(adv), expect, atol=1e-5)
    with dual_bn_route(net, "adv"):
        assert not torch.allclose(net(adv), expect, atol=1e-2)
    with pytest.raises(RuntimeError), dual_bn_route(net, "adv"):
        raise RuntimeError("inside")
    assert dubn.route == "clean"  # restored after an exception
    for bad in ("test", -1, True):
        with pytest.raises(ValueError, match="route"):
            with dual_bn_route(net, bad):
                pass


def test_split_route_equals_two_forwards() -> None:
    torch.manual_seed(0)
    a = create_model("cifar_resnet20", 10, 1, 8, norm="dubin").train()
    b = create_model("cifar_resnet20", 10, 1, 8, norm="dubin").train()
    b.load_state_dict(a.state_dict())
    clean, adv = torch.rand(6, 1, 8, 8), torch.rand(4, 1, 8, 8) * 0.3 + 0.7
    with dual_bn_route(a, 6):
        one = a(torch.cat([clean, adv]))
    with dual_bn_route(b, "adv"):
        two_adv = b(adv)
    two = torch.cat([b(clean), two_adv])
    assert torch.allclose(one, two, atol=1e-5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), k  # the same statistics updates


def test_dubin_on_the_residual_models() -> None:
    for arch, kw, early in [("cifar_resnet20", {}, 6), ("preact_resnet18", {}, 6), ("wrn", {"depth": 10, "width": 1}, 2)]:
        model = create_model(arch, 10, 3, 16, norm="dubin", **kw)
        dubins = [m for m in model.modules() if isinstance(m, DuBIN)]
        assert len(dubins) == early, arch  # the blocks before the last stage
        assert not any(type(m) is nn.BatchNorm2d and not _inside_dual(model, m) for m in model.modules())
        assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    # the IN half is instance-normalised: per image and channel, zero mean and unit variance
    d = DuBIN(8)
    out = d.train()(torch.randn(4, 8, 5, 5) * 4 + 2)
    assert torch.allclose(out[:, :4].mean((2, 3)), torch.zeros(4, 4), atol=1e-5)
    assert torch.allclose(out[:, 4:].mean((0, 2, 3)), torch.zeros(4), atol=1e-5)  # the BN half: over the batch


def _inside_dual(model: nn.Module, bn: nn.Module) -> bool:
    return any(bn is m.bn_clean or bn is m.bn_adv for m in model.modules() if isinstance(m, DuBN))


def test_dubin_on_a_model_built_from_our_blocks_and_bad_models() -> None:
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), BasicBlock(16, 16),
                        BasicBlock(16, 32, 2, nn.Sequential(nn.Conv2d(16, 32, 1, stride=2), nn.BatchNorm2d(32))),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))
    apply_norm(net, "dubin")
    assert isinstance(net[2].bn1, DuBIN) and isinstance(net[3].bn1, DuBN) and isinstance(net[1], DuBN)
    assert has_dual_bn(net)
    for arch in ("lenet", "digits_cnn"):
        with pytest.raises(ValueError, match="normalization dubin needs a model with residual blocks"):
            create_model(arch, 10, 1, 28, normalization="dubin")
        with pytest.raises(ValueError, match="normalization dubn needs a model with BatchNorm2d"):
            create_model(arch, 10, 1, 28, norm="dubn")  # the key config.json records: the same setting
    with pytest.raises(ValueError, match="normalization must be one of"):
        apply_normalization(net, "gn")
    assert apply_norm is apply_normalization  # the second release's name


def test_dubn_conversion_keeps_the_function_and_checkpoints_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_model("cifar_resnet20", 10, 1, 8)
    net.train()(torch.rand(16, 1, 8, 8))  # non-trivial running statistics
    net.eval()
    x = torch.rand(4, 1, 8, 8)
    ref = net(x)
    apply_norm(net[1], "dubn")
    assert torch.allclose(net(x), ref, atol=1e-6)
    with dual_bn_route(net, "adv"):
        assert torch.allclose(net(x), ref, atol=1e-6)  # both branches start as copies
    # a run directory whose config records the norm rebuilds the same model
    model = create_model("cifar_resnet20", 10, 1, 8, norm="dubin")
    config = {"dataset": "digits", "arch": "cifar_resnet20", "num_classes": 10, "input_shape": [1, 8, 8],
              "mean": [0.0], "std": [1.0], "model_kwargs": {"norm": "dubin"}, "sigma": None, "method": "augmax",
              "method_params": AugMax().params()}
    atomic_torch_save({"format": "smoothcert-1", "arch": "cifar_resnet20", "state_dict": model.state_dict(),
                       "config": config, "epoch": 1}, tmp_path / "checkpoint.pt")
    atomic_write_json(config, tmp_path / "config.json")
    loaded, cfg = load_model(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_kwargs"] == {"norm": "dubin"}
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
    assert sum(isinstance(m, DuBIN) for m in loaded.modules()) == 6
