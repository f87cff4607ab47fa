"""Readers of clean image collections, returned as uint8 tensors (N, C, H, W) at the preset's resolution,
or as complex MRI slices (float32 (re, im) channels, :mod:`rsd_engine.data.mri`).

Formats: Fashion-MNIST IDX (Debian package ``dataset-fashion-mnist``), a folder of PNG/JPEG files,
an ``.npz`` array file, the CIFAR-10 "python version" batches, a ZIP written by EDM's ``dataset_tool.py``
(PNG files in numbered folders), NIfTI brain volumes (Debian package ``mricron-data``) and fastMRI
multi-coil ``.h5`` files. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DataError
from .mri import fastmri_slices, mri_identity, nifti_slices

__all__ = ["DataError", "FASHION_MNIST_DIR", "IMAGE_SUFFIXES", "MRI_SOURCES", "check_npz", "read_images", "source_identity"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
_NPZ_KEYS = ("images", "x", "arr_0")
#: Sources of complex MRI slices (:mod:`rsd_engine.data.mri`), read as float32 (re, im) channels.
MRI_SOURCES = ("mri-nifti", "fastmri")


def _read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 (optionally gzipped) image file → uint8 array (N, 28, 28)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        content = f.read()
    if len(content) < 16 or int.from_bytes(content[:4], "big") != 2051:
        raise DataError(f"{path}: not an IDX3 image file (magic 2051 expected)")
    n, h, w = (int.from_bytes(content[i : i + 4], "big") for i in (4, 8, 12))
    if len(content) != 16 + n * h * w:
        raise DataError(f"{path}: truncated IDX file ({len(content)} bytes for {n}×{h}×{w} images)")
    return np.frombuffer(content, dtype=np.uint8, offset=16).reshape(n, h, w)


def _fashion_mnist(split: str, root: Path) -> np.ndarray:
    path = root / _FMNIST_FILES[split]
    if not path.exists():
        raise DataError(
            f"Fashion-MNIST {split} split not found at {path}. Install the Debian package with "
            "`apt-get install dataset-fashion-mnist`, or set data.source/data.path to your own images."
        )
    return _read_idx_images(path)[:, None]


def _image_folder(path: Path, channels: int, resolution: int) -> np.ndarray:
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out = np.empty((len(files), channels, resolution, resolution), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side))
                if side != resolution:
                    im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
                arr = np.asarray(im)
        except OSError as e:
            raise DataError(f"{f}: cannot read image ({e})") from None
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out


def check_npz(path: Path, field: str) -> str:
    """Check an ``.npz`` file of images from its headers alone (no array is read): a zip archive holding
    an array named ``images``, ``x`` or ``arr_0`` of numbers with 3 or 4 dimensions.

    Returns:
        the name of the image array.

    Raises:
        DataError: naming ``field`` and the file, and what is wrong; never advising to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{field}: npz file {path} does not exist")
    not_images = (
        f"{field}: {path} is not an .npz file of images (data.source = 'npz' reads a NumPy .npz archive holding an array "
        f"{' / '.join(_NPZ_KEYS)} of numbers)"
    )
    try:
        with zipfile.ZipFile(path) as z:
            names = [n.removesuffix(".npy") for n in z.namelist()]
            key = next((k for k in _NPZ_KEYS if k in names), None)
            if key is None:
                raise DataError(f"{field}: {path}: no array named {' / '.join(_NPZ_KEYS)} (found {', '.join(names) or 'none'})")
            with z.open(f"{key}.npy") as f:
                fmt = np.lib.format
                read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read_header(f)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{not_images}; it is not a zip of .npy arrays or is damaged") from None
    if dtype.kind not in "biuf" or len(shape) not in (3, 4):
        raise DataError(f"{not_images}; its array {key!r} has dtype {dtype} and shape {shape}")
    return key


def _npz(path: Path, field: str) -> np.ndarray:
    """The image array of an ``.npz`` archive, read without unpickling (objects inside are refused).

    Raises:
        DataError: naming ``field`` and the file (:func:`check_npz`), or a shape that is not a stack of images.
    """
    key = check_npz(path, field)
    try:
        with np.load(path, allow_pickle=False) as z:
            arr = z[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):  # numpy's own words may advise unpickling; never shown
        raise DataError(f"{field}: {path} is not an .npz file of images; it is damaged") from None
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise DataError(f"{path}:{key}: expected (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {arr.shape}")
    if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= -1.0 and hi <= 1.0 and lo < 0:
            arr = (arr.astype(np.float64) * 127.5 + 128).round()
        elif hi <= 1.0:
            arr = (arr.astype(np.float64) * 255).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def _cifar10(path: Path, split: str) -> np.ndarray:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if path.is_dir() and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    arrays = []
    for name in names:
        f = path / name
        if not f.is_file():
            raise DataError(f"CIFAR-10 batch {f} not found (expected the 'python version' folder with data_batch_1..5 and test_batch)")
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = batch.get(b"data") if isinstance(batch, dict) else None
        if data is None:
            raise DataError(f"{f}: no b'data' entry; is this a CIFAR-10 python batch?")
        arrays.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
    return np.concatenate(arrays)


def _edm_zip(path: Path, resolution: int) -> np.ndarray:
    """The images of a ZIP in EDM's ``dataset_tool`` layout: PNG (or other image) files in numbered
    folders (``00000/img00000000.png`` …), read in name order, grey or RGB. ``dataset.json`` (class
    labels) is not needed: the engine's models are unconditional. Every image must already have the
    preset's resolution (dataset_tool writes one size), so nothing is resized silently.

    Raises:
        DataError: not a file, not a zip, no images, an unreadable image or one of another size (named).
    """
    if not path.is_file():
        raise DataError(f"EDM dataset zip {path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES)
            if not names:
                raise DataError(
                    f"{path}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); an EDM dataset_tool zip "
                    "holds PNG files in numbered folders"
                )
            arrays = []
            for name in names:
                try:
                    with Image.open(io.BytesIO(z.read(name))) as im:
                        arr = np.asarray(im.convert("L" if im.mode in ("L", "I;16", "I", "1", "LA") else "RGB"))
                except OSError as e:
                    raise DataError(f"{path}:{name}: cannot read image ({e})") from None
                if arr.shape[:2] != (resolution, resolution):
                    raise DataError(
                        f"{path}:{name}: image is {arr.shape[1]}×{arr.shape[0]}, data.resolution = {resolution}; "
                        f"write the zip at {resolution}×{resolution} (dataset_tool.py --resolution={resolution}x{resolution}) "
                        "or set data.resolution to the zip's size"
                    )
                arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a zip file (data.source = 'edm-zip' expects a dataset_tool.py zip)") from None
    if len({a.shape[0] for a in arrays}) > 1:
        raise DataError(f"{path}: mixes grey and RGB images")
    return np.stack(arrays)


def _to_shape(arr: np.ndarray, channels: int, resolution: int, what: str) -> torch.Tensor:
    x = torch.from_numpy(np.array(arr, copy=True))
    if x.shape[1] != channels:
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
            x = (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise DataError(f"{what}: images have {x.shape[1]} channels, data.channels = {channels}")
    h, w = x.shape[2], x.shape[3]
    if (h, w) == (28, 28) and resolution == 32:
        return F.pad(x, (2, 2, 2, 2), value=0).contiguous()
    if (h, w) != (resolution, resolution):
        xf = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        x = xf.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def read_images(source: str, path: str | None, split: str, channels: int, resolution: int, limit: int | None = None) -> torch.Tensor:
    """Read a clean image collection.

    Args:
        source: ``fashion-mnist`` | ``image-folder`` | ``npz`` | ``cifar10`` | ``edm-zip`` | ``mri-nifti`` | ``fastmri``.
        path: file or folder (for fashion-mnist, an optional folder holding the IDX files; for
            mri-nifti, optional NIfTI volumes, default the mricron-data templates).
        split: ``train`` or ``test`` (fashion-mnist, cifar10 and mri-nifti (its held-out slabs) have
            both; the others read ``path``).
        channels: 1 or 3 (grey↔RGB converted when needed); 2 for the MRI sources.
        resolution: output side; Fashion-MNIST 28×28 is zero-padded to 32×32, other sizes are resized.
        limit: keep only the first ``limit`` images.

    Returns:
        uint8 tensor (N, channels, resolution, resolution); for the MRI sources float32
        (N, 2, resolution, resolution), (re, im) of complex images with magnitudes in [0, 1].

    Raises:
        DataError: missing or malformed files, naming the path and the expected format.
    """
    if split not in ("train", "test"):
        raise DataError(f"split {split!r}: allowed train, test")
    if source in MRI_SOURCES:
        if channels != 2:
            raise DataError(f"data.channels {channels}: the {source} source gives complex images, allowed: 2")
        images = nifti_slices(path, split, resolution) if source == "mri-nifti" else fastmri_slices(path, resolution)
        return images[:limit] if limit is not None else images
    if source == "fashion-mnist":
        arr = _fashion_mnist(split, Path(path) if path else FASHION_MNIST_DIR)
    elif source == "image-folder":
        arr = _image_folder(Path(path), channels, resolution)
    elif source == "npz":
        arr = _npz(Path(path), "data.path" if split == "train" else "data.eval_path")
    elif source == "cifar10":
        arr = _cifar10(Path(path), split)
    elif source == "edm-zip":
        arr = _edm_zip(Path(path), resolution)
    else:
        raise DataError(f"data.source {source!r}: allowed fashion-mnist, image-folder, npz, cifar10, edm-zip, mri-nifti, fastmri")
    if limit is not None:
        arr = arr[:limit]
    if len(arr) == 0:
        raise DataError(f"{source} {path or ''} {split}: no images")
    return _to_shape(arr, channels, resolution, f"{source} {path or ''}")


def source_identity(source: str, path: str | None, split: str) -> str:
    """A string naming a collection for cache keys: source, resolved path, split, file size and mtime
    (for the MRI sources every file, and the slicing rules' version: :func:`rsd_engine.data.mri.mri_identity`)."""
    if source in MRI_SOURCES:
        return mri_identity(source, path, split)
    if source == "fashion-mnist":
        p = (Path(path) if path else FASHION_MNIST_DIR) / _FMNIST_FILES.get(split, "")
    else:
        p = Path(path) if path else Path(".")
    try:
        st = p.stat()
        stamp = f"{st.st_size}-{int(st.st_mtime)}"
    except OSError:
        stamp = "missing"
    return f"{source}:{p.resolve()}:{split}:{stamp}"
