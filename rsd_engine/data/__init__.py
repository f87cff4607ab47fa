"""Datasets: clean collections (read only here), their frozen corrupted views, and the evaluation
references.

Clean images enter training only through :class:`CorruptedDataset` (which exposes measurements,
never the clean pixels). :func:`clean_reference` is the one place that hands clean images to
evaluation.
"""

from __future__ import annotations

import torch

from ..operators.measurement import Measurement
from .corrupted import CorruptedDataset, IndexStream, to_float
from .mri import check_mri_source
from .sources import MRI_SOURCES, DataError, check_npz, read_images, source_identity

__all__ = [
    "CorruptedDataset",
    "IndexStream",
    "DataError",
    "to_float",
    "training_measurements",
    "clean_reference",
    "check_data",
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


def check_data(preset) -> None:
    """Cheap checks of a preset's data files before a run folder is made, from their headers: the MRI
    sources' (:func:`rsd_engine.data.mri.check_mri_source`) and npz archives'
    (:func:`rsd_engine.data.sources.check_npz`) for ``data.path`` and ``data.eval_path``. Other sources
    are checked when they are read.

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    d = preset.data
    if d.source in MRI_SOURCES:
        check_mri_source(d.source, d.path)
        if d.eval_path:
            check_mri_source(d.source, d.eval_path)
    if d.source == "npz":
        check_npz(d.path, "data.path")
    if d.eval_path and d.eval_path.endswith(".npz"):
        check_npz(d.eval_path, "data.eval_path")


def _eval_location(preset) -> tuple[str | None, str]:
    d = preset.data
    if d.eval_path:
        return d.eval_path, "test"
    if d.source in ("fashion-mnist", "cifar10", "mri-nifti"):
        return d.path, "test"
    return d.path, "train"


def clean_reference(preset, n: int) -> tuple[torch.Tensor, str]:
    """Clean held-out images for evaluation only (FID/KID references, PSNR/SSIM targets).

    The test split where the source has one (Fashion-MNIST, CIFAR-10) or ``data.eval_path``;
    otherwise the clean training images, labelled as such.

    Args:
        n: at most this many images (the first n).

    Returns:
        (images (n', C, H, W): uint8, or float32 complex (re, im) for the MRI sources; identity string
        for cache keys and reports).

    Raises:
        DataError: missing or malformed files.
    """
    d = preset.data
    path, split = _eval_location(preset)
    source = d.source if not d.eval_path else _infer_source(d.eval_path, d.source)
    images = read_images(source, path, split, d.channels, d.resolution, n)
    return images, f"{source_identity(source, path, split)}:res{d.resolution}:ch{d.channels}"


def _infer_source(path: str, default: str) -> str:
    if default in ("cifar10", *MRI_SOURCES):
        return default
    if path.endswith(".npz"):
        return "npz"
    if path.endswith(".zip"):
        return "edm-zip"
    return "image-folder"
