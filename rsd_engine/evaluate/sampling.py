"""Samplers: EDM Heun (full and truncated at the data noise) and one-step generation.

EDM Algorithm 1 (Karras et al. 2022) with S_churn = 0: deterministic 2nd-order Heun steps on the
probability-flow ODE with σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, σ_N = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.networks import EDMPrecond
from ..operators import Condition

__all__ = ["karras_sigma", "karras_position", "karras_sigmas", "heun_sample", "one_step_generate", "SampleResult"]


def karras_sigma(u, sigma_min: float, sigma_max: float, rho: float = 7.0):
    """σ(u) = (σ_max^{1/ρ} + u·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, the Karras interpolation (EDM eq. 5 with
    u = i/(N − 1)): u = 0 gives σ_max, u = 1 gives σ_min, decreasing in between.

    The Heun sampler's schedule (:func:`karras_sigmas`) and the σ_t of SiD's generator step
    (u = 1 − t, t ~ U[0, t_max/1000], docs/method.md §3.3) both use it.

    Args:
        u: tensor (any shape, any float dtype; the result keeps it) or float, in [0, 1].
        sigma_min, sigma_max: σ range, 0 < σ_min < σ_max.
        rho: ρ > 0 (EDM: 7).
    """
    return (sigma_max ** (1 / rho) + u * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def karras_position(sigma: float, sigma_min: float, sigma_max: float, rho: float = 7.0) -> float:
    """The inverse of :func:`karras_sigma`: u in [0, 1] with karras_sigma(u) = σ, for σ in [σ_min, σ_max].

    Raises:
        ValueError: σ outside [σ_min, σ_max].
    """
    if not sigma_min <= sigma <= sigma_max:
        raise ValueError(f"σ = {sigma} is outside the schedule's range [{sigma_min}, {sigma_max}]")
    top, bottom = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (sigma ** (1 / rho) - top) / (bottom - top)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device=None) -> torch.Tensor:
    """The EDM σ schedule of ``steps`` ≥ 2 levels (EDM eq. 5) with a final 0 appended: shape (steps + 1,),
    decreasing, float64."""
    i = torch.arange(steps, dtype=torch.float64, device=device)
    return torch.cat([karras_sigma(i / (steps - 1), sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64, device=device)])


@dataclass
class SampleResult:
    """Samples and their cost. ``images``: (B, C, H, W) float32; ``nfe``: denoiser evaluations per image."""

    images: torch.Tensor
    nfe: int


@torch.no_grad()
def heun_sample(
    net: EDMPrecond, noise: torch.Tensor, steps: int = 18, rho: float = 7.0, stop_sigma: float | None = None, cond: Condition | None = None
) -> SampleResult:
    """EDM Heun sampler from pure noise.

    Args:
        net: the teacher denoiser (use its EMA weights).
        noise: standard normal (B, C, H, W); the start is ``noise · σ_max``.
        steps: N Heun steps (NFE = 2N − 1 for a full run).
        rho: ρ of the schedule.
        stop_sigma: teacher-truncated (docs/method.md §4.1): before the step from σ_i to σ_{i+1}, if
            σ_{i+1} < stop_sigma, return D(x_i; σ_i) instead of stepping. ``None`` or 0 runs to σ = 0
            (teacher-full, whose samples keep the data noise).
        cond: optional fixed :class:`~rsd_engine.operators.Condition` for networks with mask channels:
            every call sees ``cond.project(x)`` (m ⊙ x for inpainting, P_Ã x for MRI) and
            ``cond.channels`` (Ambient Diffusion's fixed-mask sampling; docs/method.md §4.1, §9).

    Returns:
        :class:`SampleResult` with images (B, C, H, W) and the NFE used.
    """

    def denoise(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return (net(x, s.float()) if cond is None else net(cond.project(x), s.float(), cond.channels)).double()

    sig = karras_sigmas(steps, net.sigma_min, net.sigma_max, rho, device=noise.device)
    x = noise.to(torch.float64) * sig[0]
    nfe = 0
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        if stop_sigma and s_next < stop_sigma:
            d = denoise(x, s)
            return SampleResult(d.float(), nfe + 1)
        den = denoise(x, s)
        nfe += 1
        d = (x - den) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            den2 = denoise(x_next, s_next)
            nfe += 1
            d2 = (x_next - den2) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
    return SampleResult(x.float(), nfe)


def one_step_generate(generator: EDMPrecond, z: torch.Tensor, sigma_init: float, cond: Condition | None = None) -> torch.Tensor:
    """The one-step RSD generator x = G(σ_init·z; σ_init) (docs/method.md §3.1; SiD); with a condition
    x = G([cond.project(σ_init·z), cond.channels]; σ_init) (m ⊙ σ_init·z for inpainting, §3.1;
    P_Ã(σ_init·z) for MRI, §9).

    Args:
        generator: G (use G_ema for evaluation).
        z: standard normal (B, C, H, W).
        sigma_init: σ_init (2.5 in the paper); must be the value the generator was distilled with.
        cond: optional :class:`~rsd_engine.operators.Condition` for generators with mask channels.

    Returns:
        images (B, C, H, W), approximately in [-1, 1]. Gradients flow unless called under no_grad.
    """
    sigma = torch.full((z.shape[0],), float(sigma_init), device=z.device)
    if cond is None:
        return generator(z * sigma_init, sigma)
    return generator(cond.project(z * sigma_init), sigma, cond.channels)
