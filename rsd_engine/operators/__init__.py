"""Forward operators A and the measurement noise of y = A(x) + σε (METHOD.md §1).

``OPERATORS`` maps the preset name (``corruption.operator``) to its :class:`Operator` class.
"""

from __future__ import annotations

import torch

from .base import Operator
from .blur import GaussianBlur
from .identity import Identity
from .inpainting import BoxInpainting, RandomInpainting, further_mask
from .resample import SuperResolution

__all__ = [
    "Operator",
    "OPERATORS",
    "build_operator",
    "operator_params",
    "measure",
    "index_generator",
    "further_mask",
    "Identity",
    "GaussianBlur",
    "RandomInpainting",
    "BoxInpainting",
    "SuperResolution",
]

OPERATORS: dict[str, type[Operator]] = {
    cls.name: cls for cls in (Identity, GaussianBlur, RandomInpainting, BoxInpainting, SuperResolution)
}


def operator_params(preset) -> dict:
    """The keyword parameters of the preset's operator: its ``[corruption.<operator>]`` table
    (e.g. ``{"kernel_size": 9, "std": 2.0}`` for ``gaussian_blur``), ``{}`` for operators without one."""
    sub = getattr(preset.corruption, preset.corruption.operator, None)
    return dict(sub.model_dump()) if hasattr(sub, "model_dump") else {}


def build_operator(preset) -> Operator:
    """Instantiate the preset's operator for its image shape with its own ``[corruption.<operator>]``
    parameters (see :func:`operator_params`).

    Args:
        preset: a validated :class:`rsd_engine.config.Preset`.

    Raises:
        KeyError: unknown operator name (validation normally catches this first).
        ValueError: parameters the operator refuses (validation normally catches these first).
    """
    cls = OPERATORS[preset.corruption.operator]
    return cls(channels=preset.data.channels, resolution=preset.data.resolution, **operator_params(preset))


def index_generator(seed: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from (corruption seed, image index), independent across indices."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index) * 7919 + 12345) % (2**63 - 1))


def measure(
    op: Operator, x: torch.Tensor, noise_sigma: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Corrupt images: y = A(x) + σ·ε with ε ~ N(0, I), A's random parts drawn from ``generator``.
    For mask operators the noise is masked too (y = M ⊙ (x + σε)): erased pixels stay 0.

    Args:
        op: the forward operator.
        x: clean images (B, C, H, W) in [-1, 1].
        noise_sigma: σ ≥ 0 on the [-1, 1] scale. y is never clipped.
        generator: source of masks and noise (``None`` → torch's global RNG).

    Returns:
        (y of shape (B, *op.output_shape()), the operator parameters drawn, e.g. masks).
    """
    params = op.sample_params(x.shape[0], generator)
    params = {k: v.to(x.device) for k, v in params.items()}
    y = op(x, **params)
    if noise_sigma > 0:
        eps = torch.randn(y.shape, generator=generator, dtype=y.dtype, device="cpu" if generator is not None else y.device)
        eps = eps.to(y.device)
        if "mask" in params:  # erased pixels are not measured: they carry no noise either
            eps = eps * params["mask"]
        y = y + noise_sigma * eps
    return y, params
