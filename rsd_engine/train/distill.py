"""RSD / SiD distillation losses (Phase II, docs/method.md §3).

SiD (Zhou et al. 2024, "Score identity Distillation", §4: the generator loss with α); RSD puts the
forward model inside: both the teacher f_φ and the fake score f_ψ are denoisers of A(x), scored at
u_t = A(x_g) + σ_t·n with u = A(x_g) computed *without* measurement noise (docs/method.md §3.3–3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..evaluate.sampling import karras_position, karras_sigma, one_step_generate
from ..models.networks import EDMPrecond
from .objectives import Objective

__all__ = ["sid_generator_loss", "GeneratorLoss", "generator_loss", "fake_score_loss"]


def sid_generator_loss(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The SiD integrand with RSD's per-sample weight (docs/method.md §3.3, steps 4–5; SiD §4).

    L = w · Σ_pixels (a − b) ⊙ [(a − u) − α(a − b)],  w = 1 / max(mean|u − a|, 1e-5) (stop-gradient).

    Args:
        u: clean measurement of the generated sample A(x_g), (B, …) e.g. (B, C', H', W').
        a: teacher prediction f_φ(u_t; σ_t), same shape.
        b: fake-score prediction f_ψ(u_t; σ_t), same shape.
        alpha: SiD α (1.2 in the paper).
        mask: optional 0/1 mask broadcastable to u (inpainting): the integrand and the mean in w are
            restricted to it (docs/method.md §3.3, inpainting variant).

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
class GeneratorLoss:
    """Result of one generator-loss evaluation: ``loss`` (scalar, already scaled and averaged over the
    finite samples) and ``nan_count`` (samples dropped because their loss was not finite)."""

    loss: torch.Tensor
    nan_count: int


def generator_loss(
    generator: EDMPrecond,
    teacher: EDMPrecond,
    fake_score: EDMPrecond,
    objective: Objective,
    z: torch.Tensor,
    *,
    sigma_init: float,
    alpha: float,
    t_max: float,
    rho: float,
    loss_scale: float,
    sigma_t_min: float | None = None,
) -> GeneratorLoss:
    """Generator loss of one RSD iteration (docs/method.md §3.3).

    x_g = G(σ_init z; σ_init); u = A(x_g) (no measurement noise); t ~ U[t_min, t_max/1000] with
    t_min = 0 (the paper: σ_t down to the teacher's σ_min) or the t of ``sigma_t_min``;
    σ_t = karras_sigma(1 − t) on the teacher's σ range; u_t = u + σ_t n; a = f_φ(u_t; σ_t),
    b = f_ψ(u_t; σ_t); L = loss_scale · mean_B :func:`sid_generator_loss`.
    Mask operators: G takes [P′(σ_init z), m′] and the score networks take [P(x_g + σ_t n), m] with
    fresh further-corrupted conditions (:meth:`Objective.network_condition`): P = m ⊙ · for inpainting,
    whose integrand is restricted to m and u = m ⊙ x_g; P = P_Ã for MRI, whose integrand covers the
    whole image with u = x_g (docs/method.md §9). The caller freezes teacher and fake-score
    *parameters*; gradients flow through their inputs. Samples with a non-finite loss are dropped and counted.

    Args:
        objective: the teacher's objective (its measurement gives A; its δ the network masks).
        z: standard normal latents (B, C, H, W).
        t_max: in [0, 1000] (800 in the paper).
        rho: ρ of the σ_t schedule (the teacher's).
        sigma_t_min: lowest σ_t (``None``: the teacher's σ_min, the paper's rule). A floor at σ_c
            keeps the draws where neither score network was trained out of the generator's loss
            (docs/method.md §3.3 and §7).

    Returns:
        :class:`GeneratorLoss`. If every sample is non-finite the loss is a zero that keeps the graph.
    """
    cond_g = objective.network_condition(z.shape[0], device=z.device)
    x_g = one_step_generate(generator, z, sigma_init, cond_g)
    cond = objective.network_condition(z.shape[0], device=z.device)
    if cond is None:
        u, _ = objective.measurement(x_g, noisy=False)
    else:  # the networks see cond.project(x_g + σ_t n) and cond.channels
        u = x_g if cond.sid_mask is None else cond.sid_mask * x_g
    t_min = 0.0 if sigma_t_min is None else 1.0 - karras_position(sigma_t_min, teacher.sigma_min, teacher.sigma_max, rho)
    t = t_min + torch.rand(u.shape[0], device=u.device) * (t_max / 1000.0 - t_min)
    sigma_t = karras_sigma(1 - t, teacher.sigma_min, teacher.sigma_max, rho)
    u_t = u + sigma_t.reshape(-1, 1, 1, 1) * torch.randn_like(u)
    if cond is None:
        a, b = teacher(u_t, sigma_t), fake_score(u_t, sigma_t)
    else:
        u_t = cond.project(u_t)
        a, b = teacher(u_t, sigma_t, cond.channels), fake_score(u_t, sigma_t, cond.channels)
    per_sample = sid_generator_loss(u, a, b, alpha, None if cond is None else cond.sid_mask)
    finite = torch.isfinite(per_sample)
    nan_count = int((~finite).sum())
    if nan_count == per_sample.numel():
        return GeneratorLoss(per_sample.nan_to_num(0.0).sum() * 0.0, nan_count)
    loss = per_sample[finite].sum() / per_sample.numel() * loss_scale
    return GeneratorLoss(loss, nan_count)


def fake_score_loss(
    generator: EDMPrecond, fake_score: EDMPrecond, objective: Objective, z: torch.Tensor, *, sigma_init: float
) -> torch.Tensor:
    """Fake-score loss of one RSD iteration (docs/method.md §3.2).

    x_g = stopgrad(G(σ_init z; σ_init)); ỹ = A(x_g) + σ_c ε with fresh ε (and fresh operator
    randomness: masks, MRI coil maps); the teacher's own objective on ỹ. G receives no gradient. For
    mask operators G gets a fresh condition and the Ambient loss is taken on the further-corrupted
    pixels (or k-space lines) Ã ("A_tilde", as RSD's code back-props it).

    Args:
        generator: G, used under ``no_grad``.
        fake_score: f_ψ, the network being trained.
        objective: the teacher's objective.
        z: standard normal latents (B, C, H, W).
        sigma_init: σ_init of the generator (2.5 in the paper).

    Returns:
        mean over the batch of the per-sample objective (scalar).
    """
    with torch.no_grad():
        x_g = one_step_generate(generator, z, sigma_init, objective.network_condition(z.shape[0], device=z.device))
        y_g, params = objective.measurement(x_g)
    return objective.loss(fake_score, y_g, params, loss_on="A_tilde").mean()
