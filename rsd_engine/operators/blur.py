"""Gaussian deblurring operator: a depthwise Gaussian convolution with reflection padding (docs/method.md §1).

A(x) = K ∗ pad_reflect(x), the same 2-D kernel K on every channel, no bias. K is
``scipy.ndimage.gaussian_filter`` (default ``mode="reflect"``, ``truncate=4.0``) applied to a
``kernel_size × kernel_size`` delta image, so it sums to 1 and differs slightly from a sampled
Gaussian near its border (the filter's own reflect boundary folds the tails back in). Paper setting:
9×9, std 2.0, 4-pixel reflection padding (RSD, Zhang et al. 2025, deblurring experiments).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Operator

__all__ = ["GaussianBlur", "gaussian_kernel", "reflect_pad_adjoint"]


def gaussian_kernel(kernel_size: int, std: float) -> torch.Tensor:
    """The blur kernel: ``scipy.ndimage.gaussian_filter`` (default mode and truncate) of a centred delta.

    Args:
        kernel_size: odd side k ≥ 1 in pixels.
        std: Gaussian standard deviation in pixels, > 0.

    Returns:
        float64 tensor (k, k), symmetric, non-negative, summing to 1 (to rounding).

    Raises:
        ValueError: even or non-positive ``kernel_size``, non-positive ``std``.
    """
    kernel_size = int(kernel_size)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size {kernel_size}: must be a positive odd number of pixels")
    if not std > 0:
        raise ValueError(f"std {std}: must be > 0 pixels")
    import numpy as np
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((kernel_size, kernel_size), dtype=np.float64)
    delta[kernel_size // 2, kernel_size // 2] = 1.0
    return torch.from_numpy(gaussian_filter(delta, sigma=float(std)))


def _fold_dim(z: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Adjoint of torch reflect padding by ``pad`` along one dimension (size n + 2·pad → n)."""
    n = z.shape[dim] - 2 * pad
    out = z.narrow(dim, pad, n).clone()
    # Padded index j = -pad..-1 copies source -j; j = n..n+pad-1 copies source 2(n-1) - j.
    out.narrow(dim, 1, pad).add_(z.narrow(dim, 0, pad).flip(dim))
    out.narrow(dim, n - 1 - pad, pad).add_(z.narrow(dim, n + pad, pad).flip(dim))
    return out


def reflect_pad_adjoint(z: torch.Tensor, pad: int) -> torch.Tensor:
    """Exact adjoint of ``F.pad(x, (pad,) * 4, mode="reflect")`` on the last two dimensions.

    Each border pixel of the padded image is added back onto the interior pixel it was copied from.

    Args:
        z: (B, C, H + 2·pad, W + 2·pad), any float dtype.
        pad: padding width ≥ 0, with pad < H and pad < W (torch's reflect requirement).

    Returns:
        (B, C, H, W), same dtype and device.
    """
    if pad == 0:
        return z
    return _fold_dim(_fold_dim(z, pad, -2), pad, -1)


class GaussianBlur(Operator):
    """Depthwise Gaussian blur A(x) = K ∗ reflect_pad(x) (docs/method.md §1).

    Linear; :meth:`adjoint` is the exact transpose (transposed convolution, then the padded border
    folded back onto the pixels it reflects). No random parts: :meth:`sample_params` returns ``{}``.

    Args:
        channels: image channels C.
        resolution: image side H = W in pixels; must exceed kernel_size // 2.
        kernel_size: odd kernel side k (paper 9); reflection padding is k // 2.
        std: Gaussian standard deviation in pixels (paper 2.0).

    Attributes:
        kernel: buffer (k, k) float32, sums to 1 (see :func:`gaussian_kernel`).

    Raises:
        ValueError: even/non-positive kernel_size, std ≤ 0, or k // 2 ≥ resolution.
    """

    name = "gaussian_blur"
    linear = True
    objective_family = "tweedie"

    def __init__(self, channels: int, resolution: int, kernel_size: int = 9, std: float = 2.0):
        super().__init__(channels, resolution)
        self.kernel_size = int(kernel_size)
        self.std = float(std)
        self.pad = self.kernel_size // 2
        kernel = gaussian_kernel(self.kernel_size, self.std)
        if self.pad >= self.resolution:
            raise ValueError(f"kernel_size {self.kernel_size}: reflection padding {self.pad} must be < resolution {self.resolution}")
        self.register_buffer("kernel", kernel.to(torch.float32))

    def _weight(self, like: torch.Tensor) -> torch.Tensor:
        k = self.kernel.to(device=like.device, dtype=like.dtype)
        return k.expand(self.channels, 1, self.kernel_size, self.kernel_size)

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Blur images ``x`` (B, C, H, W) in [-1, 1]; returns (B, C, H, W), differentiable in x.

        Output values stay in the input's range (the kernel is a non-negative average).
        """
        xp = F.pad(x, (self.pad,) * 4, mode="reflect") if self.pad else x
        return F.conv2d(xp, self._weight(x), groups=self.channels)

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Aᵀ(y) for y of shape (B, C, H, W): transposed depthwise convolution to (H + 2p, W + 2p), then
        :func:`reflect_pad_adjoint`. Returns (B, C, H, W)."""
        z = F.conv_transpose2d(y, self._weight(y), groups=self.channels)
        return reflect_pad_adjoint(z, self.pad)
