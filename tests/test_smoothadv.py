"""SmoothAdv-PGD (smoothcert.methods.smoothadv): the perturbation stays in the L2 ball and [0, 1]
and raises the soft smoothed loss; the loss is the cross-entropy of the M noisy adversarial
copies with the noise the attack used; eval mode and frozen parameters during the attack, the
model's state restored; epsilon (and the step size) ramped over the warm-up epochs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smoothcert.attacks import PGD, SoftSmoothed, lp_norm
from smoothcert.data import get_dataset
from smoothcert.methods import create_method, list_methods
from smoothcert.methods.smoothadv import SmoothAdv
from smoothcert.models import create_model

from conftest import train_digits_cnn

SIGMA = 0.25


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = get_dataset("digits", "train")
    return ds.x[:32], ds.y[:32]  # pixels 0..1 with many exactly at 0 and at 1


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """digits_cnn after two epochs of plain SGD on noisy digits (~0.5 s), left in train mode."""
    return train_digits_cnn(epochs=2, sigma=SIGMA).train()


def soft_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-example SmoothAdv objective -log (1/M) sum_k softmax(f(x + d_k))_y, written out."""
    with torch.no_grad():
        probs = torch.stack([F.softmax(model(x + d), 1) for d in noise]).mean(0)
    return -probs.gather(1, y[:, None]).squeeze(1).log()


@pytest.mark.parametrize("kwargs,name", [
    ({"epsilon": 0.0}, "epsilon"), ({"epsilon": 1.5}, "epsilon"), ({"epsilon": -0.1}, "epsilon"),
    ({"num_steps": 0}, "num_steps"), ({"num_noise_vec": 0}, "num_noise_vec"),
    ({"sigma": 0.0}, "sigma"), ({"sigma": -0.25}, "sigma"), ({"warmup": -1}, "warmup"),
])
def test_constructor_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SmoothAdv(**{"sigma": SIGMA, "epsilon": 0.5, **kwargs})


def test_registered_and_params_round_trip():
    assert "smoothadv" in list_methods()
    m = create_method("smoothadv", sigma=SIGMA, epsilon=0.5, num_steps=4, num_noise_vec=2, warmup=3)
    assert isinstance(m, SmoothAdv)
    assert m.params() == {"sigma": SIGMA, "epsilon": 0.5, "num_steps": 4, "num_noise_vec": 2, "warmup": 3}
    assert create_method("smoothadv", **m.params()).params() == m.params()


def test_perturbation_in_ball_and_box_and_raises_soft_loss(trained, digits):
    torch.manual_seed(0)
    model = trained.train()
    x, y = digits
    method = SmoothAdv(SIGMA, epsilon=0.5, num_steps=5, num_noise_vec=4)
    x_adv, noise = method.perturb(model, x, y)
    assert noise.shape == (4, *x.shape)
    assert (lp_norm(x_adv - x, "l2") <= 0.5 * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    before, after = soft_loss(model, x, y, noise), soft_loss(model, x_adv, y, noise)
    assert after.mean() > 1.3 * before.mean()
    assert (after > before).float().mean() >= 0.9


def test_loss_is_ce_of_all_noisy_adversarial_copies_with_the_attack_noise(digits):
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1, 8).train()  # no BatchNorm/dropout: forwards are repeatable
    x, y = digits[0][:8], digits[1][:8]
    method = SmoothAdv(SIGMA, epsilon=0.5, num_steps=3, num_noise_vec=3)
    torch.manual_seed(42)
    loss = method.loss(model, x, y)
    torch.manual_seed(42)
    x_adv, noise = method.perturb(model, x, y)
    manual = torch.stack([F.cross_entropy(model(x_adv + d), y, reduction="none") for d in noise]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert method.last_count == 24 and 0 <= int(method.last_correct) <= 24
    # and the attack ran against the soft classifier with exactly that noise
    soft = SoftSmoothed(model, SIGMA, 3, fixed_noise=noise)
    assert torch.equal(x_adv, PGD(0.5, 3, 2 * 0.5 / 3, norm="l2")(soft, x, y))


class Recorder(nn.Module):
    """Logs (training, params require grad, grad enabled) for every forward of the wrapped net."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, self.net[1][0].weight.requires_grad, torch.is_grad_enabled()))
        return self.net(x)


def test_eval_and_frozen_during_attack_train_step_after_state_restored(digits):
    torch.manual_seed(0)
    model = Recorder(create_model("digits_cnn", 10, 1, 8))
    model.train()
    model.net[1][6].eval()  # an odd submodule mode and a frozen parameter must survive the attack
    model.net[1][6].weight.requires_grad_(False)
    before = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    method = SmoothAdv(SIGMA, epsilon=0.5, num_steps=4, num_noise_vec=2)
    loss = method.loss(model, *digits)
    assert model.calls[:4] == [(False, False, True)] * 4  # the attack: eval, frozen, input gradients only
    assert model.calls[4:] == [(True, True, True)]  # one training forward, in the mode the model came in
    assert ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]) == before
    loss.backward()
    assert model.net[1][6].weight.grad is None and model.net[1][0].weight.grad is not None


def test_epsilon_ramp_and_step_size(digits):
    """eps_t = eps * min(1, (t + 1) / warmup). On a two-class linear model the gradient of the soft
    loss points along w_other - w_y at every x, so L2 PGD with steps of 2 eps_t / T lands exactly
    at x + eps_t * u, u = (w_other - w_y) / ||w_other - w_y|| (inputs interior)."""
    method = SmoothAdv(SIGMA, epsilon=0.4, num_steps=4, warmup=4, num_noise_vec=2)
    assert method.current_epsilon == pytest.approx(0.1)  # before the first hook: epoch 0's value
    torch.manual_seed(0)
    lin = nn.Linear(16, 2)
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    v = (lin.weight[1] - lin.weight[0]).detach().view(1, 4, 4)
    u = torch.where(y.view(-1, 1, 1, 1) == 0, v, -v) / v.norm()
    seen = []
    for epoch in range(7):
        method.on_epoch_start(epoch, 7)
        seen.append(method.current_epsilon)
        x_adv, _ = method.perturb(model, x, y)
        assert torch.allclose(x_adv, x + method.current_epsilon * u, atol=1e-5)
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4])
    no_ramp = SmoothAdv(SIGMA, epsilon=0.4, warmup=1)
    no_ramp.on_epoch_start(0, 7)
    assert no_ramp.current_epsilon == 0.4 and SmoothAdv(SIGMA, epsilon=0.4, warmup=0).current_epsilon == 0.4
