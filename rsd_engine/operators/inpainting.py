"""Inpainting operators: pixel masks A(x) = M ⊙ x (docs/method.md §1; Ambient Diffusion, Daras et al.
2023, "Ambient Diffusion: Learning Clean Distributions from Corrupted Data").

Masks have shape (B, 1, H, W), values exactly 0.0 (erased) or 1.0 (observed), and are shared by all
channels (RSD's ``mask_full_rgb`` convention). They are drawn only in :meth:`sample_params` from the
given ``torch.Generator``, so a corrupted dataset seeded per image index freezes one mask per image.
Both operators use the Ambient-Diffusion teacher objective (``objective_family = "mask"``), which
draws the further mask Ã = A ⊙ B of :func:`further_mask` with its own δ (a training setting of the
objective, :class:`rsd_engine.train.objectives.Objective`, not a part of A).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Condition, Operator

__all__ = ["RandomInpainting", "BoxInpainting", "PixelMask", "further_mask", "apply_mask"]


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} {value}: must be in [0, 1)")
    return value


def _uniform(shape: tuple[int, ...], rng: torch.Generator | None, device=None) -> torch.Tensor:
    """U[0, 1) draws: from ``rng`` on its device when given, else torch's global RNG on ``device``."""
    if rng is not None:
        return torch.rand(shape, generator=rng, device=rng.device)
    return torch.rand(shape, device=device)


def _check_binary(mask: torch.Tensor, what: str) -> None:
    """Raise ValueError unless every entry of ``mask`` is exactly 0 or 1 (one host synchronisation)."""
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        bad = mask[~binary]
        raise ValueError(
            f"{what}: {bad.numel()} of {mask.numel()} mask values are neither 0 nor 1 (e.g. {bad[0].item()!r}); allowed: 0 or 1"
        )


def apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """M ⊙ x with a channel-shared mask.

    Args:
        x: (B, C, H, W).
        mask: (B, 1, H, W) or (B, C, H, W), values exactly 0 or 1 (any device/dtype; converted to x's).

    Returns:
        (B, C, H, W), zero where the mask is 0. Differentiable in x.

    Raises:
        ValueError: when the mask's batch or spatial size does not match x, or a mask value is not 0
            or 1 (a soft or NaN mask).
    """
    if mask.ndim != 4 or mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:] or mask.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x.shape)}; expected (B, 1, H, W)")
    _check_binary(mask, "apply_mask")
    return x * mask.to(device=x.device, dtype=x.dtype)


def further_mask(mask: torch.Tensor, delta: float, rng: torch.Generator | None = None) -> torch.Tensor:
    """Ambient Diffusion's further corruption Ã = A ⊙ B: erase a further fraction δ of the surviving pixels.

    B is an independent Bernoulli mask with P(B = 0) = δ per pixel (shared over the mask's channels),
    so every pixel observed in Ã is observed in A and E[#Ã] = (1 − δ)·#A (Ambient Diffusion, Daras et
    al. 2023, §3; docs/method.md §2.2).

    Args:
        mask: A, shape (B, k, H, W), values 0/1.
        delta: δ ∈ [0, 1) (paper 0.1). δ = 0 returns a copy of ``mask`` (and draws no random numbers).
        rng: source of B (``None`` → torch's global RNG on the mask's device). A fresh draw per
            call: this is the training-time corruption, not part of the frozen measurement.

    Returns:
        Ã, same shape, dtype and device as ``mask``, values 0/1.

    Raises:
        ValueError: δ outside [0, 1), or a mask value that is not 0 or 1.
    """
    delta = _check_fraction("delta", delta)
    _check_binary(mask, "further_mask")
    if delta == 0.0:
        return mask.clone()
    keep = _uniform(tuple(mask.shape), rng, mask.device).to(mask.device) >= delta
    return mask * keep.to(mask.dtype)


@dataclass(frozen=True)
class PixelMask(Condition):
    """The networks' condition of a pixel-mask operator (docs/method.md §3.1): they see m ⊙ x and the
    mask m itself as one extra channel; the SiD integrand is restricted to m (§3.3).

    Args:
        mask: (B, 1, H, W), values 0/1 (1 = seen).
    """

    mask: torch.Tensor

    @property
    def channels(self) -> torch.Tensor:
        """The mask (B, 1, H, W)."""
        return self.mask

    @property
    def sid_mask(self) -> torch.Tensor:
        """The mask (B, 1, H, W): the generator's loss lives on the seen pixels."""
        return self.mask

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """m ⊙ x for x (B, C, H, W)."""
        return x * self.mask


class _MaskOperator(Operator):
    """Shared forward/adjoint of pixel-mask operators: A(x) = M ⊙ x, Aᵀ = A (a diagonal 0/1 matrix)."""

    linear = True
    objective_family = "mask"
    cond_channels = 1

    def _mask(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if "mask" not in params:
            raise ValueError(f"operator {self.name!r} needs its mask: call op(x, **op.sample_params(batch, rng))")
        return params["mask"]

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """M ⊙ x for images (B, C, H, W) and ``mask`` (B, 1, H, W) 0/1; returns (B, C, H, W).

        Raises:
            ValueError: missing or mis-shaped ``mask``.
        """
        return apply_mask(x, self._mask(params))

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Aᵀ(y) = M ⊙ y (zero-filled measurement), shape (B, C, H, W).

        Raises:
            ValueError: missing or mis-shaped ``mask``.
        """
        return apply_mask(y, self._mask(params))

    def condition(self, **params: torch.Tensor) -> PixelMask:
        """:class:`PixelMask` of ``mask`` (B, 1, H, W).

        Raises:
            ValueError: no ``mask`` given.
        """
        return PixelMask(self._mask(params))


class RandomInpainting(_MaskOperator):
    """Random pixel inpainting: each pixel erased independently with probability p (docs/method.md §1).

    Args:
        channels: image channels C.
        resolution: image side H = W.
        p: erase probability in [0, 1) (paper 0.6, 0.8, 0.9); p = 0 observes everything.

    Raises:
        ValueError: p outside [0, 1).
    """

    name = "random_inpainting"

    def __init__(self, channels: int, resolution: int, p: float = 0.6):
        super().__init__(channels, resolution)
        self.p = _check_fraction("p", p)

    def sample_params(self, batch: int, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw masks ``{"mask": (B, 1, H, W) float32 0/1}``, P(0) = p per pixel, from ``rng`` only
        (on the RNG's device; CPU with torch's global RNG when ``None``)."""
        u = _uniform((batch, 1, self.resolution, self.resolution), rng)
        return {"mask": (u >= self.p).to(torch.float32)}


class BoxInpainting(_MaskOperator):
    """Box inpainting: one square hole of side ``box_size`` per image, uniformly placed fully inside it.

    Not in the paper's experiments (its code has it); the teacher uses the same Ambient objective.

    Args:
        channels: image channels C.
        resolution: image side H = W.
        box_size: hole side s in pixels, 1 ≤ s < resolution (``None`` → resolution // 2).

    Raises:
        ValueError: box_size outside [1, resolution).
    """

    name = "box_inpainting"

    def __init__(self, channels: int, resolution: int, box_size: int | None = None):
        super().__init__(channels, resolution)
        s = self.resolution // 2 if box_size is None else int(box_size)
        if not 1 <= s < self.resolution:
            raise ValueError(f"box_size {s}: must be in [1, {self.resolution - 1}] (below the resolution {self.resolution})")
        self.box_size = s

    def sample_params(self, batch: int, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw ``{"mask": (B, 1, H, W) float32}``: ones with a zero s×s square whose top-left corner is
        uniform in [0, H − s]², from ``rng`` only."""
        n = self.resolution - self.box_size + 1
        dev = rng.device if rng is not None else None
        top = torch.randint(0, n, (batch,), generator=rng, device=dev)
        left = torch.randint(0, n, (batch,), generator=rng, device=dev)
        r = torch.arange(self.resolution, device=top.device)
        rows = (r[None, :] >= top[:, None]) & (r[None, :] < top[:, None] + self.box_size)  # (B, H)
        cols = (r[None, :] >= left[:, None]) & (r[None, :] < left[:, None] + self.box_size)  # (B, W)
        hole = rows[:, :, None] & cols[:, None, :]
        return {"mask": (~hole).to(torch.float32).unsqueeze(1)}
