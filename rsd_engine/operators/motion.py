"""Motion blur with a random kernel per image: a random camera-shake trajectory rasterised into a k×k
kernel (docs/method.md §1; the paper's operator registry lists motion blur beside Gaussian blur).

Trajectory (our own discrete form of the camera-shake model of Boracchi & Foi, "Modeling the
performance of image restoration from motion blur", IEEE TIP 2012, §II): T = 4k positions
p_{t+1} = p_t + v_t with a velocity that starts in a uniform random direction and performs a
Gaussian random walk, v_{t+1} = normalise(v_t + I·g_t), g_t ~ N(0, I₂), plus with probability I/2 per
step an impulsive jerk that turns v by a uniform random angle. The intensity I ∈ [0, 1] controls
both: I = 0 gives a straight line through the kernel, I = 1 an erratic shake. The path is centred on
its mean and scaled so its longest extent spans the kernel (k − 1 pixels), then each position is
splatted bilinearly into a k×k grid; the kernel is normalised to sum 1.

A(x) = K_i ∗ reflect_pad(x) with the kernel K_i of image i on every channel. K_i is drawn only from
the RNG :meth:`MotionBlur.sample_params` is given, so the corrupted dataset freezes one kernel
per image index (:meth:`rsd_engine.operators.measurement.Measurement.frozen`). Different images hide different
frequencies, which keeps the clean law identifiable from the measurements, unlike a fixed blur.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Operator
from .blur import reflect_pad_adjoint

__all__ = ["MotionBlur", "motion_kernels"]


def motion_kernels(batch: int, kernel_size: int, intensity: float, rng: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``batch`` camera-shake kernels (module docstring).

    Args:
        batch: B ≥ 0.
        kernel_size: odd side k ≥ 3 in pixels.
        intensity: I in [0, 1]; 0 = straight linear motion, 1 = erratic shake.
        rng: the only source of randomness (a CPU ``torch.Generator``; torch's global RNG when ``None``).

    Returns:
        float32 tensor (B, 1, k, k) on the CPU, non-negative, each kernel summing to 1.

    Raises:
        ValueError: even or too small ``kernel_size``, ``intensity`` outside [0, 1].
    """
    k = int(kernel_size)
    if k < 3 or k % 2 == 0:
        raise ValueError(f"kernel_size {kernel_size}: must be an odd number of pixels ≥ 3")
    if not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity {intensity}: must be in [0, 1]")
    steps = 4 * k
    f64 = dict(dtype=torch.float64, generator=rng)
    angle = 2 * math.pi * torch.rand(batch, 1, **f64)
    kicks = torch.randn(batch, steps, 2, **f64) * intensity
    jerk = (torch.rand(batch, steps, **f64) < intensity / 2) * 2 * math.pi * torch.rand(batch, steps, **f64)
    v = torch.cat([angle.cos(), angle.sin()], dim=1)  # (B, 2)
    path = [torch.zeros(batch, 2, dtype=torch.float64)]
    for t in range(steps - 1):
        v = v + kicks[:, t]
        c, s = jerk[:, t].cos()[:, None], jerk[:, t].sin()[:, None]
        v = torch.cat([c * v[:, :1] - s * v[:, 1:], s * v[:, :1] + c * v[:, 1:]], dim=1)
        v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)
        path.append(path[-1] + v)
    p = torch.stack(path, dim=1)  # (B, T, 2)
    p = p - p.mean(dim=1, keepdim=True)
    extent = p.abs().amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)
    p = p / extent * (k - 1) / 2 + (k - 1) / 2  # inside [0, k − 1]²
    base = p.floor().clamp(0, k - 2)
    frac = p - base
    i0, j0 = base[..., 0].long(), base[..., 1].long()
    fi, fj = frac[..., 0], frac[..., 1]
    kernel = torch.zeros(batch, k * k, dtype=torch.float64)
    for di, wi in ((0, 1 - fi), (1, fi)):
        for dj, wj in ((0, 1 - fj), (1, fj)):
            kernel.scatter_add_(1, (i0 + di) * k + (j0 + dj), wi * wj)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    return kernel.reshape(batch, 1, k, k).to(torch.float32)


class MotionBlur(Operator):
    """Motion blur with a random camera-shake kernel per image (module docstring).

    Linear in x for fixed kernels; :meth:`adjoint` is the exact transpose (per-image transposed
    convolution, then the reflected border folded back, :func:`rsd_engine.operators.blur.reflect_pad_adjoint`).

    Args:
        channels: image channels C.
        resolution: image side H = W in pixels; must exceed kernel_size // 2.
        kernel_size: odd kernel side k, 3–31 (default 9).
        intensity: camera-shake intensity I in [0, 1] (default 0.5).

    Raises:
        ValueError: even or out-of-range kernel_size, k // 2 ≥ resolution, intensity outside [0, 1].
    """

    name = "motion_blur"
    linear = True
    objective_family = "tweedie"

    def __init__(self, channels: int, resolution: int, kernel_size: int = 9, intensity: float = 0.5):
        super().__init__(channels, resolution)
        k = int(kernel_size)
        if not (3 <= k <= 31 and k % 2 == 1):
            raise ValueError(f"kernel_size {kernel_size}: allowed odd sizes 3–31")
        if k // 2 >= self.resolution:
            raise ValueError(f"kernel_size {k}: reflection padding {k // 2} must be < resolution {self.resolution}")
        if not 0.0 <= float(intensity) <= 1.0:
            raise ValueError(f"intensity {intensity}: allowed 0 ≤ intensity ≤ 1")
        self.kernel_size, self.intensity, self.pad = k, float(intensity), k // 2

    def sample_params(self, batch: int, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw ``{"kernel": (B, 1, k, k) float32}``, one kernel per image (:func:`motion_kernels`)."""
        return {"kernel": motion_kernels(batch, self.kernel_size, self.intensity, rng)}

    def _weight(self, like: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if "kernel" not in params:
            raise ValueError("operator 'motion_blur' needs its kernels: call op(x, **op.sample_params(batch, rng))")
        kernel = params["kernel"].to(device=like.device, dtype=like.dtype)
        b = like.shape[0]
        if kernel.shape != (b, 1, self.kernel_size, self.kernel_size):
            raise ValueError(f"kernel of shape {tuple(kernel.shape)}; expected ({b}, 1, {self.kernel_size}, {self.kernel_size})")
        return kernel.repeat_interleave(self.channels, dim=0)  # (B·C, 1, k, k)

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Blur each image x_i (B, C, H, W) in [-1, 1] with its kernel ``kernel[i]``; returns (B, C, H, W),
        values in the input's range (the kernel is a non-negative average). Differentiable in x.

        Raises:
            ValueError: missing or mis-shaped ``kernel``.
        """
        b, c, h, w = x.shape
        xp = F.pad(x, (self.pad,) * 4, mode="reflect")
        out = F.conv2d(xp.reshape(1, b * c, h + 2 * self.pad, w + 2 * self.pad), self._weight(x, params), groups=b * c)
        return out.reshape(b, c, h, w)

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Aᵀ(y) for y (B, C, H, W): per-image transposed convolution, then the reflected border folded back.

        Raises:
            ValueError: missing or mis-shaped ``kernel``.
        """
        b, c, h, w = y.shape
        z = F.conv_transpose2d(y.reshape(1, b * c, h, w), self._weight(y, params), groups=b * c)
        return reflect_pad_adjoint(z.reshape(b, c, h + 2 * self.pad, w + 2 * self.pad), self.pad)
