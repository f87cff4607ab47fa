"""Coil sensitivity maps S of multi-coil MRI (docs/method.md §9), from the SigPy library.

Simulated maps come from SigPy's birdcage model (``sigpy.mri.birdcage_maps``: C coils evenly spaced
on a ring around the field of view); maps of real data without stored maps are estimated from the
central calibration (ACS) region of k-space with SigPy's ESPIRiT (Uecker et al., "ESPIRiT — an
eigenvalue approach to autocalibrating parallel MRI", MRM 2014; ``sigpy.mri.app.EspiritCalib``).
SigPy is imported only when maps are made (its numba back end takes seconds to load).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["normalise_maps", "birdcage_maps", "espirit_maps"]


def normalise_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale maps pixel-wise so that Σ_c |S_c|² = 1 wherever any coil is sensitive (left 0 elsewhere).

    With this normalisation S: x ↦ (S_c x)_c is an isometry on the support, so the coil combination
    Σ_c conj(S_c)·(S_c x) returns x and the root-sum-of-squares of the coil images equals |x|.

    Args:
        maps: complex (…, C, H, W).
        eps: Σ|S|² at or below this counts as no sensitivity.

    Returns:
        complex tensor of the same shape and dtype.
    """
    power = maps.abs().square().sum(dim=-3, keepdim=True)
    scale = torch.where(power > eps, power.clamp(min=eps).rsqrt(), torch.zeros_like(power))
    return maps * scale


def birdcage_maps(coils: int, height: int, width: int, radius: float = 1.5) -> torch.Tensor:
    """Simulated birdcage coil maps (``sigpy.mri.birdcage_maps``), normalised by :func:`normalise_maps`.

    Args:
        coils: C ≥ 1 coils on one ring.
        height, width: map size in pixels.
        radius: ring radius relative to half the field of view (SigPy's ``r``; 1.5 by default): larger
            rings give flatter maps.

    Returns:
        complex64 (C, height, width) with Σ_c |S_c|² = 1 at every pixel; smooth, and not flat for C > 1.

    Raises:
        ValueError: coils < 1, a size < 1 or radius ≤ 0.
    """
    if coils < 1 or height < 1 or width < 1 or not radius > 0:
        raise ValueError(f"birdcage maps need coils ≥ 1, positive sizes and radius > 0; got {coils}, {height}×{width}, {radius}")
    import sigpy.mri

    maps = sigpy.mri.birdcage_maps((int(coils), int(height), int(width)), r=float(radius), nzz=int(coils), dtype=np.complex128)
    return normalise_maps(torch.from_numpy(maps)).to(torch.complex64)


def espirit_maps(kspace: np.ndarray, calib_width: int = 24) -> torch.Tensor:
    """Sensitivity maps estimated from fully sampled, centred multi-coil k-space with SigPy's ESPIRiT
    (one set of maps, SigPy's default threshold 0.02, kernel width 6 and crop 0.95).

    Args:
        kspace: complex (C, H, W), zero frequency at (H // 2, W // 2).
        calib_width: side of the central calibration square in k-space lines (capped at H and W).

    Returns:
        complex64 (C, H, W) normalised by :func:`normalise_maps` (0 where ESPIRiT finds no signal).
    """
    from sigpy.mri.app import EspiritCalib

    width = int(min(calib_width, kspace.shape[-1], kspace.shape[-2]))
    maps = EspiritCalib(np.asarray(kspace, dtype=np.complex64), calib_width=width, show_pbar=False).run()
    return normalise_maps(torch.from_numpy(np.asarray(maps)).to(torch.complex64))
