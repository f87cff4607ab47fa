"""The forward model of a preset: y = A(x) + σ_c·ε, built once and handed to every part that corrupts.

:class:`Measurement` bundles the operator A, the measurement noise σ_c and the seeding rule that
freezes one measurement per image index (docs/method.md §1); :func:`rsd_engine.assembly.build_measurement`
builds it from a preset. Data, objectives, distillation,
evaluation and the preview all take this one object instead of re-reading ``corruption.*`` from the
preset.
"""

from __future__ import annotations

import math

import torch

from ..seeding import item_rng
from .base import Operator

__all__ = ["Measurement"]


class Measurement:
    """y = A(x) + σ_c·ε with ε ~ N(0, I), A's random parts (masks) and ε drawn together.

    Args:
        op: the forward operator A.
        noise_sigma: σ_c ≥ 0 on the [-1, 1] image scale.
        seed: corruption seed: the measurement of item i is drawn from
            :func:`rsd_engine.seeding.item_rng` (seed, i).

    Raises:
        ValueError: σ_c is not a finite number ≥ 0 (negative, NaN or ±Inf).
    """

    def __init__(self, op: Operator, noise_sigma: float, seed: int = 0):
        sigma = float(noise_sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"noise_sigma {noise_sigma!r}: must be a finite number ≥ 0 (on the [-1, 1] image scale)")
        self.op = op
        self.noise_sigma = sigma
        self.seed = int(seed)

    def to(self, device) -> "Measurement":
        """Move the operator's buffers (kernels) to ``device``; returns ``self``."""
        self.op.to(device)
        return self

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape (C', H', W') of one measurement, as the operator states it."""
        return self.op.output_shape()

    @property
    def has_mask(self) -> bool:
        """Whether A has a mask (pixels, or k-space lines) that its networks take as extra input channels."""
        return self.op.cond_channels > 0

    def __call__(
        self, x: torch.Tensor, rng: torch.Generator | None = None, noisy: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Corrupt images: y = A(x) + σ_c·ε, A's random parts drawn first, then ε.

        For mask operators the noise is masked too (y = M ⊙ (x + σ_c ε)): erased pixels (or unmeasured
        k-space lines) stay 0.

        Args:
            x: clean images (B, C, H, W) in [-1, 1].
            rng: source of masks and noise (``None`` → torch's global RNG).
            noisy: ``False`` returns the noise-free A(x) (the generator step of RSD, docs/method.md §3).

        Returns:
            (y of shape (B, *output_shape), never clipped; the operator parameters drawn, e.g.
            ``{"mask": (B, 1, H, W)}``, or MRI's line mask and coil maps), all on x's device.
            Differentiable in x.

        Raises:
            TypeError: ``x`` is not a float tensor (uint8 images: convert with u / 127.5 − 1 first).
        """
        if not x.is_floating_point():
            raise TypeError(f"Measurement: images of dtype {x.dtype}; expected float images in [-1, 1]")
        params = {k: v.to(x.device) for k, v in self.op.sample_params(x.shape[0], rng).items()}
        y = self.op(x, **params)
        if noisy and self.noise_sigma > 0:
            eps = torch.randn(y.shape, generator=rng, dtype=y.dtype, device="cpu" if rng is not None else y.device)
            eps = eps.to(y.device)
            if "mask" in params:  # erased pixels are not measured: they carry no noise either
                eps = eps * params["mask"]
            y = y + self.noise_sigma * eps
        return y, params

    def rng(self, index: int, seed: int | None = None) -> torch.Generator:
        """The RNG that freezes the measurement of item ``index`` (``seed`` default: the corruption seed)."""
        return item_rng(self.seed if seed is None else seed, index)

    @torch.no_grad()
    def frozen(self, x: torch.Tensor, indices, seed: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Measure each row of ``x`` with the RNG of its item index: the same index always gives
        the same measurement, whatever the batch it comes in.

        Args:
            x: clean images (B, C, H, W) in [-1, 1].
            indices: B item indices (training-set indices, or evaluation sample seeds).
            seed: base seed of the stream (default the corruption seed; evaluation streams pass the
                bases of :mod:`rsd_engine.seeding`).

        Returns:
            (y (B, *output_shape) float32; parameters, each (B, …)). Empty x gives an empty y.

        Raises:
            ValueError: ``indices`` does not have one entry per row of ``x``.
        """
        indices = [int(i) for i in indices]
        if len(indices) != x.shape[0]:
            raise ValueError(f"{len(indices)} indices for {x.shape[0]} images")
        ys, params = [], []
        for row, i in enumerate(indices):
            y, p = self(x[row : row + 1], self.rng(i, seed))
            ys.append(y)
            params.append(p)
        merged = {k: torch.cat([p[k] for p in params]) for k in (params[0] if params else {})}
        return (torch.cat(ys) if ys else torch.empty(0, *self.output_shape)), merged
