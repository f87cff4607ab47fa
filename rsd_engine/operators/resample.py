"""Super-resolution ×k in image space: average-pool down by k, then up by k back to the image size
(docs/method.md §1 and §6: teacher, fake score and generator share one resolution).

The paper's SR code is not released; this image-space variant keeps "initialise G from the teacher"
valid (docs/method.md §7, pitfall 13).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Operator

__all__ = ["SuperResolution"]


class SuperResolution(Operator):
    """A(x) = U_k(avgpool_k(x)): the k×k block means of x, brought back to H×W.

    With ``upsample="nearest"`` A is the orthogonal projection onto images constant on k×k blocks
    (symmetric, idempotent), so Aᵀ = A. With ``upsample="bicubic"`` (PyTorch's a = −0.75 kernel,
    ``align_corners=False``, border-clamped) A is still linear; its adjoint is evaluated exactly as
    the vector–Jacobian product of the linear map (autograd), and values may overshoot [-1, 1]
    slightly. Either way a constant image is mapped to itself.

    Args:
        channels: image channels C.
        resolution: image side H = W, divisible by ``factor``.
        factor: k, 2 or 4.
        upsample: ``"nearest"`` (default) or ``"bicubic"``.

    Raises:
        ValueError: factor not in (2, 4), factor not dividing resolution, unknown upsample mode.
    """

    name = "super_resolution"
    linear = True
    objective_family = "tweedie"
    FACTORS: ClassVar[tuple[int, ...]] = (2, 4)
    UPSAMPLE: ClassVar[tuple[str, ...]] = ("nearest", "bicubic")

    def __init__(self, channels: int, resolution: int, factor: int = 2, upsample: str = "nearest"):
        super().__init__(channels, resolution)
        if int(factor) not in self.FACTORS:
            raise ValueError(f"factor {factor}: allowed {', '.join(map(str, self.FACTORS))}")
        if self.resolution % int(factor):
            raise ValueError(f"factor {factor} does not divide resolution {self.resolution}")
        if upsample not in self.UPSAMPLE:
            raise ValueError(f"upsample {upsample!r}: allowed {', '.join(self.UPSAMPLE)}")
        self.factor = int(factor)
        self.upsample = upsample

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """k×k block means: (B, C, H, W) → (B, C, H/k, W/k). The low-resolution measurement itself."""
        return F.avg_pool2d(x, self.factor)

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Down ×k then up ×k: (B, C, H, W) in [-1, 1] → (B, C, H, W); differentiable in x."""
        low = self.downsample(x)
        if self.upsample == "nearest":
            return F.interpolate(low, scale_factor=self.factor, mode="nearest")
        return F.interpolate(low, scale_factor=self.factor, mode="bicubic", align_corners=False)

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Aᵀ(y) for y of shape (B, C, H, W); returns (B, C, H, W).

        Nearest: Aᵀ = A (block means spread back). Bicubic: ∇_x ⟨A x, y⟩ by autograd, exact for a
        linear map; differentiable in y when y requires grad.
        """
        if self.upsample == "nearest":
            return self.forward(y)
        with torch.enable_grad():
            x0 = torch.zeros_like(y, requires_grad=True)
            (g,) = torch.autograd.grad(self.forward(x0), x0, grad_outputs=y, create_graph=y.requires_grad)
        return g
