"""The forward-operator interface A of the measurement model y = A(x) + σε (docs/method.md §1)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["Operator"]


class Operator(nn.Module):
    """A forward operator A acting on a batch of images.

    Subclasses keep fixed parts (kernels) as buffers and draw their random parts (masks) only
    through :meth:`sample_params` with an explicit ``torch.Generator``, so the corrupted dataset can
    seed one generator per image index and every epoch sees the same measurement.

    Class attributes:
        name: registry key used in presets (``corruption.operator``).
        linear: whether A is linear; linear operators implement :meth:`adjoint` exactly
            (⟨A x, y⟩ = ⟨x, Aᵀ y⟩).
        objective_family: which teacher objective family fits the measurements:
            ``"tweedie"`` (EDM / Ambient-Tweedie, docs/method.md §2.2) or ``"mask"`` (Ambient Diffusion, §2.3).
        cond_channels: mask channels the networks take beside the image (0, or 1 for mask operators,
            whose :meth:`sample_params` then returns ``{"mask": (B, 1, H, W)}``).

    Args:
        channels: image channels C (1 or 3).
        resolution: image side H = W in pixels.
    """

    name: ClassVar[str] = ""
    linear: ClassVar[bool] = True
    objective_family: ClassVar[str] = "tweedie"
    cond_channels: ClassVar[int] = 0

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.channels = int(channels)
        self.resolution = int(resolution)

    def output_shape(self) -> tuple[int, int, int]:
        """Shape (C', H', W') of one measurement A(x) for an image of shape (C, H, W)."""
        return (self.channels, self.resolution, self.resolution)

    def sample_params(self, batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw the random parts of A for ``batch`` images (e.g. masks of shape (B, 1, H, W), values 0/1).

        Operators without random parts return ``{}``. ``generator`` is the only source of randomness.
        """
        return {}

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """A(x) for images ``x`` of shape (B, C, H, W) in [-1, 1]; returns (B, *output_shape())."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Aᵀ(y) for measurements of shape (B, *output_shape()); returns (B, C, H, W).

        Raises:
            NotImplementedError: for non-linear operators.
        """
        raise NotImplementedError(f"operator {self.name!r} is not linear and has no adjoint")
