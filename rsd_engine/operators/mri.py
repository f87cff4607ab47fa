"""Multi-coil MRI: A = M·F·S on complex images stored as (re, im) channels (docs/method.md §9).

S multiplies the image by C coil sensitivity maps (Σ_c |S_c|² = 1), F is the centred orthonormal 2-D
FFT (:mod:`rsd_engine.operators.fourier`) and M keeps a set of phase-encode lines (columns of
k-space). This is the forward model of RSD's MRI experiment (Zhang et al., arXiv 2505.13377) and of
Fourier-space Ambient Diffusion (Aali et al., "Ambient Diffusion Posterior Sampling", 2024): ⌊W/R⌋
lines kept at acceleration R, of which a centred block of ACS lines (20 of 320 in the paper) is always
kept and the rest are drawn uniformly; the further mask Ã of the Ambient objective removes a few more
non-ACS lines (54, 16, 8 and 5 at R = 2, 4, 6, 8 and W = 320 in the paper: the line count of
acceleration R + 1 applied to the kept lines, :func:`default_further_lines`).

Line masks have shape (B, 1, 1, W), values 0/1, shared by every row and coil. The coil maps are a
random parameter of A drawn per image like the mask: a window of a birdcage map set larger than the
image, at a random offset (the head's position inside the coil array), so every image index has its
own frozen maps and fresh draws for the generator come from the same law (§9 gives the reasons).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Condition, Operator
from .coils import birdcage_maps
from .fourier import fft2c, ifft2c, to_channels, to_complex

__all__ = ["MultiCoilMRI", "KSpaceLines", "default_acs_lines", "default_further_lines", "acs_block"]

#: The paper's k-space width and ACS count (fastMRI brain, 320 phase-encode lines, 20 ACS lines).
PAPER_WIDTH, PAPER_ACS = 320, 20


def default_acs_lines(width: int) -> int:
    """ACS lines for a k-space of ``width`` lines: the paper's 20 of 320 scaled to the width, at least 2."""
    return max(2, round(PAPER_ACS * int(width) / PAPER_WIDTH))


def default_further_lines(width: int, acceleration: int) -> int:
    """Non-ACS lines the further mask Ã removes from the ⌊W/R⌋ kept lines: Ã keeps ⌊⌊W/R⌋·R/(R + 1)⌋,
    the kept lines thinned as if to acceleration R + 1. At W = 320 this is the paper's table (54, 16, 8,
    5 for R = 2, 4, 6, 8); at other widths it is the same rule.

    Raises:
        ValueError: acceleration < 1.
    """
    if acceleration < 1:
        raise ValueError(f"acceleration {acceleration}: must be an integer ≥ 1")
    kept = int(width) // int(acceleration)
    return kept - (kept * acceleration) // (acceleration + 1)


def acs_block(width: int, lines: int) -> torch.Tensor:
    """Indices of the centred ACS block: ``lines`` consecutive columns around the zero frequency
    W // 2 (lines // 2 of them before it), for odd and even W. Returns a LongTensor (lines,).

    Raises:
        ValueError: lines outside [1, width].
    """
    if not 1 <= lines <= width:
        raise ValueError(f"acs_lines {lines}: must be in [1, {width}] (the k-space width)")
    start = width // 2 - lines // 2
    return torch.arange(start, start + lines)


@dataclass(frozen=True)
class KSpaceLines(Condition):
    """The networks' condition of multi-coil MRI (docs/method.md §9): they see P_M x = AᴴA x, the
    coil-combined zero-filled image of the lines in M, and one channel holding the line mask broadcast
    over the rows; the SiD integrand covers the whole image.

    Args:
        op: the operator (its projection).
        lines: (B, 1, 1, W) 0/1 line mask M (for the networks, usually the further mask Ã).
        maps: complex (B, C, H, W) coil maps.
    """

    op: "MultiCoilMRI"
    lines: torch.Tensor
    maps: torch.Tensor

    @property
    def channels(self) -> torch.Tensor:
        """The line mask as an image (B, 1, H, W): column j is 1 where line j is kept."""
        return self.lines.expand(-1, 1, self.maps.shape[-2], -1)

    @property
    def sid_mask(self) -> None:
        """``None``: the generator's loss covers the whole 2-channel image."""
        return None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """P_M x = AᴴA x for complex images x (B, 2, H, W)."""
        return self.op.normal(x, mask=self.lines, maps=self.maps)


class MultiCoilMRI(Operator):
    """Multi-coil MRI with phase-encode line undersampling: A x = M·F·(S_c x)_c (docs/method.md §9).

    Linear, with the exact adjoint Aᴴ y = Σ_c conj(S_c)·F⁻¹(M·y_c), the coil-combined zero-filled image.
    With every line kept, AᴴA = I (Σ|S|² = 1 and F unitary). Images are complex, (B, 2, H, W) (re, im);
    measurements are multi-coil k-space, (B, 2C, H, W) (re, im per coil), zero on unmeasured lines.

    Args:
        channels: must be 2 (re, im).
        resolution: image side H = W = k-space width in lines.
        acceleration: R ≥ 1 (integer); ⌊W/R⌋ lines are kept.
        acs_lines: centred lines always kept (default :func:`default_acs_lines`); ≤ ⌊W/R⌋.
        coils: C ≥ 1.
        further_lines: non-ACS lines the further mask Ã removes (default :func:`default_further_lines`);
            at most ⌊W/R⌋ − acs_lines.
        coil_radius: ring radius of the birdcage, relative to half the field of view (SigPy's r).
        coil_shift: largest offset of the head inside the coil array, as a fraction of the image side.

    Raises:
        ValueError: a parameter outside its range, naming it.
    """

    name = "multicoil_mri"
    linear = True
    objective_family = "fourier"
    cond_channels = 1
    cond_kind = "kspace_mask"
    baseline = "zero-filled"
    preview_note = (
        "k-space is simulated from the real slices with synthetic birdcage coils (not acquired); "
        "each image has its own frozen line mask and coil maps"
    )

    def __init__(
        self,
        channels: int,
        resolution: int,
        acceleration: int = 4,
        acs_lines: int | None = None,
        coils: int = 4,
        further_lines: int | None = None,
        coil_radius: float = 1.5,
        coil_shift: float = 0.125,
    ):
        super().__init__(channels, resolution)
        width = self.resolution
        if self.channels != 2:
            raise ValueError(f"channels {channels}: multicoil_mri needs complex images, allowed: 2 (re, im)")
        if int(acceleration) != acceleration or acceleration < 1:
            raise ValueError(f"acceleration {acceleration}: must be an integer ≥ 1")
        if int(coils) != coils or coils < 1:
            raise ValueError(f"coils {coils}: must be an integer ≥ 1")
        self.acceleration, self.coils = int(acceleration), int(coils)
        self.lines_kept = width // self.acceleration
        self.acs_lines = default_acs_lines(width) if acs_lines is None else int(acs_lines)
        if self.acs_lines > width:
            raise ValueError(f"acs_lines {self.acs_lines}: more than the {width} lines of k-space")
        if not 1 <= self.acs_lines <= self.lines_kept:
            raise ValueError(
                f"acs_lines {self.acs_lines}: must be in [1, ⌊W/R⌋ = {self.lines_kept}] (W = {width}, R = {self.acceleration})"
            )
        free = self.lines_kept - self.acs_lines
        self.further_lines = min(default_further_lines(width, self.acceleration), free) if further_lines is None else int(further_lines)
        if not 0 <= self.further_lines <= free:
            raise ValueError(f"further_lines {self.further_lines}: must be in [0, {free}] (the non-ACS lines kept)")
        if not coil_radius > 0 or not 0 <= coil_shift <= 1:
            raise ValueError(f"coil_radius {coil_radius} must be > 0 and coil_shift {coil_shift} in [0, 1]")
        self.pad = round(float(coil_shift) * width)
        acs = acs_block(width, self.acs_lines)
        others = torch.ones(width, dtype=torch.bool)
        others[acs] = False
        self.register_buffer("acs", acs, persistent=False)
        self.register_buffer("others", torch.nonzero(others).reshape(-1), persistent=False)
        side = width + 2 * self.pad
        self.register_buffer("coil_bank", birdcage_maps(self.coils, side, side, coil_radius), persistent=False)

    def output_shape(self) -> tuple[int, int, int]:
        """(2C, H, W): real and imaginary part of each coil's k-space."""
        return (2 * self.coils, self.resolution, self.resolution)

    def sample_params(self, batch: int, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw each image's line mask and coil maps from ``rng`` only.

        Returns:
            ``{"mask": (B, 1, 1, W) float32 0/1 with ⌊W/R⌋ ones (the ACS block and ⌊W/R⌋ − acs_lines
            lines uniform among the others), "maps": complex64 (B, C, H, W)}``, on the buffers' device.
        """
        dev = rng.device if rng is not None else torch.device("cpu")
        w, n_free = self.resolution, self.lines_kept - self.acs_lines
        scores = torch.rand((batch, self.others.numel()), generator=rng, device=dev)
        picked = self.others.to(dev)[scores.argsort(dim=1)[:, :n_free]]
        mask = torch.zeros(batch, w, device=dev)
        mask[:, self.acs.to(dev)] = 1.0
        mask.scatter_(1, picked, 1.0)
        offsets = torch.randint(0, 2 * self.pad + 1, (batch, 2), generator=rng, device=dev).tolist()
        maps = (
            torch.stack([self.coil_bank[:, r : r + w, c : c + w] for r, c in offsets])
            if batch
            else self.coil_bank.new_zeros(0, self.coils, w, w)
        )
        return {"mask": mask.reshape(batch, 1, 1, w).to(self.coil_bank.device), "maps": maps}

    def further_mask(self, mask: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """The Ambient further mask Ã ⊂ M: ``further_lines`` of each row's kept non-ACS lines, drawn
        uniformly, set to 0 (a fresh draw per call: a training-time corruption, not part of A).

        Args:
            mask: (B, 1, 1, W) 0/1 with at least ``further_lines`` kept non-ACS lines per row.
            rng: source of the draw (``None`` → torch's global RNG).

        Returns:
            Ã, same shape, dtype and device; the ACS block untouched.
        """
        if self.further_lines == 0:
            return mask.clone()
        dev = rng.device if rng is not None else mask.device
        others = self.others.to(mask.device)
        kept = mask.reshape(mask.shape[0], -1)[:, others] > 0
        scores = torch.rand(kept.shape, generator=rng, device=dev).to(mask.device)
        scores = torch.where(kept, scores, torch.full_like(scores, -1.0))
        drop = others[scores.topk(self.further_lines, dim=1).indices]
        out = mask.clone().reshape(mask.shape[0], -1)
        out.scatter_(1, drop, 0.0)
        return out.reshape(mask.shape)

    @staticmethod
    def _parts(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "mask" not in params or "maps" not in params:
            raise ValueError("multicoil_mri needs its line mask and coil maps: call op(x, **op.sample_params(batch, rng))")
        return params["mask"], params["maps"]

    def forward(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """A x = M·F(S_c x): complex images (B, 2, H, W) → k-space (B, 2C, H, W), zero off the mask.
        float64 input computes in complex128. Differentiable in x.

        Raises:
            ValueError: missing ``mask`` or ``maps``.
        """
        mask, maps = self._parts(params)
        z = to_complex(x)
        return to_channels(fft2c(maps.to(z.dtype) * z) * mask.to(x.dtype))

    def adjoint(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Aᴴ y = Σ_c conj(S_c)·F⁻¹(M·y_c): k-space (B, 2C, H, W) → complex images (B, 2, H, W), the
        coil-combined zero-filled image.

        Raises:
            ValueError: missing ``mask`` or ``maps``.
        """
        mask, maps = self._parts(params)
        coil_images = ifft2c(to_complex(y) * mask.to(y.dtype))
        return to_channels((maps.to(coil_images.dtype).conj() * coil_images).sum(dim=1, keepdim=True))

    def normal(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """P_M x = AᴴA x for complex images (B, 2, H, W); P_M = I when every line is kept."""
        return self.adjoint(self.forward(x, **params), **params)

    def condition(self, **params: torch.Tensor) -> KSpaceLines:
        """:class:`KSpaceLines` of ``mask`` (B, 1, 1, W) and ``maps`` (B, C, H, W).

        Raises:
            ValueError: missing ``mask`` or ``maps``.
        """
        mask, maps = self._parts(params)
        return KSpaceLines(self, mask, maps)

    def display(self, y: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """The zero-filled image Aᴴ y (B, 2, H, W) (grids and the proximal FID show its magnitude)."""
        return self.adjoint(y, **params)

    def preview_panels(self, clean: torch.Tensor, y: torch.Tensor, **params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preview rows: ``kspace_mask`` (the line mask, white = measured), ``coil_image`` (coil 1's
        image from its undersampled k-space, complex), ``zero_filled`` (Aᴴ y) and ``clean`` (x)."""
        mask, _ = self._parts(params)
        lines = mask.expand(-1, 1, self.resolution, -1).to(clean.dtype) * 2 - 1
        coil_one = to_channels(ifft2c(to_complex(y[:, :2]) * mask))
        return {"kspace_mask": lines, "coil_image": coil_one, "zero_filled": self.adjoint(y, **params), "clean": clean}
