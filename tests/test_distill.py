"""RSD/SiD generator loss (docs/method.md §3.3): closed-form checks and a Gaussian toy with a known
answer (the generator matches the data mean and covariance for α in {0.5, 1.0, 1.2})."""

import pytest
import torch

from rsd_engine.evaluate.sampling import karras_sigma
from rsd_engine.models.networks import EDMPrecond, frozen
from rsd_engine.operators import OPERATORS
from rsd_engine.operators.measurement import Measurement
from rsd_engine.train.distill import generator_loss, sid_generator_loss
from rsd_engine.train.objectives import Objective
from rsd_engine.train.stage import sanitise_grads


def test_loss_matches_the_expanded_form():
    torch.manual_seed(0)
    u, a, b = (torch.randn(3, 1, 4, 4) for _ in range(3))
    alpha = 1.2
    w = 1 / (u - a).abs().flatten(1).mean(1)
    d = (a - b).flatten(1)
    expected = w * ((1 - alpha) * (d * d).sum(1) + (d * (b - u).flatten(1)).sum(1))
    assert torch.allclose(sid_generator_loss(u, a, b, alpha), expected, rtol=1e-5, atol=1e-6)


def test_loss_vanishes_when_fake_score_equals_teacher():
    u, a = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.all(sid_generator_loss(u, a, a.clone(), 1.2) == 0)


def test_weight_is_detached():
    u = torch.randn(2, 1, 4, 4)
    a = torch.randn(2, 1, 4, 4, requires_grad=True)
    b = torch.randn(2, 1, 4, 4)
    sid_generator_loss(u, a, b, 1.0).sum().backward()
    w = 1 / (u - a.detach()).abs().flatten(1).mean(1).reshape(-1, 1, 1, 1)
    # d/da of w·(a−b)(a−u−α(a−b)) with α = 1 and w constant is w·(b − u)
    assert torch.allclose(a.grad, w * (b - u), atol=1e-5)


def sid_sigma(t):
    """σ_t of the generator step: the Karras interpolation at u = 1 − t on EDM's range."""
    return karras_sigma(1 - t, 0.002, 80.0, 7.0)


def test_sigma_schedule_endpoints():
    t = torch.tensor([0.0, 0.8, 1.0])
    s = sid_sigma(t)
    assert abs(float(s[0]) - 0.002) < 1e-6 and abs(float(s[2]) - 80.0) < 1e-3
    assert 24.0 < float(s[1]) < 25.0


class _Gaussian(torch.nn.Module):
    """Exact denoiser of N(μ, C): D(x; σ) = μ + C (C + σ² I)^{-1} (x − μ), on (B, d, 1, 1) tensors."""

    def __init__(self, mean, cov):
        super().__init__()
        self.mean, self.cov = mean, cov

    def forward(self, x, sigma):
        d = self.mean.numel()
        flat = x.reshape(x.shape[0], d)
        eye = torch.eye(d, dtype=x.dtype)
        s2 = sigma.reshape(-1, 1, 1) ** 2
        gain = self.cov.unsqueeze(0) @ torch.linalg.inv(self.cov.unsqueeze(0) + s2 * eye)
        out = self.mean + ((flat - self.mean).unsqueeze(1) @ gain.transpose(1, 2)).squeeze(1)
        return out.reshape(x.shape)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.2])
def test_sid_generator_matches_gaussian_mean_and_covariance(alpha):
    torch.manual_seed(0)
    d = 3
    mu = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    chol = torch.tensor([[0.5, 0, 0], [0.2, 0.3, 0], [-0.1, 0.1, 0.2]], dtype=torch.float64)
    cov = chol @ chol.T
    teacher = _Gaussian(mu, cov)
    W = torch.nn.Parameter(torch.eye(d, dtype=torch.float64) * 0.8)
    bias = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = torch.optim.Adam([W, bias], lr=5e-3)
    for _ in range(600):
        z = torch.randn(512, d, dtype=torch.float64)
        x_g = z @ W.T + bias
        fake = _Gaussian(bias.detach(), (W @ W.T).detach())  # exact fake score of the current generator
        t = torch.rand(512, dtype=torch.float64) * 0.8
        sigma = sid_sigma(t)
        u = x_g.reshape(512, d, 1, 1)
        u_t = u + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(u)
        loss = sid_generator_loss(u, teacher(u_t, sigma), fake(u_t, sigma), alpha).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(bias.detach(), mu, atol=0.03)
    assert torch.allclose((W @ W.T).detach(), cov, atol=0.03)


def test_generator_step_drops_non_finite_samples_and_counts_them():
    torch.manual_seed(0)
    net = EDMPrecond(resolution=8, channels=1, block_out_channels=(8, 16), norm_groups=4)
    op = OPERATORS["identity"](1, 8)

    class _Poisoned(torch.nn.Module):
        sigma_min, sigma_max, sigma_data = 0.002, 80.0, 0.5

        def forward(self, x, sigma):
            out = net(x, sigma)
            return torch.cat([out[:1] * float("nan"), out[1:]])

    objective = Objective("ambient_tweedie", Measurement(op, 0.0))
    step = generator_loss(
        net, _Poisoned(), net, objective, torch.randn(4, 1, 8, 8), sigma_init=2.5, alpha=1.2, t_max=800, rho=7.0, loss_scale=100
    )
    assert step.nan_count == 1 and torch.isfinite(step.loss)
    step.loss.backward()
    sanitise_grads(net)  # what StepContext.update does when samples were dropped (EDM's nan_to_num)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("floor", [None, 0.2])
def test_generator_step_sigma_t_range(floor):
    """σ_t of the generator step spans [σ_min, σ(t_max)] (the paper), or [floor, σ(t_max)] with distill.sigma_t_min."""
    torch.manual_seed(0)
    net = EDMPrecond(resolution=8, channels=1, block_out_channels=(8, 16), norm_groups=4)
    seen = []

    class _Recording(torch.nn.Module):
        sigma_min, sigma_max, sigma_data = 0.002, 80.0, 0.5

        def forward(self, x, sigma):
            seen.append(sigma.detach())
            return net(x, sigma)

    objective = Objective("ambient_tweedie", Measurement(OPERATORS["identity"](1, 8), 0.2, 0))
    generator_loss(
        net,
        _Recording(),
        net,
        objective,
        torch.randn(512, 1, 8, 8),
        sigma_init=2.5,
        alpha=1.2,
        t_max=800,
        rho=7.0,
        loss_scale=100,
        sigma_t_min=floor,
    )
    sigma = torch.cat(seen)
    top = karras_sigma(1 - 0.8, 0.002, 80.0, 7.0)
    assert float(sigma.max()) <= top + 1e-4
    if floor is None:
        assert float(sigma.min()) < 0.01 and 0.25 < float((sigma < 0.2).double().mean()) < 0.42
    else:
        assert float(sigma.min()) >= floor - 1e-6 and float(sigma.max()) > 10


def test_sigma_t_min_outside_the_generator_range_is_refused():
    from rsd_engine.io import config as cfg

    for bad in (0.001, 30.0):
        with pytest.raises(cfg.PresetError, match="distill.sigma_t_min"):
            cfg.loads(f"[distill]\nsigma_t_min = {bad}")
    assert cfg.loads("[distill]\nsigma_t_min = 0.2").distill.sigma_t_min == 0.2


def test_frozen_keeps_gradients_out_of_the_network_but_flowing_through_it():
    """The fake score inside the generator's loss: no gradient in its parameters, one through its input;
    each parameter's flag comes back after the block, also when the block raises."""
    fake, gen = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    fake.bias.requires_grad_(False)  # a flag that was already off stays off
    with frozen(fake) as net:
        assert net is fake and not any(p.requires_grad for p in fake.parameters())
        fake(gen(torch.ones(2, 3))).sum().backward()
    assert fake.weight.grad is None and gen.weight.grad is not None
    assert fake.weight.requires_grad and not fake.bias.requires_grad
    with pytest.raises(RuntimeError), frozen(fake):
        raise RuntimeError("inside")
    assert fake.weight.requires_grad
