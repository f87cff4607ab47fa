"""EDM preconditioning (Karras et al. 2022, Table 1) around the diffusers UNet (docs/method.md §2.1)."""

import math

import torch

from rsd_engine.models.networks import EDMPrecond


def _net(cond=0):
    torch.manual_seed(0)
    return EDMPrecond(resolution=8, channels=1, cond_channels=cond, block_out_channels=(8, 16), norm_groups=4).eval()


def test_denoiser_is_identity_as_sigma_goes_to_zero():
    net = _net()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        d = net(x, torch.full((2,), 1e-6))
    assert torch.allclose(d, x, atol=1e-4)


def test_high_sigma_output_is_c_out_times_network():
    net = _net()
    x = torch.randn(2, 1, 8, 8) * 80
    sigma = torch.full((2,), 80.0)
    with torch.no_grad():
        d = net(x, sigma)
        sd = 0.5
        c_skip, c_out, c_in = sd**2 / (80**2 + sd**2), 80 * sd / math.sqrt(80**2 + sd**2), 1 / math.sqrt(80**2 + sd**2)
        f = net.backbone(c_in * x, torch.full((2,), math.log(80) / 4))
    assert torch.allclose(d, c_skip * x + c_out * f, atol=1e-5)


def test_c_noise_is_quarter_log_sigma_and_coefficients():
    net = _net()
    s = torch.tensor([0.1, 1.0, 10.0])
    c_skip, c_out, c_in, c_noise = net.coefficients(s)
    assert torch.allclose(c_noise, s.log() / 4)
    assert torch.allclose(c_skip.flatten(), 0.25 / (s**2 + 0.25))
    assert torch.allclose(c_out.flatten(), s * 0.5 / (s**2 + 0.25).sqrt())
    assert torch.allclose(c_in.flatten(), 1 / (s**2 + 0.25).sqrt())


def test_mask_channels_reach_the_unet_unscaled():
    net = _net(cond=1)
    seen = {}

    def spy(x_in, c_noise):
        seen["x_in"] = x_in
        return torch.zeros(x_in.shape[0], 1, 8, 8)

    net.backbone = spy
    x = torch.randn(2, 1, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    net(x, torch.full((2,), 3.0), cond=mask)
    assert torch.equal(seen["x_in"][:, 1:], mask)
    assert torch.allclose(seen["x_in"][:, :1], x / math.sqrt(9 + 0.25))


def test_missing_cond_channels_is_an_error():
    net = _net(cond=1)
    try:
        net(torch.randn(1, 1, 8, 8), 1.0)
    except ValueError as e:
        assert "conditioning" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_unseen_pixels_are_predicted_not_skipped():
    """With a mask, D = m·(c_skip·x + c_out·F) + (1 − m)·σ_d·F: at σ → 0 seen pixels are x and unseen
    ones σ_d·F, whatever x holds there (not 0, as EDM's c_out(σ) → 0 would give)."""
    net = _net(cond=1)
    net.backbone = lambda x_in, c_noise: torch.ones(x_in.shape[0], 1, 8, 8)
    x = torch.randn(2, 1, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    d = net(x, torch.full((2,), 1e-6), cond=mask)
    assert torch.allclose(d[mask == 1], x[mask == 1], atol=1e-4)
    assert torch.allclose(d[mask == 0], torch.full_like(d[mask == 0], 0.5))
    c_skip, c_out, _, _ = net.coefficients(torch.full((2,), 2.0), mask)
    assert c_skip.shape == mask.shape and (c_skip[mask == 0] == 0).all() and (c_out[mask == 0] == 0.5).all()
    assert torch.allclose(c_out[mask == 1], torch.full_like(c_out[mask == 1], 2 * 0.5 / math.sqrt(4.25)))
