"""Datasets: clean collections (read only here), their frozen corrupted views, and the evaluation
references.

Clean images enter training only through :class:`CorruptedDataset` (which exposes measurements,
never the clean pixels). :func:`clean_reference` is the one place that hands clean images to
evaluation.
"""

from __future__ import annotations

import torch

from ..measurement import Measurement
from .corrupted import CorruptedDataset, IndexStream, to_float
from .sources import DataError, read_images, source_identity

__all__ = [
    "CorruptedDataset",
    "IndexStream",
    "DataError",
    "to_float",
    "training_measurements",
    "clean_reference",
    "read_images",
    "source_identity",
]


def training_measurements(preset, measurement: Measurement) -> CorruptedDataset:
    """The training set of a validated preset as frozen measurements y = A(x) + σε of ``measurement``.

    Raises:
        DataError: missing or malformed data files (named).
    """
    d = preset.data
    clean = read_images(d.source, d.path, "train", d.channels, d.resolution, d.max_images)
    return CorruptedDataset(clean, measurement)


def _eval_location(preset) -> tuple[str | None, str]:
    d = preset.data
    if d.eval_path:
        return d.eval_path, "test"
    if d.source in ("fashion-mnist", "cifar10"):
        return d.path, "test"
    return d.path, "train"


def clean_reference(preset, n: int) -> tuple[torch.Tensor, str]:
    """Clean held-out images for evaluation only (FID/KID references, PSNR/SSIM targets).

    The test split where the source has one (Fashion-MNIST, CIFAR-10) or ``data.eval_path``;
    otherwise the clean training images, labelled as such.

    Args:
        n: at most this many images (the first n).

    Returns:
        (uint8 images (n', C, H, W), identity string for cache keys and reports).

    Raises:
        DataError: missing or malformed files.
    """
    d = preset.data
    path, split = _eval_location(preset)
    source = d.source if not d.eval_path else _infer_source(d.eval_path, d.source)
    images = read_images(source, path, split, d.channels, d.resolution, n)
    return images, f"{source_identity(source, path, split)}:res{d.resolution}:ch{d.channels}"


def _infer_source(path: str, default: str) -> str:
    if path.endswith(".npz"):
        return "npz"
    if default == "cifar10":
        return "cifar10"
    return "image-folder"
