"""Readers of clean complex MRI slices (docs/method.md §9): 2-D slices of NIfTI magnitude volumes with a
simulated phase (``mri-nifti``), and coil-combined fully sampled fastMRI multi-coil k-space (``fastmri``).

Both return float32 tensors (N, 2, R, R) holding (re, im) of square complex images at the preset's
resolution R, with magnitudes in [0, 1] (the complex image x = m·e^{iφ}). These are the clean images
the measurements are simulated from and the held-out references of the evaluation; training only
ever sees their measurements.

``mri-nifti``: every 3-D volume is cut along its three axes, one slice per ``SLICE_SPACING_MM``; a
slice is kept when its foreground (voxels above 10 % of the volume's 99.5th percentile) covers at
least ``MIN_AREA`` of the largest foreground of that axis ("enough brain"). Of the kept slices of
each volume and axis, the central slab ``EVAL_SLAB`` is held out for evaluation (split ``test``) and a
guard of ``GUARD`` of the slices on each side of it is in neither split, so the nearest training
slice is a few millimetres away. Each slice is zero-padded to a square, resampled to R × R
(bilinear, antialiased), scaled by the volume's 99.5th percentile (clipped to 1) and given a smooth,
frozen random phase (:func:`smooth_phase`: real MRI images are complex).

``fastmri``: ``.h5`` files in the fastMRI multi-coil layout (``kspace``: slices × coils × H × W,
complex, zero frequency centred). Sensitivity maps come from the file (``sens_maps``, ``s_maps`` or
``maps``, same shape as ``kspace``) or are estimated with ESPIRiT
(:func:`rsd_engine.operators.coils.espirit_maps`); the coil-combined image Σ conj(S_c)·F⁻¹(k_c) is
cropped to the paper's 384 × 320, zero-padded to 384 × 384, resampled to R × R and scaled by the
99.5th percentile of its volume's magnitudes (magnitudes above it clipped to 1, phase kept).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..operators.coils import espirit_maps
from ..operators.fourier import ifft2c, to_channels
from ..seeding import MRI_PHASE_SEED, item_rng, mix_seed
from .errors import DataError

__all__ = [
    "NIFTI_DIR",
    "NIFTI_DEFAULT",
    "FASTMRI_CROP",
    "smooth_phase",
    "nifti_files",
    "nifti_slices",
    "fastmri_files",
    "fastmri_slices",
    "check_mri_source",
    "mri_identity",
]

#: Where the Debian package ``mricron-data`` puts its templates, and the two T1 volumes used by default:
#: Colin27 (ch2better, 0.5 mm, whole head) and the INIA19 rhesus-macaque template (brain only).
NIFTI_DIR = Path("/usr/share/mricron/templates")
NIFTI_DEFAULT = ("ch2better.nii.gz", "inia19-t1-brain.nii.gz")
SLICE_SPACING_MM = 0.5
MIN_AREA = 0.4
EVAL_SLAB = (0.4, 0.6)
GUARD = 0.05
FASTMRI_CROP = (384, 320)
MAP_KEYS = ("sens_maps", "s_maps", "maps")
#: Version of the slicing rules, part of every MRI collection's identity (reference-statistics cache keys).
RULES = "mri-slices-v1"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ORDER_SEED = 7_000_003


def smooth_phase(height: int, width: int, rng: torch.Generator) -> torch.Tensor:
    """A smooth random phase map φ (radians), a random quadratic surface in the normalised coordinates
    u, v ∈ [-1, 1]: φ = a₀ + a₁u + a₂v + a₃uv + a₄u² + a₅v², a₀ ~ U[-π, π), a₁…a₅ ~ N(0, (π/4)²).

    Args:
        height, width: size in pixels.
        rng: the only source of randomness (one per slice freezes the phase).

    Returns:
        float32 (height, width).
    """
    a = torch.randn(6, generator=rng) * (torch.pi / 4)
    a[0] = (torch.rand((), generator=rng) * 2 - 1) * torch.pi
    v, u = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return a[0] + a[1] * u + a[2] * v + a[3] * u * v + a[4] * u**2 + a[5] * v**2


def _square_resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Zero-pad (N, C, a, b) to a centred square, then resample to (N, C, R, R), bilinear and antialiased."""
    a, b = images.shape[-2:]
    side = max(a, b)
    top, left = (side - a) // 2, (side - b) // 2
    padded = F.pad(images, (left, side - b - left, top, side - a - top))
    if side == resolution:
        return padded
    return F.interpolate(padded, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


def _files(path: str | Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(f"{what} {p} does not exist")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(suffixes))
    if not files:
        raise DataError(f"{what} folder {p} holds no {' or '.join(suffixes)} files")
    return files


def nifti_files(path: str | None) -> list[Path]:
    """The NIfTI volumes of ``data.path``: a file, a folder of .nii/.nii.gz files, or (``None``) the two
    mricron-data templates :data:`NIFTI_DEFAULT`.

    Raises:
        DataError: missing file or folder (naming it; for the default, how to install it).
    """
    if path is None:
        files = [NIFTI_DIR / name for name in NIFTI_DEFAULT]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(
                f"brain volumes {', '.join(missing)} not found: install the Debian package with "
                "`apt-get install mricron-data`, or set data.path to NIfTI volumes"
            )
        return files
    return _files(path, _NIFTI_SUFFIXES, "NIfTI volume")


def _nifti_shape(file: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Spatial shape and voxel sizes (mm) of a NIfTI volume, from its header only.

    Raises:
        DataError: unreadable, not 3-D (trailing singleton dimensions are dropped) or empty.
    """
    import nibabel

    try:
        header = nibabel.load(str(file)).header
    except Exception as e:  # nibabel raises several types for a file that is not NIfTI
        raise DataError(f"{file}: cannot read as NIfTI ({e})") from None
    shape = tuple(int(s) for s in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{file}: a 3-D volume is needed, got shape {shape}")
    if min(shape) == 0:
        raise DataError(f"{file}: the volume is empty (shape {shape})")
    return shape, tuple(float(z) for z in header.get_zooms()[:3])


def _volume(file: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """The volume as float32 (X, Y, Z) and its voxel sizes.

    Raises:
        DataError: not 3-D, empty, or no signal.
    """
    import nibabel

    shape, zooms = _nifti_shape(file)
    vol = np.asarray(nibabel.load(str(file)).dataobj, dtype=np.float32).reshape(shape)
    if not np.isfinite(vol).all() or vol.max() <= 0:
        raise DataError(f"{file}: the volume holds no positive finite intensities")
    return vol, zooms


def _slab_split(count: int) -> tuple[list[int], list[int]]:
    """Positions (0 … count − 1) of the training slices and of the held-out slab among ``count`` kept slices."""
    lo, hi = round(EVAL_SLAB[0] * count), round(EVAL_SLAB[1] * count)
    guard = max(1, round(GUARD * count))
    return [i for i in range(count) if i < lo - guard or i >= hi + guard], list(range(lo, hi))


@functools.lru_cache(maxsize=4)
def _nifti_collection(files: tuple[str, ...], stamps: tuple[str, ...], resolution: int) -> dict[str, torch.Tensor]:
    """Both splits of the slices of ``files`` at ``resolution`` (see the module docstring); cached per
    process, keyed by the files' size and modification time (``stamps``)."""
    out: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    for v, name in enumerate(files):
        vol, zooms = _volume(Path(name))
        vol = np.clip(vol / np.percentile(vol[vol > 0], 99.5), 0.0, 1.0)
        foreground = vol > 0.1
        for axis in range(3):
            step = max(1, round(SLICE_SPACING_MM / zooms[axis]))
            area = foreground.sum(axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
            picked = [i for i in range(0, vol.shape[axis], step) if area[i] >= MIN_AREA * area.max()]
            train, test = _slab_split(len(picked))
            for split, positions in (("train", train), ("test", test)):
                if not positions:
                    continue
                index = [picked[p] for p in positions]
                slices = np.rot90(np.moveaxis(np.take(vol, index, axis=axis), axis, 0), axes=(1, 2))
                magnitude = _square_resize(torch.from_numpy(slices.copy())[:, None], resolution)[:, 0].clamp(0, 1)
                phases = torch.stack(
                    [
                        smooth_phase(resolution, resolution, item_rng(MRI_PHASE_SEED, mix_seed((v, axis, i), (1_000_003, 100_003, 1))))
                        for i in index
                    ]
                )
                out[split].append(to_channels(torch.polar(magnitude, phases)[:, None]))
    result = {}
    for split, parts in out.items():
        images = torch.cat(parts) if parts else torch.empty(0, 2, resolution, resolution)
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(_ORDER_SEED))
        result[split] = images[order].contiguous()
    return result


def _stamps(files: list[Path]) -> tuple[str, ...]:
    return tuple(f"{f.stat().st_size}-{int(f.stat().st_mtime)}" for f in files)


def nifti_slices(path: str | None, split: str, resolution: int) -> torch.Tensor:
    """Complex slices of the NIfTI volumes at ``path`` (see the module docstring).

    Args:
        path: ``data.path`` (``None``: the mricron-data templates).
        split: ``train`` or ``test`` (the held-out slabs).
        resolution: side R of the square output.

    Returns:
        float32 (N, 2, R, R), |x| ≤ 1, in a fixed shuffled order (any prefix mixes volumes and axes).

    Raises:
        DataError: missing files, a volume that is not 3-D or is empty, no slice kept.
    """
    files = nifti_files(path)
    images = _nifti_collection(tuple(str(f.resolve()) for f in files), _stamps(files), int(resolution))[split]
    if images.shape[0] == 0:
        raise DataError(f"NIfTI volumes {', '.join(map(str, files))}: no {split} slice has enough foreground")
    return images


def fastmri_files(path: str | None) -> list[Path]:
    """The ``.h5`` files of ``data.path`` (a file or a folder of them).

    Raises:
        DataError: no path, or a missing file or folder.
    """
    if path is None:
        raise DataError("data.path: the fastmri source needs a .h5 file or a folder of them")
    return _files(path, (".h5",), "fastMRI file")


def _open_h5(file: Path):
    """``h5py.File(file, "r")``.

    Raises:
        DataError: the file is not readable as HDF5.
    """
    import h5py

    try:
        return h5py.File(file, "r")
    except OSError as e:
        raise DataError(f"{file}: cannot read as HDF5 ({e})") from None


def _fastmri_shape(f, file: Path) -> tuple[int, ...]:
    """Shape of ``kspace`` in an open h5 file, checked against the fastMRI layout and the crop.

    Raises:
        DataError: no ``kspace``, not 4-D complex, or slices smaller than :data:`FASTMRI_CROP`.
    """
    if "kspace" not in f:
        raise DataError(
            f"{file}: no 'kspace' dataset (found {', '.join(f.keys()) or 'nothing'}); a fastMRI multi-coil "
            "file holds kspace of shape slices × coils × H × W"
        )
    k = f["kspace"]
    if k.ndim != 4 or k.dtype.kind != "c":
        raise DataError(f"{file}: kspace has shape {k.shape} and type {k.dtype}; expected complex slices × coils × H × W")
    if k.shape[2] < FASTMRI_CROP[0] or k.shape[3] < FASTMRI_CROP[1]:
        raise DataError(
            f"{file}: slices of {k.shape[2]}×{k.shape[3]} are smaller than the fastMRI crop {FASTMRI_CROP[0]}×{FASTMRI_CROP[1]}"
        )
    return tuple(k.shape)


def _fastmri_volume(file: Path, resolution: int) -> torch.Tensor:
    """The coil-combined, cropped, scaled slices of one file: float32 (S, 2, R, R).

    Raises:
        DataError: see :func:`_fastmri_shape`; stored maps of another shape than kspace.
    """
    with _open_h5(file) as f:
        shape = _fastmri_shape(f, file)
        kspace = torch.from_numpy(np.asarray(f["kspace"])).to(torch.complex64)
        key = next((k for k in MAP_KEYS if k in f), None)
        if key is not None and tuple(f[key].shape) != shape:
            raise DataError(f"{file}: {key} has shape {tuple(f[key].shape)}, kspace {shape}; they must match")
        maps = torch.from_numpy(np.asarray(f[key])).to(torch.complex64) if key else torch.stack([espirit_maps(k.numpy()) for k in kspace])
    image = (maps.conj() * ifft2c(kspace)).sum(dim=1)  # (S, H, W)
    h, w = image.shape[-2:]
    ch, cw = FASTMRI_CROP
    image = image[:, (h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    image = image / max(float(torch.quantile(image.abs().flatten()[:: max(1, image.numel() // 1_000_000)], 0.995)), 1e-12)
    image = image / image.abs().clamp(min=1.0)
    return _square_resize(to_channels(image[:, None]), resolution)


def fastmri_slices(path: str | None, resolution: int) -> torch.Tensor:
    """Every slice of every fastMRI file at ``path``, in file order (see the module docstring).

    Returns:
        float32 (N, 2, R, R), |x| ≤ 1.

    Raises:
        DataError: missing files, a file without ``kspace`` or of another layout, slices smaller than the crop.
    """
    return torch.cat([_fastmri_volume(f, int(resolution)) for f in fastmri_files(path)])


def check_mri_source(source: str, path: str | None) -> None:
    """Check an MRI source's files from their headers only (fast), before a run starts.

    Raises:
        DataError: a missing file, a NIfTI volume that is not 3-D or is empty, a fastMRI file without
            ``kspace`` or with slices smaller than the crop.
    """
    if source == "mri-nifti":
        for f in nifti_files(path):
            _nifti_shape(f)
        return
    for file in fastmri_files(path):
        with _open_h5(file) as f:
            _fastmri_shape(f, file)


def mri_identity(source: str, path: str | None, split: str) -> str:
    """A string naming an MRI collection for cache keys: source, every file with its size and
    modification time, the split and the slicing rules' version."""
    files = nifti_files(path) if source == "mri-nifti" else fastmri_files(path)
    return f"{source}:{';'.join(f'{f.resolve()}@{s}' for f, s in zip(files, _stamps(files)))}:{split}:{RULES}"
