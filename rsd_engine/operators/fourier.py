"""Complex images as real channels, and the centred orthonormal 2-D Fourier transform of MRI
(docs/method.md §9).

A complex image z with k components (one MRI image: k = 1; k coil images: k = C) is stored as a real
tensor of 2k channels ordered (re₁, im₁, re₂, im₂, …), so the engine's NCHW images, networks and
grids carry it unchanged. The transform is F = fftshift ∘ FFT₂ ∘ ifftshift with the orthonormal
scaling 1/√(HW): the zero frequency sits at index (H // 2, W // 2) for odd and even sizes alike, F is
unitary (‖F z‖ = ‖z‖) and F⁻¹ = Fᴴ is its exact inverse.
"""

from __future__ import annotations

import torch

__all__ = ["to_complex", "to_channels", "fft2c", "ifft2c"]

_DIMS = (-2, -1)


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real channels (B, 2k, H, W), ordered (re₁, im₁, …, re_k, im_k), → complex (B, k, H, W).

    float32 gives complex64, float64 complex128. Differentiable.

    Raises:
        ValueError: an odd number of channels.
    """
    if x.ndim != 4 or x.shape[1] % 2:
        raise ValueError(f"complex images need an even number of channels (re, im pairs), got shape {tuple(x.shape)}")
    b, c2, h, w = x.shape
    pairs = x.reshape(b, c2 // 2, 2, h, w)
    return torch.complex(pairs[:, :, 0], pairs[:, :, 1])


def to_channels(z: torch.Tensor) -> torch.Tensor:
    """Complex (B, k, H, W) → real channels (B, 2k, H, W) ordered (re₁, im₁, …); the inverse of
    :func:`to_complex`. Differentiable."""
    b, k, h, w = z.shape
    return torch.stack([z.real, z.imag], dim=2).reshape(b, 2 * k, h, w)


def fft2c(z: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two dimensions: k = fftshift(FFT₂(ifftshift(z)))/√(HW).

    Args:
        z: complex tensor (…, H, W), any sizes (odd or even).

    Returns:
        k-space, same shape and dtype; the zero frequency at (H // 2, W // 2).
    """
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (also its adjoint): z = fftshift(IFFT₂(ifftshift(k)))·√(HW).

    Args:
        k: complex k-space (…, H, W) with the zero frequency at (H // 2, W // 2).

    Returns:
        complex image, same shape and dtype.
    """
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)
