"""EDM Heun sampler (full and truncated) and one-step generation, checked on Gaussian data with an
exact denoiser."""

import torch

from rsd_engine.evaluate.sampling import heun_sample, karras_sigmas, one_step_generate
from rsd_engine.models.networks import EDMPrecond
from rsd_engine.operators import PixelMask


class _IsoGaussian(torch.nn.Module):
    """Exact denoiser of pixels i.i.d. N(m, s²): D(x; σ) = m + s²/(s² + σ²)·(x − m)."""

    sigma_min, sigma_max, sigma_data = 0.002, 80.0, 0.5

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, x, sigma):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.m + self.s**2 / (self.s**2 + sig**2) * (x - self.m)


def test_schedule_endpoints_and_final_zero():
    s = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert s.shape == (19,)
    assert abs(float(s[0]) - 80) < 1e-9 and abs(float(s[17]) - 0.002) < 1e-12 and float(s[18]) == 0
    assert torch.all(s[:-1] > s[1:])


def test_full_heun_reproduces_the_data_distribution_with_2n_minus_1_nfe():
    torch.manual_seed(0)
    noise = torch.randn(2000, 1, 2, 2)
    res = heun_sample(_IsoGaussian(0.3, 0.4), noise, steps=18)
    assert res.nfe == 35
    assert abs(float(res.images.mean()) - 0.3) < 0.02
    assert abs(float(res.images.std()) - 0.4) < 0.04  # 18 steps: a few % discretisation error
    fine = heun_sample(_IsoGaussian(0.3, 0.4), noise, steps=200).images
    assert abs(float(fine.std()) - 0.4) < 0.015  # the error vanishes as steps grow


def test_truncated_stops_at_data_noise_and_returns_denoised_output():
    torch.manual_seed(0)
    res = heun_sample(_IsoGaussian(0.0, 0.4), torch.randn(2000, 1, 2, 2), steps=18, stop_sigma=0.2)
    sig = karras_sigmas(18, 0.002, 80.0)
    i = int((sig[1:] < 0.2).nonzero()[0])  # first step whose next σ is below 0.2
    assert res.nfe == 2 * i + 1
    # output is E[x | x_σi], whose std is s²/√(s² + σ_i²) < s
    expected = 0.4**2 / (0.4**2 + float(sig[i]) ** 2) ** 0.5
    assert abs(float(res.images.std()) - expected) < 0.02


def test_one_step_generator_calls_denoiser_at_sigma_init_on_scaled_noise():
    seen = {}

    class _Spy(torch.nn.Module):
        def forward(self, x, sigma):
            seen["x"], seen["sigma"] = x, sigma
            return x

    z = torch.randn(3, 1, 4, 4)
    out = one_step_generate(_Spy(), z, 2.5)
    assert torch.allclose(seen["x"], 2.5 * z) and torch.all(seen["sigma"] == 2.5)
    assert out.shape == z.shape


def test_sampler_runs_on_a_real_network():
    net = EDMPrecond(resolution=8, channels=1, block_out_channels=(8, 16), norm_groups=4).eval()
    res = heun_sample(net, torch.randn(2, 1, 8, 8), steps=3)
    assert res.images.shape == (2, 1, 8, 8) and torch.isfinite(res.images).all() and res.nfe == 5


def test_fixed_mask_teacher_sampler_fills_the_unseen_pixels():
    """Ambient fixed-mask sampling: the last step returns D, which on pixels the mask hides is the
    network's own prediction σ_d·F (here F ≡ 1 → 0.5), never the zeros the masked input carries."""
    torch.manual_seed(0)
    net = EDMPrecond(resolution=8, channels=1, cond_channels=1, block_out_channels=(8, 16), norm_groups=4).eval()
    net.backbone = lambda x_in, c_noise: torch.ones(x_in.shape[0], 1, 8, 8)
    mask = (torch.rand(3, 1, 8, 8) > 0.7).float()
    with torch.no_grad():
        images = heun_sample(net, torch.randn(3, 1, 8, 8), steps=6, cond=PixelMask(mask)).images
    assert torch.allclose(images[mask.expand_as(images) == 0], torch.tensor(0.5, dtype=images.dtype), atol=1e-5)
