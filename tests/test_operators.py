"""Property tests over the whole operator registry (issue 3), the blur/SR specifics, the operator
tables of the preset and the preview grid."""

from __future__ import annotations

import pytest
import torch

from rsd_engine import assembly
from rsd_engine.io import config
from rsd_engine.operators import OPERATORS, BoxInpainting, GaussianBlur, RandomInpainting, SuperResolution, further_mask
from rsd_engine.operators.blur import gaussian_kernel, reflect_pad_adjoint
from rsd_engine.operators.measurement import Measurement
from rsd_engine.operators.motion import MotionBlur, motion_kernels

RES = 16
NAMES = sorted(n for n, cls in OPERATORS.items() if cls.objective_family != "fourier")  # image operators (MRI: test_mri_operator.py)


def make(name: str, channels: int = 3, resolution: int = RES, **kw):
    return OPERATORS[name](channels=channels, resolution=resolution, **kw)


def variants():
    """Every registered operator with default parameters, plus non-default settings worth covering."""
    out = [(n, {}) for n in NAMES]
    out += [
        ("gaussian_blur", {"kernel_size": 5, "std": 1.0}),
        ("gaussian_blur", {"kernel_size": 31, "std": 3.0}),  # padding 15 = resolution − 1
        ("random_inpainting", {"p": 0.9}),
        ("box_inpainting", {"box_size": 3}),
        ("super_resolution", {"factor": 4}),
        ("super_resolution", {"upsample": "bicubic"}),
        ("super_resolution", {"factor": 4, "upsample": "bicubic"}),
    ]
    return out


VARIANTS = variants()
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in VARIANTS]


def test_registry_has_every_image_operator():
    assert {"identity", "gaussian_blur", "random_inpainting", "box_inpainting", "super_resolution", "multicoil_mri"} <= set(OPERATORS)
    for name, cls in OPERATORS.items():
        assert cls.name == name
        assert cls.objective_family in ("tweedie", "mask", "fourier")


@pytest.mark.parametrize("name,kw", VARIANTS, ids=IDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_as_stated(name, kw, channels):
    op = make(name, channels, **kw)
    x = torch.rand(2, channels, RES, RES) * 2 - 1
    params = op.sample_params(2, torch.Generator().manual_seed(0))
    y = op(x, **params)
    assert tuple(y.shape) == (2, *op.output_shape())
    assert y.dtype == x.dtype
    if op.linear:
        assert op.adjoint(y, **params).shape == x.shape


@pytest.mark.parametrize("name,kw", VARIANTS, ids=IDS)
def test_adjointness_float64(name, kw):
    op = make(name, 3, **kw)
    if not op.linear:
        pytest.skip("non-linear operator")
    g = torch.Generator().manual_seed(1)
    params = op.sample_params(3, g)
    x = torch.randn(3, 3, RES, RES, dtype=torch.float64, generator=g)
    y = torch.randn(3, *op.output_shape(), dtype=torch.float64, generator=g)
    lhs = (op(x, **params) * y).sum().item()
    with torch.no_grad():  # the adjoint must also work where autograd is off (bicubic SR uses it)
        rhs = (x * op.adjoint(y, **params)).sum().item()
    assert abs(lhs - rhs) < 1e-5 * max(1.0, abs(lhs)), (lhs, rhs)


@pytest.mark.parametrize("name,kw", VARIANTS, ids=IDS)
def test_same_index_same_measurement_other_index_differs(name, kw):
    op = make(name, 1, **kw)
    x = torch.rand(1, 1, RES, RES) * 2 - 1
    measurement = Measurement(op, 0.2, seed=7)
    y1, p1 = measurement.frozen(x, [3])
    y2, p2 = measurement.frozen(x, [3])
    y3, p3 = measurement.frozen(x, [4])
    assert torch.equal(y1, y2)
    assert p1.keys() == p2.keys() == p3.keys()
    for k in p1:
        assert torch.equal(p1[k], p2[k])
        assert not torch.equal(p1[k], p3[k]), f"indices 3 and 4 drew the same {k}"
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("name,kw", VARIANTS, ids=IDS)
def test_masks_binary_and_channel_shared(name, kw):
    op = make(name, 3, **kw)
    params = op.sample_params(4, torch.Generator().manual_seed(2))
    if op.objective_family == "mask":
        assert "mask" in params
    for k, m in params.items():
        if k == "mask":
            assert m.shape == (4, 1, RES, RES)
            assert set(m.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name,kw", VARIANTS, ids=IDS)
def test_forward_is_differentiable(name, kw):
    """The generator step back-propagates through A (docs/method.md §3.3)."""
    op = make(name, 1, **kw)
    x = torch.zeros(2, 1, RES, RES, requires_grad=True)
    params = op.sample_params(2, torch.Generator().manual_seed(0))
    (op(x, **params) * torch.randn(2, *op.output_shape())).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("k,std", [(9, 2.0), (5, 1.0), (3, 5.0), (31, 3.0)])
def test_blur_kernel_sums_to_one_and_is_symmetric(k, std):
    ker = gaussian_kernel(k, std)
    assert ker.shape == (k, k) and ker.dtype == torch.float64
    assert abs(ker.sum().item() - 1.0) < 1e-12
    assert (ker >= 0).all()
    assert torch.allclose(ker, ker.T) and torch.allclose(ker, ker.flip(0))
    op = GaussianBlur(1, RES, k, std) if k // 2 < RES else None
    if op is not None:
        assert abs(op.kernel.sum().item() - 1.0) < 1e-6


def test_blur_kernel_matches_scipy_delta_response():
    import numpy as np
    from scipy.ndimage import gaussian_filter

    d = np.zeros((9, 9))
    d[4, 4] = 1
    ref = gaussian_filter(d, 2.0)
    assert np.allclose(gaussian_kernel(9, 2.0).numpy(), ref, atol=0, rtol=0)
    # Reflect folding makes the border heavier than a sampled Gaussian: "slightly non-Gaussian".
    r = np.arange(9) - 4
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 8.0)
    assert not np.allclose(ref, g / g.sum(), atol=1e-4)


def test_blur_constant_image_is_constant_and_impulse_is_kernel():
    op = GaussianBlur(3, RES)
    c = torch.full((1, 3, RES, RES), 0.3)
    assert torch.allclose(op(c), c, atol=1e-6)
    x = torch.zeros(1, 1, RES, RES)
    x[0, 0, 8, 8] = 1
    y = GaussianBlur(1, RES)(x)
    assert torch.allclose(y[0, 0, 4:13, 4:13], GaussianBlur(1, RES).kernel, atol=1e-7)


def test_blur_refuses_bad_parameters():
    with pytest.raises(ValueError, match="odd"):
        GaussianBlur(1, RES, kernel_size=8)
    with pytest.raises(ValueError, match="std"):
        GaussianBlur(1, RES, std=0.0)
    with pytest.raises(ValueError, match="resolution"):
        GaussianBlur(1, 8, kernel_size=17)


def test_reflect_pad_adjoint_matches_autograd():
    import torch.nn.functional as F

    z = torch.randn(2, 1, 8 + 6, 8 + 6, dtype=torch.float64)
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.pad(x, (3,) * 4, mode="reflect"), x, z)
    assert torch.allclose(reflect_pad_adjoint(z, 3), g)


# --------------------------------------------------------------------------------- motion blur


def _spread(kernel: torch.Tensor) -> tuple[float, float]:
    """Eigenvalues (small, large) of the mass-weighted covariance of a (k, k) kernel's pixel positions."""
    k = kernel.shape[-1]
    ii, jj = torch.meshgrid(torch.arange(k, dtype=torch.float64), torch.arange(k, dtype=torch.float64), indexing="ij")
    w = kernel.to(torch.float64).flatten()
    pos = torch.stack([ii.flatten(), jj.flatten()], 1)
    mean = (w[:, None] * pos).sum(0)
    cov = (w[:, None, None] * (pos - mean)[:, :, None] * (pos - mean)[:, None, :]).sum(0)
    small, large = torch.linalg.eigvalsh(cov).tolist()
    return small, large


def test_motion_kernels_sum_to_one_and_intensity_bends_the_path():
    g = torch.Generator().manual_seed(0)
    straight = motion_kernels(32, 9, 0.0, g)
    shaky = motion_kernels(32, 9, 1.0, g)
    for kernels in (straight, shaky):
        assert kernels.shape == (32, 1, 9, 9) and (kernels >= 0).all()
        assert torch.allclose(kernels.sum((1, 2, 3)), torch.ones(32), atol=1e-6)
    # a straight path is a line: its positions spread along one direction only
    assert max(small / large for small, large in map(_spread, straight[:, 0])) < 0.05
    assert sum(small / large for small, large in map(_spread, shaky[:, 0])) / 32 > 0.1
    assert len({tuple(k.flatten().tolist()) for k in shaky}) == 32  # one kernel per image


def test_motion_blur_refuses_bad_parameters():
    with pytest.raises(ValueError, match="odd"):
        MotionBlur(1, RES, kernel_size=8)
    with pytest.raises(ValueError, match="intensity"):
        MotionBlur(1, RES, intensity=1.5)
    with pytest.raises(ValueError, match="kernels"):
        MotionBlur(1, RES)(torch.zeros(1, 1, RES, RES))


# ------------------------------------------------------------------------------------- inpainting


def test_random_inpainting_rate_and_further_mask():
    op = RandomInpainting(1, 64, p=0.6)
    m = op.sample_params(8, torch.Generator().manual_seed(0))["mask"]
    assert abs(m.mean().item() - 0.4) < 0.02
    mt = further_mask(m, 0.1, torch.Generator().manual_seed(1))
    assert set(mt.unique().tolist()) <= {0.0, 1.0}
    assert (mt <= m).all(), "Ã must observe a subset of A"
    assert abs(mt.sum().item() / m.sum().item() - 0.9) < 0.02
    assert torch.equal(further_mask(m, 0.0), m)
    with pytest.raises(ValueError, match="delta"):
        further_mask(m, 1.0)
    assert RandomInpainting(1, RES, p=0.0).sample_params(2)["mask"].eq(1).all()


def test_inpainting_forward_zero_fills_and_needs_mask():
    op = RandomInpainting(3, RES)
    x = torch.rand(2, 3, RES, RES) + 0.5
    params = op.sample_params(2, torch.Generator().manual_seed(0))
    y = op(x, **params)
    assert torch.equal(y == 0, (params["mask"] == 0).expand_as(y))
    with pytest.raises(ValueError, match="mask"):
        op(x)


def test_box_inpainting_one_square_hole_inside():
    op = BoxInpainting(1, RES, box_size=5)
    m = op.sample_params(16, torch.Generator().manual_seed(0))["mask"]
    for i in range(16):
        hole = (m[i, 0] == 0).nonzero()
        assert len(hole) == 25
        (r0, c0), (r1, c1) = hole.min(0).values.tolist(), hole.max(0).values.tolist()
        assert r1 - r0 == 4 and c1 - c0 == 4
    assert BoxInpainting(1, RES).box_size == RES // 2
    with pytest.raises(ValueError, match="box_size"):
        BoxInpainting(1, RES, box_size=RES)


# ---------------------------------------------------------------------------------- super-resolution


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("upsample", ["nearest", "bicubic"])
def test_sr_of_constant_image_is_constant(factor, upsample):
    op = SuperResolution(3, RES, factor, upsample)
    c = torch.full((2, 3, RES, RES), -0.7)
    assert torch.allclose(op(c), c, atol=1e-6)


def test_sr_nearest_is_a_projection_of_block_means():
    op = SuperResolution(1, RES, 2)
    x = torch.randn(1, 1, RES, RES)
    y = op(x)
    assert torch.allclose(op(y), y, atol=1e-6)
    assert torch.allclose(y[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    assert torch.equal(y[0, 0, 0, 0], y[0, 0, 1, 1])


def test_sr_refuses_bad_factor():
    with pytest.raises(ValueError, match="divide"):
        SuperResolution(1, 18, 4)
    with pytest.raises(ValueError, match="allowed"):
        SuperResolution(1, RES, 3)
    with pytest.raises(ValueError, match="upsample"):
        SuperResolution(1, RES, 2, "bilinear")


# -------------------------------------------------------------------------------------- presets


def _preset(text: str):
    return assembly.loads(text)


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(config.PresetError) as err:
        assembly.loads(text)
    return dict(err.value.problems)


def test_build_operator_passes_operator_table():
    p = _preset('[corruption]\noperator = "gaussian_blur"\n[corruption.gaussian_blur]\nkernel_size = 5\nstd = 1.5\n')
    op = assembly.build_operator(p)
    assert isinstance(op, GaussianBlur) and op.kernel_size == 5 and op.std == 1.5
    p = _preset('[corruption]\noperator = "random_inpainting"\n[corruption.random_inpainting]\np = 0.9\ndelta = 0.2\n')
    op = assembly.build_operator(p)
    assert op.p == 0.9 and not hasattr(op, "delta")  # δ is the objective's setting, not part of A
    assert assembly.ambient_delta(p) == 0.2 and assembly.operator_params(p) == {"p": 0.9}
    p = _preset('[data]\nresolution = 32\n[corruption]\noperator = "box_inpainting"\n')
    assert assembly.build_operator(p).box_size == 16
    p = _preset('[corruption]\noperator = "super_resolution"\n[corruption.super_resolution]\nfactor = 4\nupsample = "bicubic"\n')
    op = assembly.build_operator(p)
    assert op.factor == 4 and op.upsample == "bicubic"
    # the effective preset round-trips through TOML
    assert config.loads(config.dumps(p)) == p


def test_override_of_an_operator_table():
    p = config.loads('[corruption]\noperator = "gaussian_blur"\n', overrides=["corruption.gaussian_blur={std=1.0}"])
    assert p.corruption.gaussian_blur.std == 1.0 and p.corruption.gaussian_blur.kernel_size == 9


@pytest.mark.parametrize(
    "text,field,words",
    [
        ("[corruption.gaussian_blur]\nkernel_size = 8\n", "corruption.gaussian_blur.kernel_size", ["8", "odd"]),
        ("[corruption.gaussian_blur]\nstd = -1.0\n", "corruption.gaussian_blur.std", ["-1.0", "greater than 0"]),
        ("[corruption.random_inpainting]\np = 1.0\n", "corruption.random_inpainting.p", ["1.0", "less than 1"]),
        ("[corruption.random_inpainting]\ndelta = -0.1\n", "corruption.random_inpainting.delta", ["-0.1"]),
        ("[corruption.super_resolution]\nfactor = 3\n", "corruption.super_resolution.factor", ["3", "2 or 4"]),
        ('[corruption.super_resolution]\nupsample = "bilinear"\n', "corruption.super_resolution.upsample", ["bilinear", "nearest"]),
        ("[corruption.box_inpainting]\nbox_size = 0\n", "corruption.box_inpainting.box_size", ["0"]),
        ("[corruption.gaussian_blur]\nsize = 9\n", "corruption.gaussian_blur.size", ["unknown key", "kernel_size, std"]),
    ],
)
def test_operator_table_errors_name_field_value_and_allowed(text, field, words):
    problems = _problems(text)
    assert field in problems, problems
    for w in words:
        assert w in problems[field], problems[field]


def test_cross_field_operator_rules():
    pr = _problems(
        "[data]\nresolution = 30\n[network]\nblock_out_channels = [32]\n[corruption]\noperator = "
        '"super_resolution"\n[corruption.super_resolution]\nfactor = 4\n'
    )
    assert (
        "corruption.super_resolution.factor" in pr
        and "30" in pr["corruption.super_resolution.factor"]
        and "2" in pr["corruption.super_resolution.factor"]
    )
    pr = _problems('[data]\nresolution = 32\n[corruption]\noperator = "box_inpainting"\n[corruption.box_inpainting]\nbox_size = 32\n')
    assert "corruption.box_inpainting.box_size" in pr and "1..31" in pr["corruption.box_inpainting.box_size"]
    pr = _problems(
        "[data]\nresolution = 8\n[network]\nblock_out_channels = [32]\n[corruption]\noperator = "
        '"gaussian_blur"\n[corruption.gaussian_blur]\nkernel_size = 17\n'
    )
    assert "corruption.gaussian_blur.kernel_size" in pr and "17" in pr["corruption.gaussian_blur.kernel_size"]
    # a table of an operator that is not selected is refused (issue 19: it would silently have no effect)
    pr = _problems('[data]\nresolution = 32\n[corruption]\noperator = "identity"\n[corruption.box_inpainting]\nbox_size = 16\n')
    assert "corruption.box_inpainting" in pr and "'identity'" in pr["corruption.box_inpainting"]


def test_mask_operators_resolve_to_ambient_mask():
    for op in ("random_inpainting", "box_inpainting"):
        assert assembly.resolve_objective(_preset(f'[corruption]\noperator = "{op}"\n')) == "ambient_mask"
        assert (
            assembly.resolve_objective(_preset(f'[corruption]\noperator = "{op}"\n[teacher]\nobjective = "ambient_mask"\n'))
            == "ambient_mask"
        )
        pr = _problems(f'[corruption]\noperator = "{op}"\n[teacher]\nobjective = "edm"\n')
        assert "teacher.objective" in pr and "ambient_mask" in pr["teacher.objective"]
    for op in ("gaussian_blur", "super_resolution"):
        assert assembly.resolve_objective(_preset(f'[corruption]\noperator = "{op}"\n')) == "ambient_tweedie"
        pr = _problems(f'[corruption]\noperator = "{op}"\n[teacher]\nobjective = "ambient_mask"\n')
        assert "teacher.objective" in pr


def test_schema_fields_flatten_operator_tables():
    fields = {(f["section"], f["key"]): f for f in config.schema_fields()}
    assert fields[("corruption", "gaussian_blur.kernel_size")]["default"] == 9
    assert fields[("corruption", "gaussian_blur.kernel_size")]["maximum"] == 63
    assert fields[("corruption", "super_resolution.factor")]["choices"] == [2, 4]
    assert fields[("corruption", "box_inpainting.box_size")]["nullable"]
    assert ("corruption", "gaussian_blur") not in fields


# -------------------------------------------------------------------------------------- preview


@pytest.mark.parametrize("name", NAMES)
def test_preview_grid_rows(name, tmp_path):
    from rsd_engine.operators.preview import preview_grid, preview_rows

    p = _preset(f'[data]\nresolution = 16\n[network]\nblock_out_channels = [8]\nnorm_groups = 4\n[corruption]\noperator = "{name}"\n')
    rows = preview_rows(p, assembly.build_measurement(p), 3)
    assert rows["clean"].shape == rows["measurement"].shape == rows["adjoint"].shape == (3, 1, 16, 16)
    out = tmp_path / "preview.png"
    img = preview_grid(p, assembly.build_measurement(p), 3, out)
    assert out.exists() and img.size == (3 * 17 + 1, 3 * 17 + 1) and img.mode == "L"
    # deterministic: the same preset gives the same grid
    assert preview_grid(p, assembly.build_measurement(p), 3).tobytes() == img.tobytes()
