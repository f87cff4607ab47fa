"""Small networks of the linear-Gaussian study (docs/method.md §8).

:class:`MLPDenoiser` is the engine's EDM preconditioning (:class:`rsd_engine.models.networks.EDMDenoiser`)
around an MLP, on d-vectors stored as (B, d, 1, 1) tensors (d channels of a 1×1 image), so the
engine's own losses and samplers take it unchanged.
:class:`LinearGenerator` is the linear one-step generator G(z) = W z + b of the theory.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models.networks import EDMDenoiser

__all__ = ["MLPDenoiser", "LinearGenerator"]


class MLPDenoiser(EDMDenoiser):
    """:class:`rsd_engine.models.networks.EDMDenoiser` (EDM's preconditioning, Table 1) with an MLP backbone
    F([c_in·x, e(c_noise)]), e = [c_noise, sin(k·c_noise), cos(k·c_noise)] for k = 1 … ``n_freq``,
    on d-vectors stored as (B, d, 1, 1) tensors (d channels of a 1×1 image).

    Args:
        dim: d, the vector length.
        hidden: width of the hidden layers.
        depth: number of hidden layers (≥ 1).
        n_freq: Fourier features of c_noise.
        sigma_data, sigma_min, sigma_max: σ_d and the noise range (the samplers read σ_min/σ_max).

    Raises:
        ValueError: dim, hidden or depth < 1.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, n_freq: int = 4, sigma_data: float = 0.5, sigma_min: float = 0.002,
                 sigma_max: float = 80.0):  # fmt: skip
        super().__init__(sigma_data, sigma_min, sigma_max)
        if min(dim, hidden, depth) < 1:
            raise ValueError(f"dim {dim}, hidden {hidden}, depth {depth}: all must be ≥ 1")
        self.dim, self.n_freq = int(dim), int(n_freq)
        layers: list[nn.Module] = []
        width = dim + 1 + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.f = nn.Sequential(*layers)
        self.register_buffer("freqs", torch.arange(1, n_freq + 1, dtype=torch.float32) * math.pi)

    def backbone(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F on the scaled input (B, d, 1, 1) at c_noise (B,); returns (B, d, 1, 1).

        Raises:
            ValueError: x_in does not hold d values per sample.
        """
        v = x_in.reshape(x_in.shape[0], -1)
        if v.shape[1] != self.dim:
            raise ValueError(f"input of shape {tuple(x_in.shape)} holds {v.shape[1]} values per sample, expected {self.dim}")
        c = c_noise.reshape(-1, 1)
        emb = torch.cat([c, torch.sin(c * self.freqs), torch.cos(c * self.freqs)], dim=1)
        return self.f(torch.cat([v, emb], dim=1)).reshape(x_in.shape)


class LinearGenerator(nn.Module):
    """G(z) = W z + b, z ~ N(0, I_k): the law N(b, W Wᵀ) (docs/method.md §8).

    Args:
        dim: d (output length).
        rank: k, the latent size (k = d: full-rank W; k = r: W of rank ≤ r).
        init_scale: W starts at ``init_scale`` times orthonormal columns (the identity when k = d,
            the first k columns of a random orthogonal matrix otherwise); b starts at 0. With 0.5
            (σ_d) the full-rank generator starts with variance 0.25 in *every* direction, so it must
            remove the directions the clean law lacks.
        rng: torch RNG for the random columns.
    """

    def __init__(self, dim: int, rank: int, init_scale: float = 0.5, rng: torch.Generator | None = None):
        super().__init__()
        if rank == dim:
            w = torch.eye(dim)
        else:
            q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=rng))
            w = q[:, :rank]
        self.weight = nn.Parameter(init_scale * w)
        self.bias = nn.Parameter(torch.zeros(dim))

    @property
    def rank(self) -> int:
        """k, the latent dimension."""
        return self.weight.shape[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """x = W z + b for z (B, k); returns (B, d)."""
        return z @ self.weight.T + self.bias

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean b (d,), covariance W Wᵀ (d, d)), detached, float64."""
        w = self.weight.detach().double()
        return self.bias.detach().double().clone(), w @ w.T
