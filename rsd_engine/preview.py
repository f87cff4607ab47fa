"""Operator preview: what the preset's corruption does to images, before any training.

A grid of three rows of n images each: clean held-out images | their measurements
y = A(x) + σε | the adjoint Aᵀy (for masks: the zero-filled measurement). The clean images come
from :func:`rsd_engine.data.clean_reference` (the evaluation split, never training data) and are
corrupted exactly as the training set is, by the same :class:`rsd_engine.measurement.Measurement`
(one generator per image index from ``(corruption.seed, index)``, docs/method.md §1). All pixels go
through the single quantiser
:func:`rsd_engine.metrics.quantize` (via :mod:`rsd_engine.grids`).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from .data import CorruptedDataset, clean_reference, to_float
from .grids import grid_image
from .measurement import Measurement
from .runs import atomic_write_bytes

__all__ = ["preview_rows", "preview_grid"]


@torch.no_grad()
def preview_rows(preset, measurement: Measurement, n: int = 16) -> dict[str, torch.Tensor]:
    """The tensors shown by :func:`preview_grid`.

    Args:
        preset: a validated :class:`rsd_engine.config.Preset` (where the clean images come from).
        measurement: the preset's forward model (:meth:`Measurement.from_preset`).
        n: number of images ≥ 1 (fewer if the evaluation split is smaller).

    Returns:
        ``{"clean", "measurement", "adjoint"}``, each float32 (n', C, H, W); clean in [-1, 1],
        measurement and adjoint unclipped (noise may leave [-1, 1]); plus the operator's drawn
        parameters (e.g. ``"mask"`` (n', 1, H, W)). For a non-linear operator ``"adjoint"`` is the
        measurement itself.

    Raises:
        ValueError: n < 1.
        rsd_engine.data.DataError: missing or malformed data files.
    """
    if n < 1:
        raise ValueError(f"n {n}: must be ≥ 1")
    clean_u8, _ = clean_reference(preset, n)
    data = CorruptedDataset(clean_u8, measurement)
    y, params = data.measurements(range(len(data)))
    op = measurement.op
    adj = op.adjoint(y, **params) if op.linear else y
    return {"clean": to_float(clean_u8), "measurement": y, "adjoint": adj, **params}


def preview_grid(preset, measurement: Measurement, n: int = 16, path: str | Path | None = None) -> Image.Image:
    """Grid of n clean test images (row 1), their measurements (row 2) and Aᵀy (row 3).

    The measurement row is left out when the operator's output shape differs from the image shape
    (measurement-space operators); every operator registered now is image-shaped.

    Args:
        preset: a validated :class:`rsd_engine.config.Preset`.
        measurement: the preset's forward model.
        n: images per row, ≥ 1.
        path: if given, the grid is also written there as PNG (atomically).

    Returns:
        PIL image, mode "L" for grey and "RGB" for colour data, 1-pixel black gaps between tiles;
        size (n'·(W+1)+1) × (rows·(H+1)+1).

    Raises:
        ValueError: n < 1.
        rsd_engine.data.DataError: missing or malformed data files.
    """
    rows = preview_rows(preset, measurement, n)
    clean, y, adj = rows["clean"], rows["measurement"], rows["adjoint"]
    shown = [clean, y, adj] if y.shape == clean.shape else [clean, adj]
    img = grid_image(torch.cat(shown), columns=clean.shape[0])
    if path is not None:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(Path(path), buf.getvalue())
    return img
