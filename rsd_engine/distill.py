"""RSD / SiD distillation losses (Phase II, METHOD.md §3).

SiD: Zhou et al. 2024, "Score identity Distillation", eq. for L_θ with α; RSD puts the forward
operator inside: both the teacher f_φ and the fake score f_ψ are denoisers of A(x), scored at
u_t = A(x_g) + σ_t·n with u = A(x_g) computed *without* measurement noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .networks import EDMPrecond
from .objectives import teacher_loss
from .operators import Operator, measure
from .sampling import one_step_generate

__all__ = ["sid_sigma", "sid_generator_loss", "GeneratorStep", "generator_step_loss", "fake_score_step_loss"]


def sid_sigma(t: torch.Tensor, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """σ_t = (σ_max^{1/ρ} + (1 − t)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ for t ∈ [0, 1] (SiD; METHOD.md §3 step 2).

    t = 1 gives σ_max; t = 0 gives σ_min. With t ~ U[0, 0.8] and EDM's σ range, σ_t ∈ [0.002, ≈24.4].
    """
    return (sigma_max ** (1 / rho) + (1 - t) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def sid_generator_loss(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The SiD integrand with RSD's per-sample weight (METHOD.md §3 steps 4–5).

    L = w · Σ_pixels (a − b) ⊙ [(a − u) − α(a − b)],  w = 1 / max(mean|u − a|, 1e-5) (stop-gradient).

    Args:
        u: clean measurement of the generated sample A(x_g), (B, …) e.g. (B, C', H', W').
        a: teacher prediction f_φ(u_t; σ_t), same shape.
        b: fake-score prediction f_ψ(u_t; σ_t), same shape.
        alpha: SiD α (1.2 in the paper).
        mask: optional 0/1 mask broadcastable to u (inpainting): the integrand and the mean in w are
            restricted to it (METHOD.md §3, inpainting variant).

    Returns:
        per-sample loss (B,). Gradients flow through u, a and b; w is detached.
    """
    if mask is None:
        w = 1.0 / (u - a).abs().flatten(1).mean(1).clamp(min=1e-5)
    else:
        m = mask.expand_as(u)
        u, a, b = u * m, a * m, b * m
        w = 1.0 / ((u - a).abs().flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)).clamp(min=1e-5)
    w = w.detach().reshape(-1, *([1] * (u.ndim - 1)))
    integrand = (a - b) * ((a - u) - alpha * (a - b))
    return (w * integrand).flatten(1).sum(1)


@dataclass
class GeneratorStep:
    """Result of one generator-loss evaluation: ``loss`` (scalar, already scaled and averaged over the
    finite samples) and ``nan_count`` (samples dropped because their loss was not finite)."""

    loss: torch.Tensor
    nan_count: int


def generator_step_loss(
    generator: EDMPrecond,
    teacher: EDMPrecond,
    fake_score: EDMPrecond,
    op: Operator,
    z: torch.Tensor,
    *,
    sigma_init: float,
    alpha: float,
    t_max: float,
    rho: float,
    loss_scale: float,
) -> GeneratorStep:
    """Generator loss of one RSD iteration (METHOD.md §3, "Loss for G_θ").

    x_g = G(σ_init z; σ_init); u = A(x_g) (no measurement noise); t ~ U[0, t_max/1000];
    u_t = u + σ_t n; a = f_φ(u_t; σ_t), b = f_ψ(u_t; σ_t); L = loss_scale · mean_B sid_generator_loss.
    Mask operators (inpainting): G takes [m′ ⊙ σ_init z, m′], the score networks take
    [m ⊙ (x_g + σ_t n), m] with fresh further-corrupted masks, and the integrand is restricted to m.
    The caller freezes teacher and fake-score *parameters*; gradients flow through their inputs.
    Samples with a non-finite loss are dropped and counted.

    Args:
        z: standard normal latents (B, C, H, W).
        t_max: in [0, 1000] (800 in the paper).
        rho: ρ of the σ_t schedule (the teacher's).

    Returns:
        :class:`GeneratorStep`. If every sample is non-finite the loss is a zero that keeps the graph.
    """
    cond_g = _network_mask(op, z)
    x_g = one_step_generate(generator, z, sigma_init, cond_g)
    cond = _network_mask(op, z)
    if cond is None:
        params = {k: v.to(x_g.device) for k, v in op.sample_params(x_g.shape[0]).items()}
        u = op(x_g, **params)
    else:  # inpainting: networks see m ⊙ (x_g + σ_t n) and m, a fresh further-corrupted mask
        u = cond * x_g
    t = torch.rand(u.shape[0], device=u.device) * (t_max / 1000.0)
    sigma_t = sid_sigma(t, teacher.sigma_min, teacher.sigma_max, rho)
    u_t = u + sigma_t.reshape(-1, 1, 1, 1) * torch.randn_like(u)
    if cond is None:
        a, b = teacher(u_t, sigma_t), fake_score(u_t, sigma_t)
    else:
        u_t = cond * u_t
        a, b = teacher(u_t, sigma_t, cond), fake_score(u_t, sigma_t, cond)
    per_sample = sid_generator_loss(u, a, b, alpha, cond)
    finite = torch.isfinite(per_sample)
    nan_count = int((~finite).sum())
    if nan_count == per_sample.numel():
        return GeneratorStep(per_sample.nan_to_num(0.0).sum() * 0.0, nan_count)
    loss = per_sample[finite].sum() / per_sample.numel() * loss_scale
    return GeneratorStep(loss, nan_count)


def fake_score_step_loss(
    generator: EDMPrecond,
    fake_score: EDMPrecond,
    op: Operator,
    z: torch.Tensor,
    *,
    objective: str,
    noise_sigma: float,
    sigma_init: float,
    p_mean: float,
    p_std: float,
) -> torch.Tensor:
    """Fake-score loss of one RSD iteration (METHOD.md §3, "Loss for f_ψ").

    x_g = stopgrad(G(σ_init z; σ_init)); ỹ = A(x_g) + σ_c ε with fresh ε (and fresh operator
    randomness); the teacher's own objective on ỹ. G receives no gradient. For mask operators G gets
    a fresh mask input and the Ambient loss is taken on the further-corrupted pixels Ã ("A_tilde",
    as RSD's code back-props it).

    Returns:
        mean over the batch of the per-sample objective (scalar).
    """
    with torch.no_grad():
        x_g = one_step_generate(generator, z, sigma_init, _network_mask(op, z))
        y_g, params = measure(op, x_g, noise_sigma)
    loss = teacher_loss(objective, fake_score, y_g, noise_sigma, p_mean, p_std,
                        mask=params.get("mask"), delta=op.delta, loss_on="A_tilde")
    return loss.mean()


def _network_mask(op: Operator, z: torch.Tensor) -> torch.Tensor | None:
    """A fresh network mask of the operator for a batch like ``z``, on z's device (``None`` if none)."""
    m = op.network_mask(z.shape[0])
    return None if m is None else m.to(z.device)

