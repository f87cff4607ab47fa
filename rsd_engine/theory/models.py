"""Small networks of the linear-Gaussian study (docs/method.md, linear-Gaussian theory).

:class:`MLPDenoiser` is an EDM-preconditioned MLP (Karras et al. 2022, Table 1, the same c_skip,
c_out, c_in, c_noise as :class:`rsd_engine.networks.EDMPrecond`) on d-vectors stored as (B, d, 1, 1)
tensors (d channels of a 1×1 image), so the engine's own losses and samplers take it unchanged.
:class:`LinearGenerator` is the linear one-step generator G(z) = W z + b of the theory.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MLPDenoiser", "LinearGenerator"]


class MLPDenoiser(nn.Module):
    """D(x; σ) = c_skip(σ)·x + c_out(σ)·F([c_in(σ)·x, e(c_noise(σ))]) with an MLP F.

    c_skip = σ_d²/(σ²+σ_d²), c_out = σσ_d/√(σ²+σ_d²), c_in = 1/√(σ²+σ_d²), c_noise = ¼ ln σ
    (EDM Table 1); e = [c_noise, sin(k·c_noise), cos(k·c_noise)] for k = 1 … ``n_freq``.

    Args:
        dim: d, the vector length.
        hidden: width of the hidden layers.
        depth: number of hidden layers (≥ 1).
        n_freq: Fourier features of c_noise.
        sigma_data, sigma_min, sigma_max: σ_d and the noise range (the samplers read σ_min/σ_max).

    Raises:
        ValueError: dim, hidden or depth < 1.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, n_freq: int = 4,
                 sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0):
        super().__init__()
        if min(dim, hidden, depth) < 1:
            raise ValueError(f"dim {dim}, hidden {hidden}, depth {depth}: all must be ≥ 1")
        self.dim, self.n_freq = int(dim), int(n_freq)
        self.sigma_data, self.sigma_min, self.sigma_max = float(sigma_data), float(sigma_min), float(sigma_max)
        layers: list[nn.Module] = []
        width = dim + 1 + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.f = nn.Sequential(*layers)
        self.register_buffer("freqs", torch.arange(1, n_freq + 1, dtype=torch.float32) * math.pi)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Clean-signal prediction.

        Args:
            x: noisy vectors, (B, d) or (B, …) with d elements per sample, e.g. (B, d, 1, 1).
            sigma: σ > 0, a float, 0-dim or shape (B,).

        Returns:
            D(x; σ) in x's shape, float32.

        Raises:
            ValueError: x does not hold d elements per sample.
        """
        shape = x.shape
        v = x.reshape(shape[0], -1).to(torch.float32)
        if v.shape[1] != self.dim:
            raise ValueError(f"input of shape {tuple(shape)} holds {v.shape[1]} values per sample, expected {self.dim}")
        s = torch.as_tensor(sigma, dtype=torch.float32, device=v.device).reshape(-1)
        s = s.expand(shape[0]) if s.numel() == 1 else s
        sd = self.sigma_data
        s1 = s.reshape(-1, 1)
        c_skip = sd**2 / (s1**2 + sd**2)
        c_out = s1 * sd / (s1**2 + sd**2).sqrt()
        c_in = 1 / (s1**2 + sd**2).sqrt()
        c_noise = s1.log() / 4
        emb = torch.cat([c_noise, torch.sin(c_noise * self.freqs), torch.cos(c_noise * self.freqs)], dim=1)
        f = self.f(torch.cat([c_in * v, emb], dim=1))
        return (c_skip * v + c_out * f).reshape(shape)


class LinearGenerator(nn.Module):
    """G(z) = W z + b, z ~ N(0, I_k): the law N(b, W Wᵀ) (docs/method.md, linear-Gaussian theory).

    Args:
        dim: d (output length).
        rank: k, the latent size (k = d: full-rank W; k = r: W of rank ≤ r).
        init_scale: W starts at ``init_scale`` times orthonormal columns (the identity when k = d,
            the first k columns of a random orthogonal matrix otherwise); b starts at 0. With 0.5
            (σ_d) the full-rank generator starts with variance 0.25 in *every* direction, so it must
            remove the directions the clean law lacks.
        generator: torch RNG for the random columns.
    """

    def __init__(self, dim: int, rank: int, init_scale: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        if rank == dim:
            w = torch.eye(dim)
        else:
            q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
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
