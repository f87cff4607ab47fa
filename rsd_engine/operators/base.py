"""The forward-operator interface A of the measurement model y = A(x) + σε (docs/method.md §1), and
:class:`Condition`, what the networks of an operator with masks see beside the image."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from torch import nn

__all__ = ["Operator", "Condition"]


@dataclass(frozen=True)
class Condition:
    """The network input of a mask (or k-space mask) operator for one batch: how an image is shown to
    the networks (:meth:`project`), the extra input channels (:attr:`channels`) and where the SiD
    integrand of the generator step lives (:attr:`sid_mask`) (docs/method.md §3.1, §3.3, §9).

    Subclasses are frozen dataclasses whose tensor fields all have the batch as first dimension;
    :meth:`to` and :meth:`cat` act on those fields and keep the others.
    """

    @property
    def channels(self) -> torch.Tensor:
        """The mask channels (B, k, H, W) concatenated to the network input, unscaled."""
        raise NotImplementedError

    @property
    def sid_mask(self) -> torch.Tensor | None:
        """0/1 mask (B, 1, H, W) that restricts the SiD integrand and its weight, or ``None`` for the
        whole image."""
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """What the networks see of images x (B, C, H, W); same shape, differentiable in x."""
        raise NotImplementedError

    def to(self, device) -> "Condition":
        """A copy with every tensor field on ``device``."""
        return replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        )

    @classmethod
    def cat(cls, parts: list["Condition"]) -> "Condition":
        """One condition for the concatenated batches of ``parts`` (≥ 1, all of this type)."""
        first = parts[0]
        tensors = [f.name for f in fields(first) if isinstance(getattr(first, f.name), torch.Tensor)]
        return replace(first, **{name: torch.cat([getattr(p, name) for p in parts]) for name in tensors})


class Operator(nn.Module):
    """A forward operator A acting on a batch of images.

    Subclasses keep fixed parts (kernels) as buffers and draw their random parts (masks) only
    through :meth:`sample_params` with an explicit ``torch.Generator``, so the corrupted dataset can
    seed one RNG per image index and every epoch sees the same measurement.

    Class attributes:
        name: registry key used in presets (``corruption.operator``).
        linear: whether A is linear; linear operators implement :meth:`adjoint` exactly
            (⟨A x, y⟩ = ⟨x, Aᵀ y⟩).
        objective_family: which teacher objective family fits the measurements:
            ``"tweedie"`` (EDM / Ambient-Tweedie, docs/method.md §2.2), ``"mask"`` (Ambient Diffusion,
            §2.3) or ``"fourier"`` (Fourier-space Ambient Diffusion, §9).
        cond_channels: mask channels the networks take beside the image (0, or 1 for mask operators,
            whose :meth:`sample_params` then returns at least ``{"mask": …}``, and whose
            :meth:`condition` gives the networks' :class:`Condition`).
        cond_kind: what those channels mean to the preconditioning (:class:`rsd_engine.models.networks.EDMDenoiser`):
            ``"pixel_mask"`` (1 = the pixel is seen) or ``"kspace_mask"`` (a k-space mask: no pixel is seen).
        baseline: name of the restoration baseline of the final evaluation (``"zero-filled"`` for MRI:
            the adjoint of the measurements), or ``None``.
        preview_note: a line the preview prints under its grid (e.g. that k-space is simulated).

    Args:
        channels: image channels C (1 or 3).
        resolution: image side H = W in pixels.
    """

    name: ClassVar[str] = ""
    linear: ClassVar[bool] = True
    objective_family: ClassVar[str] = "tweedie"
    cond_channels: ClassVar[int] = 0
    cond_kind: ClassVar[str] = "pixel_mask"
    baseline: ClassVar[str | None] = None
    preview_note: ClassVar[str] = ""

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.channels = int(channels)
        self.resolution = int(resolution)

    def output_shape(self) -> tuple[int, int, int]:
        """Shape (C', H', W') of one measurement A(x) for an image of shape (C, H, W)."""
        return (self.channels, self.resolution, self.resolution)

    def sample_params(self, batch: int, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw the random parts of A for ``batch`` images (e.g. masks of shape (B, 1, H, W), values 0/1).

        Operators without random parts return ``{}``. ``rng`` is the only source of randomness.
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

    def condition(self, **params: torch.Tensor) -> Condition | None:
        """The networks' :class:`Condition` for measurement parameters drawn by :meth:`sample_params`
        (with the mask already further corrupted where the objective does that); ``None`` for operators
        whose networks take no mask."""
        return None

    def display(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """An image (B, C, H, W) that shows measurements y in grids and in the proximal FID: y itself
        for operators whose measurements are images (the default); the zero-filled adjoint for k-space
        operators."""
        return y

    def preview_panels(self, clean: torch.Tensor, y: torch.Tensor, **params: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows of the operator preview (:mod:`rsd_engine.operators.preview`), top to bottom, as images in [-1, 1].

        Default: ``clean`` (the images), ``measurement`` (y, when it has the image's shape) and
        ``adjoint`` (Aᵀy; y itself for a non-linear operator).
        """
        panels = {"clean": clean}
        if y.shape == clean.shape:
            panels["measurement"] = y
        panels["adjoint"] = self.adjoint(y, **params) if self.linear else y
        return panels
