"""Teacher objectives (Phase I, METHOD.md §2): plain EDM, Ambient-Tweedie for noisy measurements and
Ambient Diffusion for masked measurements.

The same functions train the fake score in Phase II on A(x_g) + σ_c·ε (METHOD.md §3), so both
networks are Tweedie-consistent denoisers of the clean measurement law p(A x).
"""

from __future__ import annotations

import torch

from .networks import EDMPrecond, unwrap
from .operators.inpainting import further_mask

__all__ = ["sample_training_sigma", "edm_weight", "ambient_tweedie_loss", "edm_loss", "ambient_mask_loss", "teacher_loss"]


def sample_training_sigma(batch: int, p_mean: float, p_std: float, device=None, generator=None) -> torch.Tensor:
    """Draw σ with ln σ ~ N(p_mean, p_std²) (EDM eq. 8 / Table 1). Returns shape (B,), σ > 0."""
    z = torch.randn(batch, device=device, generator=generator)
    return (z * p_std + p_mean).exp()


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ(σ) = (σ² + σ_d²) / (σ·σ_d)² (EDM Table 1). ``sigma`` any shape, returns the same shape."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _noise_levels(sigma: torch.Tensor, noise_sigma: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clamp σ ≥ σ_c (METHOD.md §2a step 1). Returns (σ (B,) float32, top-up std √(σ² − σ_c²) and
    ratio σ_c²/σ², both (B, 1, 1, 1)). At clamped draws the top-up is exactly 0 and the ratio exactly
    1 (float32 rounding of σ_c would otherwise leave ≈1e-5 of top-up noise, via the square root)."""
    sigma = sigma.to(device, torch.float32)
    floor = (sigma <= noise_sigma).reshape(-1, 1, 1, 1)
    sigma = sigma.clamp(min=noise_sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    top_up = torch.where(floor, torch.zeros_like(s), (s**2 - noise_sigma**2).clamp(min=0).sqrt())
    ratio = torch.where(floor, torch.ones_like(s), noise_sigma**2 / s**2)
    return sigma, top_up, ratio


def ambient_tweedie_loss(
    net: EDMPrecond,
    y: torch.Tensor,
    noise_sigma: float,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ambient-Tweedie loss for noisy measurements y = A x + σ_c ε (METHOD.md §2a; Daras et al.,
    "Consistent diffusion meets Tweedie", and DSD eq. for L_N).

    Steps: σ ~ logN(p_mean, p_std²) clamped to σ ≥ σ_c; y_t = y + √(σ² − σ_c²)·n; x̂ = D(y_t; σ);
    ŷ = (1 − σ_c²/σ²)·x̂ + (σ_c²/σ²)·y_t; loss = λ(σ)·‖ŷ − y‖², summed over pixels.
    At σ = σ_c, ŷ ≡ y_t = y and the loss is exactly 0 (no gradient); at σ_c = 0 it is the EDM loss.

    Args:
        net: the denoiser being trained.
        y: measurements (B, C, H, W), never clipped.
        noise_sigma: σ_c ≥ 0 on the [-1, 1] scale.
        p_mean, p_std: log-normal σ distribution.
        sigma: optional fixed σ of shape (B,) (tests); clamped to ≥ σ_c like drawn ones.

    Returns:
        per-sample loss, shape (B,).
    """
    b = y.shape[0]
    if sigma is None:
        sigma = sample_training_sigma(b, p_mean, p_std, device=y.device)
    sigma, top_up, ratio = _noise_levels(sigma, noise_sigma, y.device)
    s = sigma.reshape(-1, 1, 1, 1)
    y_t = y + top_up * torch.randn_like(y)
    x_hat = net(y_t, sigma)
    y_hat = (1 - ratio) * x_hat + ratio * y_t
    per_pixel = edm_weight(s, unwrap(net).sigma_data) * (y_hat - y) ** 2
    return per_pixel.flatten(1).sum(1)


def edm_loss(net: EDMPrecond, x: torch.Tensor, p_mean: float = -1.2, p_std: float = 1.2, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Plain EDM denoising score matching λ(σ)·‖D(x + σn; σ) − x‖² summed over pixels (EDM eq. 2/8).

    Identical to :func:`ambient_tweedie_loss` with σ_c = 0. Returns shape (B,).
    """
    return ambient_tweedie_loss(net, x, 0.0, p_mean, p_std, sigma)


def ambient_mask_loss(
    net: EDMPrecond,
    y: torch.Tensor,
    mask: torch.Tensor,
    noise_sigma: float,
    delta: float,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma: torch.Tensor | None = None,
    loss_on: str = "A",
) -> torch.Tensor:
    """Ambient Diffusion loss for masked measurements y = A ⊙ x (+ σ_c ε) (METHOD.md §2b; Daras et al.
    2023, "Ambient Diffusion", eq. for the further-corrupted objective), combined with the
    Ambient-Tweedie noise handling of §2a when σ_c > 0.

    Steps (n ~ N(0, I) drawn first, then the further mask, so the random draws match
    :func:`ambient_tweedie_loss` for the same torch seed):

    1. σ ~ logN(p_mean, p_std²), clamped to σ ≥ σ_c;
    2. x_t = y + √(σ² − σ_c²)·n (observed pixels then carry total noise σ around x);
    3. Ã = further_mask(A, δ) (a fresh draw, torch's global RNG);
    4. x̂ = D([Ã ⊙ x_t, Ã]; σ) — the mask enters as the network's ``cond`` channel, unscaled;
    5. ŷ = x̂ + Ã ⊙ (σ_c²/σ²)·(x_t − x̂): the §2a conversion to a prediction of the noisy y, applied
       only where the network saw x_t; on A-but-not-Ã pixels the measurement noise is independent
       of the input, so E[y | input] = E[x | input] there and ŷ = x̂;
    6. loss = Σ_pixels λ·(M ⊙ (ŷ − y))², M = A (``loss_on="A"``, the teacher's supervised loss) or
       M = Ã (``loss_on="A_tilde"``, the loss RSD's fake score back-props, METHOD.md §3), with
       λ = 1/c_out² of the mask-aware preconditioning: EDM's λ(σ) on pixels the network saw (Ã) and
       1/σ_d² on the A-but-not-Ã pixels it predicts without seeing (:class:`EDMPrecond`). EDM's
       λ(σ) ≈ 1/σ² there would scale an error of O(σ_d) by 1/σ² and let the smallest σ draws
       dominate the teacher's gradient.

    With σ_c = 0, ŷ = x̂. With A = Ã = 1 (p = 0, δ = 0) it equals :func:`ambient_tweedie_loss` (and
    :func:`edm_loss` at σ_c = 0) for the same σ and noise. Values of y, of the noise and of the
    network output on erased pixels (A = 0) never change the loss.

    Args:
        net: denoiser with ``cond_channels`` equal to the mask's channels (1 for channel-shared masks).
        y: measurements (B, C, H, W); values on erased pixels are ignored. Never clipped.
        mask: A, (B, 1, H, W) with values 0/1 (1 = observed).
        noise_sigma: σ_c ≥ 0 on the [-1, 1] scale.
        delta: δ ∈ [0, 1), fraction of observed pixels erased again for Ã (paper 0.1).
        p_mean, p_std: log-normal σ distribution (EDM: −1.2, 1.2).
        sigma: optional fixed σ (B,) (tests); clamped to ≥ σ_c like drawn ones.
        loss_on: ``"A"`` or ``"A_tilde"``.

    Returns:
        per-sample loss, shape (B,), ≥ 0.

    Raises:
        ValueError: ``loss_on`` not in ("A", "A_tilde"), a mask that does not fit y, δ outside [0, 1),
            or a network whose ``cond_channels`` differ from the mask's channels.
    """
    if loss_on not in ("A", "A_tilde"):
        raise ValueError(f"loss_on {loss_on!r}: allowed 'A' (teacher) or 'A_tilde' (fake score)")
    b = y.shape[0]
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[-2:] != y.shape[-2:]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit measurements of shape {tuple(y.shape)}; expected (B, 1, H, W)")
    if sigma is None:
        sigma = sample_training_sigma(b, p_mean, p_std, device=y.device)
    sigma, top_up, ratio = _noise_levels(sigma, noise_sigma, y.device)
    s = sigma.reshape(-1, 1, 1, 1)
    x_t = y + top_up * torch.randn_like(y)
    a = mask.to(device=y.device, dtype=y.dtype)
    a_tilde = further_mask(a, delta)
    x_hat = net(a_tilde * x_t, sigma, cond=a_tilde)
    # Ã is 0/1, so on Ã this is exactly (1 − r)·x̂ + r·x_t (= y at clamped draws) and x̂ elsewhere.
    y_hat = a_tilde * ((1 - ratio) * x_hat + ratio * x_t) + (1 - a_tilde) * x_hat
    m = a if loss_on == "A" else a_tilde
    sd = unwrap(net).sigma_data
    weight = a_tilde * edm_weight(s, sd) + (1 - a_tilde) / sd**2  # 1/c_out² per pixel (EDMPrecond)
    per_pixel = weight * (m * (y_hat - y)) ** 2
    return per_pixel.flatten(1).sum(1)


def teacher_loss(
    objective: str,
    net: EDMPrecond,
    y: torch.Tensor,
    noise_sigma: float,
    p_mean: float,
    p_std: float,
    *,
    mask: torch.Tensor | None = None,
    delta: float = 0.1,
    loss_on: str = "A",
) -> torch.Tensor:
    """Dispatch on the resolved objective name (``config.resolve_objective``). Returns shape (B,).

    ``"edm"`` ignores the measurement noise (treats y as clean: the naive baseline);
    ``"ambient_tweedie"`` accounts for it; ``"ambient_mask"`` is :func:`ambient_mask_loss` and needs
    the measurement ``mask`` (B, 1, H, W), the further-mask ``delta`` and ``loss_on`` ("A" for the
    teacher, "A_tilde" for the fake score). The keyword arguments are ignored by the other objectives.

    Raises:
        ValueError: unknown objective, or ``"ambient_mask"`` without a mask.
    """
    if objective == "ambient_tweedie":
        return ambient_tweedie_loss(net, y, noise_sigma, p_mean, p_std)
    if objective == "edm":
        return edm_loss(net, y, p_mean, p_std)
    if objective == "ambient_mask":
        if mask is None:
            raise ValueError("objective 'ambient_mask' needs the measurement mask (teacher_loss(..., mask=params['mask']))")
        return ambient_mask_loss(net, y, mask, noise_sigma, delta, p_mean, p_std, loss_on=loss_on)
    raise ValueError(f"unknown teacher objective {objective!r}; allowed: edm, ambient_tweedie, ambient_mask")
