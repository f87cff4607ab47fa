"""Operator preview: what the preset's corruption does to images, before any training.

A grid of rows of n images each, as the operator lays them out (:meth:`Operator.preview_panels`):
clean held-out images | their measurements y = A(x) + σε | the adjoint Aᵀy (for masks: the
zero-filled measurement); for multi-coil MRI the k-space line mask | coil 1's zero-filled image | the
coil-combined zero-filled image | the clean image, complex images shown as magnitudes. The clean
images come from :func:`rsd_engine.data.clean_reference` (the evaluation split, never training data)
and are corrupted exactly as the training set is, by the same
:class:`rsd_engine.operators.measurement.Measurement` (one RNG per image index from
``(corruption.seed, index)``, docs/method.md §1). All pixels go through the single quantiser
:func:`rsd_engine.evaluate.metrics.quantize` (via :mod:`rsd_engine.evaluate.grids`).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from ..data import CorruptedDataset, clean_reference, to_float
from ..evaluate.grids import grid_image
from ..evaluate.metrics import display_images
from ..io.runs import atomic_write_bytes
from .measurement import Measurement

__all__ = ["PANEL_LABELS", "preview_rows", "rows_image", "preview_grid"]

#: What each preview row shows (keys of :meth:`Operator.preview_panels`).
PANEL_LABELS = {
    "clean": "clean test images (shown for evaluation only)",
    "measurement": "measurements y = A(x) + σε",
    "adjoint": "adjoint Aᵀy",
    "kspace_mask": "k-space line mask (white = measured phase-encode line)",
    "coil_image": "coil 1 image from its undersampled k-space (zero-filled, magnitude)",
    "zero_filled": "zero-filled coil combination |Aᴴy|",
}


@torch.no_grad()
def preview_rows(preset, measurement: Measurement, n: int = 16) -> dict[str, torch.Tensor]:
    """The rows shown by :func:`preview_grid`, top to bottom.

    Args:
        preset: a validated :class:`rsd_engine.io.config.Preset` (where the clean images come from).
        measurement: the preset's forward model (:func:`rsd_engine.assembly.build_measurement`).
        n: number of images ≥ 1 (fewer if the evaluation split is smaller).

    Returns:
        the operator's panels (:meth:`Operator.preview_panels`, keys in :data:`PANEL_LABELS`), each
        float32 (n', C, H, W) with clean images in [-1, 1] and measurements unclipped (noise may leave
        [-1, 1]).

    Raises:
        ValueError: n < 1.
        rsd_engine.data.DataError: missing or malformed data files.
    """
    if n < 1:
        raise ValueError(f"n {n}: must be ≥ 1")
    clean_u8, _ = clean_reference(preset, n)
    data = CorruptedDataset(clean_u8, measurement)
    y, params = data.measurements(range(len(data)))
    return measurement.op.preview_panels(to_float(clean_u8), y, **params)


def rows_image(rows: dict[str, torch.Tensor], path: str | Path | None = None) -> Image.Image:
    """Tile preview rows (:func:`preview_rows`) into one grid, one row each; complex images appear as
    their magnitude (:func:`rsd_engine.evaluate.metrics.display_images`).

    Args:
        rows: name → images (n, C, H, W), the same n for every row.
        path: if given, the grid is also written there as PNG (atomically).

    Returns:
        PIL image, mode "L" for grey and complex data and "RGB" for colour data, 1-pixel black gaps
        between tiles; size (n·(W+1)+1) × (rows·(H+1)+1).
    """
    shown = [display_images(r) for r in rows.values()]
    img = grid_image(torch.cat(shown), columns=shown[0].shape[0])
    if path is not None:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(Path(path), buf.getvalue())
    return img


def preview_grid(preset, measurement: Measurement, n: int = 16, path: str | Path | None = None) -> Image.Image:
    """:func:`rows_image` of :func:`preview_rows`: the preview of n held-out images.

    Raises:
        ValueError: n < 1.
        rsd_engine.data.DataError: missing or malformed data files.
    """
    return rows_image(preview_rows(preset, measurement, n), path)
