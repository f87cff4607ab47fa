"""The identity operator: pure denoising, y = x + σε (DSD setting, docs/method.md §1)."""

from __future__ import annotations

import torch

from .base import Operator


class Identity(Operator):
    """A = I. Output shape equals input shape; self-adjoint."""

    name = "identity"

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Return ``x`` unchanged, shape (B, C, H, W)."""
        return x

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Return ``y`` unchanged (Aᵀ = I)."""
        return y
