"""Known-answer tests of the Ambient Diffusion mask objective (docs/method.md §2.3, with §2.2 when σ_c > 0)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsd_engine.models.networks import EDMPrecond
from rsd_engine.operators import Identity, RandomInpainting
from rsd_engine.operators.measurement import Measurement
from rsd_engine.train.objectives import Objective, ambient_mask_loss, ambient_tweedie_loss, edm_loss

RES = 8


def tiny_net(cond_channels: int = 1, seed: int = 0) -> EDMPrecond:
    torch.manual_seed(seed)
    return EDMPrecond(resolution=RES, channels=1, cond_channels=cond_channels, block_out_channels=(8, 16), norm_groups=4).eval()


def data(batch: int = 4, p: float = 0.6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, RES, RES, generator=g) * 2 - 1
    mask = RandomInpainting(1, RES, p=p).sample_params(batch, g)["mask"]
    return x, mask


class WithJunk(nn.Module):
    """Wraps a denoiser and adds ``junk`` to its output wherever ``where`` is 1."""

    def __init__(self, net: EDMPrecond, where: torch.Tensor, junk: torch.Tensor):
        super().__init__()
        self.net, self.where, self.junk = net, where, junk
        self.loss_weight = net.loss_weight

    def forward(self, x, sigma, cond=None):
        return self.net(x, sigma, cond) + self.where * self.junk


class OnesCond(nn.Module):
    """Feeds an all-ones mask channel, so a cond_channels=1 net can be scored by the plain losses."""

    def __init__(self, net: EDMPrecond):
        super().__init__()
        self.net = net
        self.loss_weight = net.loss_weight

    def forward(self, x, sigma, cond=None):
        return self.net(x, sigma, torch.ones_like(x[:, :1]))


class ConstantNet(nn.Module):
    """A 'denoiser' that always predicts ``value`` (records its inputs)."""

    sigma_data = 0.5
    loss_weight = EDMPrecond.loss_weight
    _seen = EDMPrecond._seen  # loss_weight's mask rule
    cond_kind = "pixel_mask"

    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = value
        self.seen = []

    def forward(self, x, sigma, cond=None):
        self.seen.append((x.clone(), cond.clone()))
        return torch.full_like(x, self.value)


def seeded(fn, seed=123):
    torch.manual_seed(seed)
    return fn()


def test_shape_finite_and_gradients():
    net = tiny_net()
    x, mask = data()
    sigma = torch.tensor([0.05, 0.3, 1.0, 5.0])
    loss = ambient_mask_loss(net, mask * x, mask, 0.0, 0.1, sigma=sigma)
    assert loss.shape == (4,) and torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("noise_sigma", [0.0, 0.2])
@pytest.mark.parametrize("loss_on", ["A", "A_tilde"])
def test_unchanged_by_network_output_on_erased_pixels(noise_sigma, loss_on):
    net = tiny_net()
    x, mask = data()
    y = mask * x + noise_sigma * torch.randn_like(x)
    sigma = torch.tensor([0.1, 0.5, 2.0, 10.0])
    base = seeded(lambda: ambient_mask_loss(net, y, mask, noise_sigma, 0.1, sigma=sigma, loss_on=loss_on))
    junk = 1e3 * torch.randn_like(x)
    noisy = seeded(lambda: ambient_mask_loss(WithJunk(net, 1 - mask, junk), y, mask, noise_sigma, 0.1, sigma=sigma, loss_on=loss_on))
    assert torch.allclose(base, noisy, rtol=1e-6, atol=0)
    # and a change on observed pixels does change it
    moved = seeded(lambda: ambient_mask_loss(WithJunk(net, mask, junk), y, mask, noise_sigma, 0.1, sigma=sigma, loss_on=loss_on))
    assert not torch.allclose(base, moved)


@pytest.mark.parametrize("noise_sigma", [0.0, 0.2])
def test_unchanged_by_measurement_values_on_erased_pixels(noise_sigma):
    net = tiny_net()
    x, mask = data()
    sigma = torch.tensor([0.1, 0.5, 2.0, 10.0])
    y = mask * x
    other = y + (1 - mask) * 5 * torch.randn_like(y)
    a = seeded(lambda: ambient_mask_loss(net, y, mask, noise_sigma, 0.1, sigma=sigma))
    b = seeded(lambda: ambient_mask_loss(net, other, mask, noise_sigma, 0.1, sigma=sigma))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_p0_equals_plain_edm_loss():
    net = tiny_net()
    x, mask = data(p=0.0)
    assert mask.eq(1).all()
    sigma = torch.tensor([0.01, 0.3, 1.5, 20.0])
    ours = seeded(lambda: ambient_mask_loss(net, x, mask, 0.0, 0.0, sigma=sigma))
    plain = seeded(lambda: edm_loss(OnesCond(net), x, sigma=sigma))
    assert torch.allclose(ours, plain, rtol=1e-6, atol=1e-7)


def test_p0_with_noise_equals_ambient_tweedie_loss():
    net = tiny_net()
    x, mask = data(p=0.0)
    y = x + 0.2 * torch.randn_like(x)
    sigma = torch.tensor([0.1, 0.3, 1.5, 20.0])  # the first is clamped to σ_c
    ours = seeded(lambda: ambient_mask_loss(net, y, mask, 0.2, 0.0, sigma=sigma))
    ref = seeded(lambda: ambient_tweedie_loss(OnesCond(net), y, 0.2, sigma=sigma))
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-7)
    assert ours[0] == 0


def test_known_value_for_a_constant_prediction():
    """x̂ ≡ 0, σ_c = 0: loss = Σ_A w·y² with w = λ(σ) on the pixels the network saw (Ã) and 1/σ_d² on
    the A-but-not-Ã pixels (1/c_out² of the mask-aware preconditioning), not λ(σ) ≈ 1/σ² there."""
    x, mask = data()
    sigma = torch.tensor([0.01, 0.7, 1.0, 3.0])
    net = ConstantNet(0.0)
    loss = ambient_mask_loss(net, x, mask, 0.0, 0.1, sigma=sigma)
    a_tilde = net.seen[0][1]
    edm_weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2  # EDM Table 1
    seen = edm_weight * (a_tilde * x).square().flatten(1).sum(1)
    unseen = ((mask - a_tilde) * x).square().flatten(1).sum(1) / 0.25
    assert ((mask - a_tilde).flatten(1).sum(1) > 0).all()
    assert torch.allclose(loss, seen + unseen, rtol=1e-6)


def test_network_input_is_further_masked_noisy_image_and_mask():
    x, mask = data(p=0.6)
    net = ConstantNet()
    ambient_mask_loss(net, mask * x, mask, 0.0, 0.1, sigma=torch.full((4,), 0.5))
    inp, cond = net.seen[0]
    assert cond.shape == (4, 1, RES, RES) and set(cond.unique().tolist()) <= {0.0, 1.0}
    assert (cond <= mask).all() and cond.sum() < mask.sum()  # Ã ⊂ A, δ of the survivors erased
    assert (inp[cond == 0] == 0).all()  # erased and further-erased pixels carry nothing
    assert (inp[cond == 1] != (mask * x)[cond == 1]).all()  # observed pixels carry noise


def test_a_tilde_loss_is_part_of_the_a_loss():
    net = tiny_net()
    x, mask = data()
    sigma = torch.tensor([0.1, 0.5, 2.0, 10.0])
    on_a = seeded(lambda: ambient_mask_loss(net, mask * x, mask, 0.0, 0.3, sigma=sigma, loss_on="A"))
    on_at = seeded(lambda: ambient_mask_loss(net, mask * x, mask, 0.0, 0.3, sigma=sigma, loss_on="A_tilde"))
    assert (on_at < on_a).all()


def test_clamped_draws_at_sigma_c():
    """σ ≤ σ_c is clamped to σ_c: no top-up noise and ŷ = y on Ã, so the Ã-pixel loss is exactly 0;
    the pixels of A outside Ã are still predicted (from the rest) and supervised."""
    net = tiny_net()
    x, mask = data()
    y = mask * x + 0.2 * torch.randn_like(x)
    sigma = torch.full((4,), 0.05)
    assert (ambient_mask_loss(net, y, mask, 0.2, 0.1, sigma=sigma, loss_on="A_tilde") == 0).all()
    assert (ambient_mask_loss(net, y, mask, 0.2, 0.0, sigma=sigma, loss_on="A") == 0).all()
    assert (ambient_mask_loss(net, y, mask, 0.2, 0.3, sigma=sigma, loss_on="A") > 0).all()


def test_objective_dispatch():
    net = tiny_net()
    x, mask = data()
    objective = Objective("ambient_mask", Measurement(RandomInpainting(1, RES), 0.0), delta=0.1)
    torch.manual_seed(0)
    a = objective.loss(net, mask * x, {"mask": mask})
    torch.manual_seed(0)
    b = ambient_mask_loss(net, mask * x, mask, 0.0, 0.1, -1.2, 1.2)
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = objective.loss(net, mask * x, {"mask": mask}, loss_on="A_tilde")
    assert c.shape == (4,) and (c <= a + 1e-6).all()
    with pytest.raises(ValueError, match="measurement parameters"):
        objective.loss(net, x)
    with pytest.raises(ValueError, match="ambient_mask"):
        Objective("nope", Measurement(RandomInpainting(1, RES), 0.0))
    with pytest.raises(ValueError, match="does not fit"):
        Objective("ambient_mask", Measurement(Identity(1, RES), 0.0))


def test_objective_network_condition_is_a_further_corrupted_measurement_mask():
    objective = Objective("ambient_mask", Measurement(RandomInpainting(1, 64, p=0.6), 0.0), delta=0.2)
    cond = objective.network_condition(8, torch.Generator().manual_seed(0))
    m = cond.mask
    assert m.shape == (8, 1, 64, 64) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs(m.mean().item() - 0.4 * 0.8) < 0.02  # survival (1 − p)(1 − δ)
    assert cond.channels is m and torch.equal(cond.project(torch.ones(8, 1, 64, 64)), m)
    assert Objective("ambient_tweedie", Measurement(Identity(1, 8), 0.2)).network_condition(2) is None


def test_argument_errors():
    net = tiny_net()
    x, mask = data()
    with pytest.raises(ValueError, match="loss_on"):
        ambient_mask_loss(net, x, mask, 0.0, 0.1, loss_on="B")
    with pytest.raises(ValueError, match="does not fit"):
        ambient_mask_loss(net, x, mask[:2], 0.0, 0.1)
    with pytest.raises(ValueError, match="delta"):
        ambient_mask_loss(net, x, mask, 0.0, 1.5)
    with pytest.raises(ValueError, match="conditioning"):
        ambient_mask_loss(tiny_net(cond_channels=0), x, mask, 0.0, 0.1)
