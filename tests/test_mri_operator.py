"""Multi-coil MRI (issue 8): the centred FFT, the operator A = M·F·S and its adjoint, line masks and
the further mask, coil maps, the k-space preconditioning, the Fourier-space Ambient objective and the
distillation losses on it. Sizes are tiny (at most 16×16); everything runs in seconds."""

from __future__ import annotations

import pytest
import torch

from rsd_engine import assembly
from rsd_engine.evaluate.generate import ModelSampler
from rsd_engine.evaluate.metrics import display_images, quantize
from rsd_engine.io import config
from rsd_engine.models.networks import EDMPrecond
from rsd_engine.operators import KSpaceLines, MultiCoilMRI
from rsd_engine.operators.coils import birdcage_maps, normalise_maps
from rsd_engine.operators.fourier import fft2c, ifft2c, to_channels, to_complex
from rsd_engine.operators.measurement import Measurement
from rsd_engine.operators.mri import acs_block, default_acs_lines, default_further_lines
from rsd_engine.train.distill import fake_score_loss, generator_loss
from rsd_engine.train.objectives import Objective, ambient_fourier_loss


def op_of(resolution: int = 16, **kw) -> MultiCoilMRI:
    return MultiCoilMRI(2, resolution, **kw)


def complex_image(n: int, size: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, size, size, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------ Fourier transform


def test_fft_round_trip_on_5x7_and_unitary():
    z = torch.randn(3, 5, 7, dtype=torch.complex128)
    k = fft2c(z)
    assert torch.allclose(ifft2c(k), z, atol=1e-12)
    assert torch.allclose(k.abs().square().sum(), z.abs().square().sum())


@pytest.mark.parametrize("h,w", [(5, 7), (8, 6), (7, 8)])
def test_centred_delta_is_a_flat_zero_phase_image(h, w):
    k = torch.zeros(h, w, dtype=torch.complex128)
    k[h // 2, w // 2] = 1.0
    img = ifft2c(k)
    assert torch.allclose(img.real, torch.full((h, w), (h * w) ** -0.5, dtype=torch.float64), atol=1e-12)
    assert img.imag.abs().max() < 1e-12
    assert torch.allclose(fft2c(torch.full((h, w), 1.0 + 0j, dtype=torch.complex128)).abs().argmax(), torch.tensor(h // 2 * w + w // 2))


def test_complex_channels_round_trip_and_layout():
    x = torch.arange(2 * 6 * 2 * 2, dtype=torch.float32).reshape(2, 6, 2, 2)
    z = to_complex(x)
    assert z.shape == (2, 3, 2, 2) and torch.equal(z.real, x[:, 0::2]) and torch.equal(z.imag, x[:, 1::2])
    assert torch.equal(to_channels(z), x)
    with pytest.raises(ValueError, match="even number"):
        to_complex(torch.zeros(1, 3, 2, 2))


# ------------------------------------------------------------------------------ operator


@pytest.mark.parametrize("size", [7, 8])
def test_adjointness_with_non_flat_coil_maps(size):
    op = op_of(size, acceleration=2, coils=3)
    params = op.sample_params(4, torch.Generator().manual_seed(1))
    maps = params["maps"]
    assert maps.abs().std() > 0.05  # the coil maps are not flat
    x, y = complex_image(4, size, seed=2), torch.randn(4, 6, size, size, dtype=torch.float64)
    lhs = (op(x, **params) * y).sum()
    rhs = (x * op.adjoint(y, **params)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    assert op(x, **params).shape == (4, *op.output_shape()) == (4, 6, size, size)


@pytest.mark.parametrize("size", [7, 8])
def test_full_sampling_is_an_isometry_and_the_adjoint_inverts_it(size):
    op = op_of(size, acceleration=1, coils=4, further_lines=0)
    params = op.sample_params(3, torch.Generator().manual_seed(0))
    assert params["mask"].sum().item() == 3 * size
    x = complex_image(3, size)
    ax = op(x, **params)
    ratio = ax.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert torch.allclose(ratio, torch.ones(3, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(op.adjoint(ax, **params), x, atol=1e-10)
    assert torch.allclose(op.normal(x, **params), x, atol=1e-10)


def test_root_sum_of_squares_of_coil_images_is_the_magnitude():
    maps = birdcage_maps(4, 12, 12).to(torch.complex128)
    assert torch.allclose(maps.abs().square().sum(0), torch.ones(12, 12, dtype=torch.float64), atol=1e-6)
    z = to_complex(complex_image(2, 12))
    coils = maps * z  # (2, 4, 12, 12)
    assert torch.allclose(coils.abs().square().sum(1).sqrt(), z.abs()[:, 0], atol=1e-6)
    flat = normalise_maps(torch.zeros(2, 3, 3, dtype=torch.complex64))
    assert torch.equal(flat, torch.zeros_like(flat))


def test_line_mask_counts_acs_further_mask_and_freezing():
    op = op_of(16, acceleration=4)  # 4 lines kept, 2 ACS, 1 further line removed
    assert (op.lines_kept, op.acs_lines, op.further_lines) == (4, 2, 1)
    m = Measurement(op, 0.0, seed=5)
    x = torch.zeros(6, 2, 16, 16)
    _, params = m.frozen(x, range(6))
    mask = params["mask"]
    assert mask.shape == (6, 1, 1, 16) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert ((mask.sum((1, 2, 3)) - 16 // 4).abs() <= 1).all()
    acs = acs_block(16, 2)
    assert (mask[..., acs] == 1).all() and 16 // 2 in acs.tolist()
    assert len({tuple(r.reshape(-1).tolist()) for r in mask}) > 1  # images get different masks
    _, again = m.frozen(x[:2], [4, 1])
    assert torch.equal(again["mask"], mask[[4, 1]]) and torch.equal(again["maps"], params["maps"][[4, 1]])
    tilde = op.further_mask(mask)
    assert (tilde <= mask).all() and torch.equal(mask.sum((1, 2, 3)) - tilde.sum((1, 2, 3)), torch.ones(6))
    assert (tilde[..., acs] == 1).all()


@pytest.mark.parametrize("width", [5, 6, 7, 64, 65])
def test_acs_block_is_centred(width):
    for lines in (1, 2, 3, 4):
        block = acs_block(width, lines).tolist()
        assert width // 2 in block and block == list(range(block[0], block[0] + lines))
        assert abs(block[0] - (width - 1 - block[-1])) <= 1


def test_paper_line_counts():
    assert [default_further_lines(320, r) for r in (2, 4, 6, 8)] == [54, 16, 8, 5]
    assert default_acs_lines(320) == 20 and default_acs_lines(64) == 4 and default_acs_lines(16) == 2


def test_noise_lives_on_the_measured_lines_only():
    op = op_of(8, acceleration=2, coils=2)
    y, params = Measurement(op, 0.3, seed=0).frozen(complex_image(2, 8, torch.float32), range(2))
    off = (params["mask"] == 0).expand_as(y)
    assert torch.isfinite(y).all() and (y[off] == 0).all() and y[~off].abs().sum() > 0


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"channels": 1}, "channels"),
        ({"acceleration": 0}, "acceleration"),
        ({"acs_lines": 17}, "acs_lines"),
        ({"coils": 0}, "coils"),
        ({"further_lines": 9}, "further_lines"),
        ({"acceleration": 2.5}, "acceleration"),
    ],
)
def test_operator_refuses_bad_parameters(kw, field):
    args = {"channels": 2, "resolution": 16, **kw}
    with pytest.raises(ValueError, match=field):
        MultiCoilMRI(**args)


def test_preset_errors_name_the_field():
    base = (
        '[data]\nsource = "mri-nifti"\nchannels = 2\nresolution = 16\n[network]\nblock_out_channels = [8]\nnorm_groups = '
        '4\n[corruption]\noperator = "multicoil_mri"\n'
    )
    for override, field in [
        ("corruption.multicoil_mri.acceleration=0", "acceleration"),
        ("corruption.multicoil_mri.acceleration=2.5", "acceleration"),
        ("corruption.multicoil_mri.acs_lines=17", "acs_lines"),
        ("corruption.multicoil_mri.coils=0", "coils"),
        ("corruption.multicoil_mri.acceleration=16", "acceleration"),
        ("data.channels=1", "data.channels"),
        ("corruption.operator=identity", "corruption.operator"),
    ]:
        with pytest.raises(config.PresetError, match=field):
            config.loads(base, [override])
    p = config.loads(base, ["corruption.multicoil_mri.acceleration=2"])
    assert assembly.resolve_objective(p) == "ambient_fourier" and p.corruption.multicoil_mri.acceleration == 2


# ------------------------------------------------------------------------------ networks and objective


def tiny_mri_net(resolution: int = 8, seed: int = 0) -> EDMPrecond:
    torch.manual_seed(seed)
    return EDMPrecond(
        resolution=resolution, channels=2, cond_channels=1, block_out_channels=(8, 16), norm_groups=4, cond_kind="kspace_mask"
    ).eval()


def test_kspace_preconditioning_has_no_skip():
    net = tiny_mri_net()
    sigma, cond = torch.tensor([0.01, 3.0]), torch.ones(2, 1, 8, 8)
    c_skip, c_out, _, _ = net.coefficients(sigma, cond)
    assert (c_skip == 0).all() and torch.allclose(c_out, torch.full_like(c_out, 0.5))
    assert torch.allclose(net.loss_weight(sigma, cond), torch.full((2, 1, 8, 8), 4.0))
    p = config.loads("[data]\nresolution = 8\n[network]\nblock_out_channels = [8]\nnorm_groups = 4\n")
    assert EDMPrecond.preset_arguments(p, 1)["cond_kind"] == "pixel_mask"
    stored = EDMPrecond.from_preset(p, 1, "kspace_mask")
    assert stored.config.cond_kind == "kspace_mask" and EDMPrecond.from_config(stored.config).cond_kind == "kspace_mask"
    with pytest.raises(ValueError, match="cond_kind"):
        EDMPrecond(resolution=8, channels=2, cond_kind="nope")


class _Fixed(torch.nn.Module):
    """A denoiser whose prediction is fixed (records its inputs)."""

    sigma_data = 0.5

    def __init__(self, pred: torch.Tensor):
        super().__init__()
        self.pred, self.seen = pred, []
        self.ref = tiny_mri_net()

    def loss_weight(self, sigma, mask=None):
        return self.ref.loss_weight(sigma, mask)

    def forward(self, x, sigma, cond=None):
        self.seen.append((x, cond))
        return self.pred


def test_fourier_loss_with_full_sampling_is_a_plain_denoising_loss():
    op = op_of(8, acceleration=1, further_lines=0)
    params = op.sample_params(3, torch.Generator().manual_seed(0))
    x, pred = complex_image(3, 8, torch.float32, 1), complex_image(3, 8, torch.float32, 2)
    y = op(x, **params)
    net = _Fixed(pred)
    loss = ambient_fourier_loss(net, y, op, params, 0.0, sigma=torch.full((3,), 0.7))
    assert torch.allclose(loss, 4.0 * (pred - x).square().flatten(1).sum(1), rtol=1e-4)
    inp, cond = net.seen[0]
    assert cond.shape == (3, 1, 8, 8) and (cond == 1).all()
    assert (inp - x).std() > 0.3  # x + σ n with σ = 0.7


def test_fourier_loss_sees_only_the_further_lines_and_is_measurement_only():
    op = op_of(16, acceleration=4)
    params = op.sample_params(2, torch.Generator().manual_seed(0))
    x = complex_image(2, 16, torch.float32)
    y = op(x, **params)
    net = _Fixed(torch.zeros(2, 2, 16, 16))
    torch.manual_seed(0)
    a = ambient_fourier_loss(net, y, op, params, 0.0)
    inp, cond = net.seen[0]
    assert cond.sum() == 2 * 16 * (op.lines_kept - op.further_lines)  # the network saw Ã
    # a fixed zero prediction: the loss is λ·‖Aᴴy‖², whatever the noise drawn
    assert torch.allclose(a, 4.0 * op.adjoint(y, **params).square().flatten(1).sum(1), rtol=1e-4)
    # at σ = σ_c the Ã loss is exactly 0 (the §2.2 conversion), the A loss is not
    torch.manual_seed(1)
    y_noisy, params_n = Measurement(op, 0.2).frozen(x, range(2))
    zero = ambient_fourier_loss(net, y_noisy, op, params_n, 0.2, sigma=torch.full((2,), 0.1), loss_on="A_tilde")
    assert torch.allclose(zero, torch.zeros(2), atol=1e-5)
    with pytest.raises(ValueError, match="loss_on"):
        ambient_fourier_loss(net, y, op, params, 0.0, loss_on="B")


def test_objective_conditions_distillation_losses_and_seeded_samples():
    op = op_of(8, acceleration=2, coils=2)
    objective = Objective("ambient_fourier", Measurement(op, 0.0))
    cond = objective.network_condition(3, torch.Generator().manual_seed(0))
    assert isinstance(cond, KSpaceLines) and cond.sid_mask is None and cond.channels.shape == (3, 1, 8, 8)
    assert (cond.lines.sum((1, 2, 3)) == op.lines_kept - op.further_lines).all()
    x = complex_image(3, 8, torch.float32)
    assert torch.allclose(cond.project(x), op.normal(x, mask=cond.lines, maps=cond.maps))
    both = KSpaceLines.cat([cond, cond.to("cpu")])
    assert both.lines.shape[0] == both.maps.shape[0] == 6
    with pytest.raises(ValueError, match="does not fit"):
        Objective("ambient_mask", Measurement(op, 0.0))
    net, gen, fake = tiny_mri_net(), tiny_mri_net(seed=1), tiny_mri_net(seed=2)
    z = torch.randn(2, 2, 8, 8)
    torch.manual_seed(0)
    assert torch.isfinite(fake_score_loss(gen, fake.train(), objective, z, sigma_init=2.5))
    gen.train()
    step = generator_loss(
        gen, net, fake.requires_grad_(False), objective, z, sigma_init=2.5, alpha=1.2, t_max=800, rho=7.0, loss_scale=100.0
    )
    step.loss.backward()
    assert step.nan_count == 0 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
    sampler = ModelSampler(objective, (2, 8, 8), batch_size=2, steps=2)
    one, two = sampler.generate("teacher-full", net, range(3)), sampler.generate("teacher-full", net, [2])
    assert torch.allclose(one.images[2:], two.images, atol=1e-5) and one.nfe == 3


def test_magnitude_display_is_one_map_for_real_and_generated_images():
    z = torch.complex(torch.tensor([0.0, -0.5, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0, -0.5]))
    x = to_channels(z.reshape(1, 1, 2, 2))
    shown = display_images(x)
    assert shown.shape == (1, 1, 2, 2)
    assert quantize(shown).reshape(-1).tolist() == [0, 128, 255, 255]  # |x| 0 → black, 0.5 → mid grey, ≥ 1 → white
    grey = torch.zeros(1, 3, 2, 2)
    assert display_images(grey) is grey
