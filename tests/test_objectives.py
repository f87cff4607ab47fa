"""Ambient-Tweedie teacher objective (docs/method.md §2.2) and its EDM limit."""

import torch

from rsd_engine.models.networks import EDMPrecond
from rsd_engine.train.objectives import ambient_tweedie_loss, edm_loss, sample_training_sigma


def edm_weight(sigma, sigma_data):
    """λ(σ) = (σ² + σ_d²)/(σ·σ_d)², EDM Table 1, written out here as the reference."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _net():
    torch.manual_seed(0)
    return EDMPrecond(resolution=8, channels=1, block_out_channels=(8, 16), norm_groups=4)


def test_clamped_sigma_gives_exactly_zero_loss_and_gradient():
    net = _net()
    y = torch.randn(4, 1, 8, 8) * 0.5
    loss = ambient_tweedie_loss(net, y, 0.2, sigma=torch.full((4,), 0.05))
    assert torch.all(loss == 0)
    loss.sum().backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in net.parameters())


def test_reduces_to_edm_at_zero_noise():
    net = _net()
    x = torch.randn(4, 1, 8, 8) * 0.5
    sigma = torch.tensor([0.1, 0.5, 1.0, 5.0])
    torch.manual_seed(7)
    a = ambient_tweedie_loss(net, x, 0.0, sigma=sigma)
    torch.manual_seed(7)
    n = torch.randn_like(x)
    expected = (edm_weight(sigma.reshape(-1, 1, 1, 1), 0.5) * (net(x + sigma.reshape(-1, 1, 1, 1) * n, sigma) - x) ** 2).flatten(1).sum(1)
    torch.manual_seed(7)
    b = edm_loss(net, x, sigma=sigma)
    assert torch.allclose(a, expected, rtol=1e-5) and torch.equal(a, b)


class _Oracle(torch.nn.Module):
    """D(x; σ) returning a fixed prediction, for checking the ŷ conversion by hand."""

    sigma_data = 0.5
    loss_weight = EDMPrecond.loss_weight
    _seen = EDMPrecond._seen  # loss_weight's mask rule
    cond_kind = "pixel_mask"

    def __init__(self, pred):
        super().__init__()
        self.pred = pred

    def forward(self, x, sigma):
        return self.pred


def test_prediction_of_observed_y_matches_the_formula():
    sigma_c, sigma = 0.2, torch.tensor([0.5])
    y = torch.randn(1, 1, 4, 4)
    pred = torch.randn(1, 1, 4, 4)
    torch.manual_seed(3)
    loss = ambient_tweedie_loss(_Oracle(pred), y, sigma_c, sigma=sigma)
    torch.manual_seed(3)
    y_t = y + (0.25 - 0.04) ** 0.5 * torch.randn_like(y)
    y_hat = (1 - 0.04 / 0.25) * pred + 0.04 / 0.25 * y_t
    expected = (edm_weight(sigma, 0.5) * ((y_hat - y) ** 2).sum()).reshape(1)
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_tweedie_optimum_is_the_clean_denoiser_for_gaussian_data():
    """For x ~ N(0, s²) and y = x + σ_c ε, the ambient loss over predictions is minimised by
    E[x | y_t] = s²/(s² + σ²)·y_t — the clean denoiser — not by the noisy one."""
    s2, sigma_c, sigma = 0.3, 0.2, 0.6
    torch.manual_seed(0)
    x = torch.randn(200_000) * s2**0.5
    y = x + sigma_c * torch.randn_like(x)
    y_t = y + (sigma**2 - sigma_c**2) ** 0.5 * torch.randn_like(x)
    r = sigma_c**2 / sigma**2

    def risk(k):
        y_hat = (1 - r) * k * y_t + r * y_t
        return float(((y_hat - y) ** 2).mean())

    ks = torch.linspace(0.2, 0.9, 141)
    best = float(ks[torch.tensor([risk(float(k)) for k in ks]).argmin()])
    assert abs(best - s2 / (s2 + sigma**2)) < 0.01


def test_training_sigma_is_log_normal():
    torch.manual_seed(0)
    s = sample_training_sigma(100_000, -1.2, 1.2)
    assert abs(float(s.log().mean()) + 1.2) < 0.02 and abs(float(s.log().std()) - 1.2) < 0.02


def test_above_noise_sampling_is_the_lognormal_conditioned_on_sigma_above_the_noise():
    """teacher.sigma_sampling = "above_noise": σ > σ_c always, with the conditional law of the
    log-normal (checked at two quantiles), and the default draws are the plain log-normal's, bit for bit."""
    import math

    from rsd_engine.train.objectives import sample_training_sigma

    torch.manual_seed(0)
    plain = sample_training_sigma(7, -1.2, 1.2)
    torch.manual_seed(0)
    assert torch.equal(plain, (torch.randn(7) * 1.2 - 1.2).exp())
    torch.manual_seed(1)
    s = sample_training_sigma(100_000, -1.2, 1.2, floor=0.2)
    assert float(s.min()) > 0.2

    def tail(x):  # P(σ > x) of the log-normal
        return 0.5 * math.erfc((math.log(x) + 1.2) / (1.2 * math.sqrt(2)))

    for x in (0.5, 2.0):
        assert abs(float((s > x).double().mean()) - tail(x) / tail(0.2)) < 0.006


def test_above_noise_objective_has_no_idle_draws():
    """With clamping about a third of the draws sit at σ_c, where the Ambient-Tweedie loss is exactly 0;
    conditioned on σ > σ_c none does."""
    from rsd_engine.operators import OPERATORS
    from rsd_engine.operators.measurement import Measurement
    from rsd_engine.train.objectives import Objective

    net = EDMPrecond(resolution=8, channels=1, block_out_channels=(8, 16), norm_groups=4)
    measurement = Measurement(OPERATORS["identity"](1, 8), 0.2, 0)
    y = torch.randn(256, 1, 8, 8) * 0.5
    torch.manual_seed(0)
    clamp = Objective("ambient_tweedie", measurement).loss(net, y).detach()
    torch.manual_seed(0)
    above = Objective("ambient_tweedie", measurement, above_noise=True).loss(net, y).detach()
    assert 0.25 < float((clamp == 0).double().mean()) < 0.5
    assert bool((above > 0).all())
