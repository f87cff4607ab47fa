"""Closed forms of the linear-Gaussian model (docs/method.md §8).

Clean data x ~ N(μ, Σ) in R^d, measurements y = A x + σ_c ε with ε ~ N(0, I). Everything the
theory needs is Gaussian, so every denoiser, sampler endpoint and distance has a closed form:

- Tweedie / Wiener: for v = w + s·n with w ~ N(m, C), E[w | v] = m + C (C + s² I)⁻¹ (v − m)
  (Robbins 1956, Efron 2011 "Tweedie's formula"; the Gaussian case is the Wiener filter).
- The Ambient-Tweedie objective (Daras et al. 2024, "Consistent diffusion meets Tweedie"; RSD,
  arXiv 2505.13377, the noisy-data teacher loss; engine: :func:`rsd_engine.train.objectives.ambient_tweedie_loss`)
  fitted over affine denoisers on measurements y with sample mean ȳ and covariance Ĉ_y is, at every
  s > σ_c, the Tweedie denoiser of N(ȳ, Ĉ_y − σ_c² I): the *clean* measurement law, not the noisy
  one (:func:`ambient_affine_minimiser`).
- Wasserstein-2 between Gaussians (Dowson & Landau 1982; Givens & Shortt 1984).

Vectors are rows: a batch of d-vectors is an array/tensor of shape (B, d). Units: the [-1, 1] image
scale of the engine (σ_c = 0.2 is 25 grey levels).
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.networks import EDMDenoiser

__all__ = [
    "gaussian_denoiser",
    "GaussianDenoiser",
    "ambient_affine_minimiser",
    "psd_sqrt",
    "gaussian_w2",
    "top_eigenspace",
    "principal_angles_deg",
    "off_subspace_variance",
]


def gaussian_denoiser(v: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """E[w | w + s·n = v] for w ~ N(mean, cov), n ~ N(0, I): mean + cov (cov + s² I)⁻¹ (v − mean).

    Tweedie's formula for a Gaussian prior (the Wiener filter); docs/method.md §8.

    Args:
        v: noisy vectors (B, d).
        mean: (d,).
        cov: (d, d), symmetric positive semi-definite.
        sigma: s > 0, a float, a 0-dim tensor or shape (B,).

    Returns:
        (B, d) in the dtype of ``v``.

    Raises:
        ValueError: shapes that do not fit.
    """
    if v.ndim != 2 or mean.shape != (v.shape[1],) or cov.shape != (v.shape[1], v.shape[1]):
        raise ValueError(f"shapes v {tuple(v.shape)}, mean {tuple(mean.shape)}, cov {tuple(cov.shape)}: expected (B, d), (d,), (d, d)")
    dt = v.dtype
    mean, cov = mean.to(dt), cov.to(dt)
    s2 = torch.as_tensor(sigma, dtype=dt, device=v.device).reshape(-1, 1, 1) ** 2
    eye = torch.eye(v.shape[1], dtype=dt, device=v.device)
    gain = cov @ torch.linalg.inv(cov + s2 * eye)  # (1 or B, d, d)
    return mean + ((v - mean).unsqueeze(1) @ gain.transpose(1, 2)).squeeze(1)


class GaussianDenoiser(EDMDenoiser):
    """The exact denoiser of N(mean, cov) as an engine-style network ``net(x, sigma)``.

    D(x; s) = mean + Q diag(c / (c + s²)) Qᵀ (x − mean) with cov = Q diag(c) Qᵀ, i.e.
    :func:`gaussian_denoiser` through one eigendecomposition. Eigenvalues below 0 (an unclipped
    moment estimate) are clipped to 0 so that D is defined at every s > 0.

    As an :class:`rsd_engine.models.networks.EDMDenoiser` whose forward is the exact formula, it has what the
    engine's samplers and losses read (``sigma_data``, ``sigma_min``, ``sigma_max``, ``loss_weight``), so it can stand in for a teacher
    or a fake score in
    :func:`rsd_engine.evaluate.sampling.heun_sample`, :func:`rsd_engine.train.objectives.ambient_tweedie_loss` and
    :func:`rsd_engine.train.distill.sid_generator_loss`.

    Args:
        mean: (d,).
        cov: (d, d) symmetric.
        sigma_data, sigma_min, sigma_max: as in :class:`rsd_engine.models.networks.EDMPrecond` (unused by
            the formula; the samplers read σ_min/σ_max).

    Raises:
        ValueError: shapes that do not fit.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0):
        super().__init__(sigma_data, sigma_min, sigma_max)
        d = mean.numel()
        if mean.shape != (d,) or cov.shape != (d, d):
            raise ValueError(f"mean {tuple(mean.shape)} / cov {tuple(cov.shape)}: expected (d,) and (d, d)")
        cov = 0.5 * (cov + cov.T)
        evals, evecs = torch.linalg.eigh(cov)
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("evals", evals.detach().clamp(min=0))
        self.register_buffer("evecs", evecs.detach())

    @property
    def dim(self) -> int:
        """d, the vector length."""
        return self.mean.numel()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Denoise x of shape (B, d) or (B, …) with d elements per sample (e.g. (B, d, 1, 1));
        σ a float, 0-dim or (B,). Returns x's shape and dtype; differentiable in x."""
        shape, dt = x.shape, x.dtype
        v = x.reshape(shape[0], -1).to(self.mean.dtype)
        s2 = torch.as_tensor(sigma, dtype=v.dtype, device=v.device).reshape(-1, 1) ** 2
        gain = self.evals / (self.evals + s2)  # (1 or B, d)
        coef = ((v - self.mean) @ self.evecs) * gain
        return (self.mean + coef @ self.evecs.T).to(dt).reshape(shape)


def ambient_affine_minimiser(y: torch.Tensor | np.ndarray, noise_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The clean measurement law that the Ambient-Tweedie loss, minimised over affine denoisers on the
    finite measurements y, denoises: N(ȳ, Ĉ_y − σ_c² I) (unclipped; valid for every s > σ_c).

    Derivation (docs/method.md §8): at level s > σ_c the loss draws
    y_t = y + τ n with τ² = s² − σ_c² and regresses y on ŷ = (1 − r) D(y_t) + r y_t, r = σ_c²/s².
    Its affine minimiser is E[y | y_t] = ȳ + Ĉ_y (Ĉ_y + τ² I)⁻¹ (y_t − ȳ), so
    D = ȳ + (Ĉ_y (Ĉ_y + τ² I)⁻¹ − r I)/(1 − r) (y_t − ȳ) = ȳ + C (C + s² I)⁻¹ (y_t − ȳ) with
    C = Ĉ_y − σ_c² I (use Ĉ_y + τ² I = C + s² I). In the population Ĉ_y = AΣAᵀ + σ_c² I, so C = AΣAᵀ:
    Tweedie on the clean law p(Ax) (RSD arXiv 2505.13377 and DSD arXiv 2503.07578, the
    noisy-teacher objective; Daras et al. 2024).

    Args:
        y: measurements (N, d), N ≥ 2.
        noise_sigma: σ_c ≥ 0.

    Returns:
        (mean (d,), cov (d, d)) as float64 numpy arrays; cov may have eigenvalues below 0 (≈ σ_c² √(d/N)).

    Raises:
        ValueError: y not 2-D or fewer than 2 rows, σ_c < 0.
    """
    y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2:
        raise ValueError(f"y of shape {y.shape}: expected (N, d) with N ≥ 2")
    if noise_sigma < 0:
        raise ValueError(f"noise_sigma {noise_sigma} < 0")
    mean = y.mean(0)
    cov = np.cov(y, rowvar=False, bias=True) - noise_sigma**2 * np.eye(y.shape[1])
    return mean, cov


def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric matrix (d, d), negative eigenvalues clipped to 0."""
    c = 0.5 * (c + c.T)
    w, q = np.linalg.eigh(c)
    return (q * np.sqrt(np.clip(w, 0, None))) @ q.T


def gaussian_w2(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    """Wasserstein-2 distance between N(m1, c1) and N(m2, c2) (Dowson & Landau 1982):

    W2² = ‖m1 − m2‖² + tr c1 + tr c2 − 2 tr (c2^½ c1 c2^½)^½. Singular covariances are allowed.

    Args:
        m1, m2: (d,); c1, c2: (d, d) symmetric PSD (tiny negative eigenvalues are clipped).

    Returns:
        W2 ≥ 0, in the units of the vectors.
    """
    r2 = psd_sqrt(c2)
    cross = psd_sqrt(r2 @ c1 @ r2)
    w2sq = float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross))
    return float(np.sqrt(max(w2sq, 0.0)))


def top_eigenspace(c: np.ndarray, r: int) -> np.ndarray:
    """Orthonormal basis (d, r) of the eigenvectors of the r largest eigenvalues of symmetric c (d, d).

    Raises:
        ValueError: r outside 1 … d.
    """
    if not 1 <= r <= c.shape[0]:
        raise ValueError(f"r = {r} outside 1 … {c.shape[0]}")
    w, q = np.linalg.eigh(0.5 * (c + c.T))
    return q[:, np.argsort(w)[::-1][:r]]


def principal_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles between span(a) and span(b) (Björck & Golub 1973), in degrees, ascending.

    Args:
        a: (d, p), b: (d, q), any full-column-rank bases (orthonormalised here).

    Returns:
        min(p, q) angles in [0, 90].
    """
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.sort(np.degrees(np.arccos(np.clip(s, -1.0, 1.0))))


def off_subspace_variance(c: np.ndarray, basis: np.ndarray) -> float:
    """Variance outside span(basis): tr((I − P) c (I − P)) with P the orthogonal projector on span(basis).

    For N(μ, Σ + σ² I) with Σ of rank r and basis = span(Σ) this is (d − r)·σ²: the isotropic
    noise a law "keeps" off the clean subspace.

    Args:
        c: (d, d) covariance; basis: (d, r) full column rank.
    """
    q, _ = np.linalg.qr(basis)
    p_perp = np.eye(c.shape[0]) - q @ q.T
    return float(np.trace(p_perp @ c @ p_perp))
