"""Teacher objectives (Phase I, docs/method.md §2): plain EDM, Ambient-Tweedie for noisy measurements,
Ambient Diffusion for masked measurements and its Fourier-space form for multi-coil MRI (§9), and
:class:`Objective`, the one a preset trains with.

The same objective trains the fake score in Phase II on A(x_g) + σ_c·ε (docs/method.md §3.2), so both
networks are Tweedie-consistent denoisers of the clean measurement law p(A x). The per-pixel loss
weight λ = 1/c_out² comes from the network (:meth:`rsd_engine.models.networks.EDMPrecond.loss_weight`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..models.networks import EDMPrecond, unwrap
from ..operators import Condition, MultiCoilMRI
from ..operators.inpainting import further_mask
from ..operators.measurement import Measurement

__all__ = [
    "sample_training_sigma",
    "ambient_tweedie_loss",
    "edm_loss",
    "ambient_mask_loss",
    "ambient_fourier_loss",
    "ObjectiveFamily",
    "TweedieFamily",
    "MaskFamily",
    "FourierFamily",
    "FAMILIES",
    "OBJECTIVES",
    "Objective",
]


def sample_training_sigma(batch: int, p_mean: float, p_std: float, device=None, rng=None, floor: float = 0.0) -> torch.Tensor:
    """Draw σ with ln σ ~ N(p_mean, p_std²) (EDM eq. 8 / Table 1); with ``floor`` > 0, from that law
    conditioned on σ > floor (inverse CDF of the truncated normal in ln σ, float64; ``teacher.sigma_sampling =
    "above_noise"``, docs/method.md §2.2). Returns shape (B,), σ > 0 (> floor). The losses compute in
    float32, where a draw within rounding of σ_c (probability ≈ 1e-7) counts as clamped."""
    if floor <= 0:
        z = torch.randn(batch, device=device, generator=rng)
        return (z * p_std + p_mean).exp()
    low = 0.5 * math.erfc(-(math.log(floor) - p_mean) / (p_std * math.sqrt(2)))  # Φ((ln floor − p_mean)/p_std)
    u = low + (1 - low) * torch.rand(batch, device=device, generator=rng, dtype=torch.float64)
    return (torch.special.ndtri(u.clamp(max=1 - 1e-12)) * p_std + p_mean).exp()


def _noise_levels(sigma: torch.Tensor, noise_sigma: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clamp σ ≥ σ_c (docs/method.md §2.2, step 1). Returns (σ (B,) float32, top-up std √(σ² − σ_c²) and
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
    net: EDMPrecond, y: torch.Tensor, noise_sigma: float, p_mean: float = -1.2, p_std: float = 1.2, sigma: torch.Tensor | None = None
) -> torch.Tensor:
    """Ambient-Tweedie loss for noisy measurements y = A x + σ_c ε (docs/method.md §2.2; Daras et al.,
    "Consistent diffusion meets Tweedie", and DSD's noisy-data loss L_N).

    Steps: σ ~ logN(p_mean, p_std²) clamped to σ ≥ σ_c; y_t = y + √(σ² − σ_c²)·n; x̂ = D(y_t; σ);
    ŷ = (1 − σ_c²/σ²)·x̂ + (σ_c²/σ²)·y_t; loss = λ(σ)·‖ŷ − y‖², summed over pixels, with
    λ(σ) = 1/c_out² from the network (EDM Table 1).
    At σ = σ_c, ŷ ≡ y_t = y and the loss is exactly 0 (no gradient); at σ_c = 0 it is the EDM loss.

    Args:
        net: the denoiser being trained (an :class:`EDMPrecond`, possibly wrapped for data parallelism).
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
    y_t = y + top_up * torch.randn_like(y)
    x_hat = net(y_t, sigma)
    y_hat = (1 - ratio) * x_hat + ratio * y_t
    per_pixel = unwrap(net).loss_weight(sigma) * (y_hat - y) ** 2
    return per_pixel.flatten(1).sum(1)


def edm_loss(net: EDMPrecond, x: torch.Tensor, p_mean: float = -1.2, p_std: float = 1.2, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Plain EDM denoising score matching λ(σ)·‖D(x + σn; σ) − x‖² summed over pixels (EDM eq. 2/8).

    Identical to :func:`ambient_tweedie_loss` with σ_c = 0. Returns shape (B,).
    """
    return ambient_tweedie_loss(net, x, 0.0, p_mean, p_std, sigma)


def ambient_mask_loss(net: EDMPrecond, y: torch.Tensor, mask: torch.Tensor, noise_sigma: float, delta: float, p_mean: float = -1.2,
                      p_std: float = 1.2, sigma: torch.Tensor | None = None, loss_on: str = "A") -> torch.Tensor:  # fmt: skip
    """Ambient Diffusion loss for masked measurements y = A ⊙ x (+ σ_c ε) (docs/method.md §2.3; Daras
    et al. 2023, "Ambient Diffusion", §3, the further-corrupted objective), combined with the
    Ambient-Tweedie noise handling of §2.2 when σ_c > 0.

    Steps (n ~ N(0, I) drawn first, then the further mask, so the random draws match
    :func:`ambient_tweedie_loss` for the same torch seed):

    1. σ ~ logN(p_mean, p_std²), clamped to σ ≥ σ_c;
    2. x_t = y + √(σ² − σ_c²)·n (observed pixels then carry total noise σ around x);
    3. Ã = further_mask(A, δ) (a fresh draw, torch's global RNG);
    4. x̂ = D([Ã ⊙ x_t, Ã]; σ) — the mask enters as the network's ``cond`` channel, unscaled;
    5. ŷ = x̂ + Ã ⊙ (σ_c²/σ²)·(x_t − x̂): the §2.2 conversion to a prediction of the noisy y, applied
       only where the network saw x_t; on A-but-not-Ã pixels the measurement noise is independent
       of the input, so E[y | input] = E[x | input] there and ŷ = x̂;
    6. loss = Σ_pixels λ·(M ⊙ (ŷ − y))², M = A (``loss_on="A"``, the teacher's supervised loss) or
       M = Ã (``loss_on="A_tilde"``, the loss RSD's fake score back-props, docs/method.md §3.2), with
       λ = 1/c_out² of the mask-aware preconditioning, taken from the network
       (:meth:`EDMPrecond.loss_weight` with mask Ã): EDM's λ(σ) on pixels the network saw (Ã) and
       1/σ_d² on the A-but-not-Ã pixels it predicts without seeing.

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
    x_t = y + top_up * torch.randn_like(y)
    a = mask.to(device=y.device, dtype=y.dtype)
    a_tilde = further_mask(a, delta)
    x_hat = net(a_tilde * x_t, sigma, cond=a_tilde)
    # Ã is 0/1, so on Ã this is exactly (1 − r)·x̂ + r·x_t (= y at clamped draws) and x̂ elsewhere.
    y_hat = a_tilde * ((1 - ratio) * x_hat + ratio * x_t) + (1 - a_tilde) * x_hat
    m = a if loss_on == "A" else a_tilde
    per_pixel = unwrap(net).loss_weight(sigma, a_tilde) * (m * (y_hat - y)) ** 2
    return per_pixel.flatten(1).sum(1)


def ambient_fourier_loss(
    net: EDMPrecond,
    y: torch.Tensor,
    op: MultiCoilMRI,
    params: dict[str, torch.Tensor],
    noise_sigma: float,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma: torch.Tensor | None = None,
    loss_on: str = "A",
) -> torch.Tensor:
    """Fourier-space Ambient Diffusion loss for multi-coil k-space y = A x (+ σ_c ε) (docs/method.md §9;
    Aali et al., "Ambient Diffusion Posterior Sampling", the MRI objective RSD's teacher uses), with the
    Ambient-Tweedie noise handling of §2.2 when σ_c > 0. P_M = A_Mᴴ A_M is the operator's projection
    through the lines M (``op.normal``).

    Steps (σ, then n, then Ã from torch's global RNG):

    1. σ ~ logN(p_mean, p_std²), clamped to σ ≥ σ_c;
    2. Ã = ``op.further_mask(M)``, the kept lines less ``op.further_lines`` random non-ACS lines;
    3. network input x_t = Ãᴴ y + √(σ² − σ_c²)·P_Ã n (= P_Ã(x + σn) at σ_c = 0), mask channel Ã;
    4. x̂ = D([x_t, Ã]; σ), a prediction of the whole complex image;
    5. ŷ = P_A x̂ + (σ_c²/σ²)·(x_t − P_Ã x̂), the prediction of the observed zero-filled image Aᴴ y
       (the §2.2 conversion on the lines the network saw; none at σ_c = 0);
    6. loss = λ·‖ŷ − Aᴴ y‖² summed over both channels, λ = 1/σ_d² from the network's k-space
       preconditioning (``loss_on="A"``: the teacher); ``loss_on="A_tilde"`` (the fake score, §3.2)
       compares P_Ã x̂ + (σ_c²/σ²)(x_t − P_Ã x̂) with Ãᴴ y instead.

    With σ_c > 0 and C > 1 coils the top-up noise P_Ã n and the measurement noise Ãᴴε differ in
    covariance (P_Ã² against P_Ã); the conversion treats them alike (exact for one coil).

    Args:
        net: denoiser with one ``kspace_mask`` conditioning channel.
        y: k-space (B, 2C, H, W) of ``op``, zero off the measured lines.
        op: the multi-coil operator (projections, further mask).
        params: the measurements' ``"mask"`` M, (B, 1, 1, W) 0/1, and ``"maps"``, complex (B, C, H, W).
        noise_sigma: σ_c ≥ 0 of the k-space noise.
        p_mean, p_std: log-normal σ distribution.
        sigma: optional fixed σ (B,) (tests); clamped to ≥ σ_c like drawn ones.
        loss_on: ``"A"`` or ``"A_tilde"``.

    Returns:
        per-sample loss (B,), ≥ 0.

    Raises:
        ValueError: a bad ``loss_on``; ``mask`` or ``maps`` missing.
    """
    if loss_on not in ("A", "A_tilde"):
        raise ValueError(f"loss_on {loss_on!r}: allowed 'A' (teacher) or 'A_tilde' (fake score)")
    full = op.condition(**params)
    mask, maps = full.lines, full.maps
    b = y.shape[0]
    if sigma is None:
        sigma = sample_training_sigma(b, p_mean, p_std, device=y.device)
    sigma, top_up, ratio = _noise_levels(sigma, noise_sigma, y.device)
    n = torch.randn(b, 2, *y.shape[-2:], device=y.device, dtype=y.dtype)
    a_tilde = op.further_mask(mask)
    seen = op.condition(mask=a_tilde, maps=maps)
    observed = op.adjoint(y, mask=a_tilde, maps=maps)
    x_t = observed + top_up * seen.project(n)
    x_hat = net(x_t, sigma, cond=seen.channels)
    correction = ratio * (x_t - seen.project(x_hat))
    if loss_on == "A":
        y_hat, target = full.project(x_hat) + correction, op.adjoint(y, mask=mask, maps=maps)
    else:
        y_hat, target = seen.project(x_hat) + correction, observed
    per_pixel = unwrap(net).loss_weight(sigma, seen.channels) * (y_hat - target) ** 2
    return per_pixel.flatten(1).sum(1)


class ObjectiveFamily:
    """The teacher objectives that fit one kind of measurement, chosen by ``Operator.objective_family``
    (docs/operators.md): which objective names it allows (the first is what ``teacher.objective = "auto"``
    picks), the per-sample loss and the networks' fresh further-corrupted condition. One class per
    family; an operator of an existing family needs no change here.
    """

    name: ClassVar[str] = ""
    objectives: ClassVar[tuple[str, ...]] = ()
    #: Measurement parameters (``Operator.sample_params`` keys) the loss needs.
    needs: ClassVar[tuple[str, ...]] = ()
    #: Training settings of the family that a plug-in's ``[corruption.params]`` carries beside the
    #: operator's own parameters: pydantic field definitions ``{name: (type, Field(...))}``.
    settings: ClassVar[dict[str, Any]] = {}

    def loss(
        self, objective: "Objective", net: EDMPrecond, y: torch.Tensor, params: dict[str, torch.Tensor], sigma: torch.Tensor, loss_on: str
    ) -> torch.Tensor:
        """Per-sample loss (B,) of ``net`` on measurements y at noise levels σ (B,)."""
        raise NotImplementedError

    def further(self, objective: "Objective", params: dict[str, torch.Tensor], rng: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Freshly drawn measurement parameters with the mask further corrupted for the networks (§3.1);
        families without a mask return them unchanged."""
        return params


class TweedieFamily(ObjectiveFamily):
    """Operators whose measurements are images without a mask (identity, blurs, super-resolution):
    Ambient-Tweedie (docs/method.md §2.2) or plain EDM, which treats y as clean (the naive baseline)."""

    name = "tweedie"
    objectives = ("ambient_tweedie", "edm")

    def loss(self, objective, net, y, params, sigma, loss_on):
        """:func:`ambient_tweedie_loss` with σ_c (``edm``: with 0, :func:`edm_loss`)."""
        noise = 0.0 if objective.name == "edm" else objective.noise_sigma
        return ambient_tweedie_loss(net, y, noise, sigma=sigma)


class MaskFamily(ObjectiveFamily):
    """Pixel-mask operators (inpainting): Ambient Diffusion with the further mask Ã (docs/method.md §2.3)."""

    name = "mask"
    objectives = ("ambient_mask",)
    needs = ("mask",)
    settings = {
        "delta": (
            float,
            Field(
                0.1,
                ge=0.0,
                lt=1.0,
                description="setting of the Ambient objective, not of A: fraction of "
                "surviving pixels erased again at each training step (further mask), 0 ≤ δ < 1 (paper 0.1)",
            ),
        )
    }

    def loss(self, objective, net, y, params, sigma, loss_on):
        """:func:`ambient_mask_loss` with the measurements' ``mask`` and the objective's δ."""
        return ambient_mask_loss(net, y, params["mask"], objective.noise_sigma, objective.delta, sigma=sigma, loss_on=loss_on)

    def further(self, objective, params, rng):
        """``mask`` with a fraction δ of its surviving pixels erased (:func:`further_mask`)."""
        return {**params, "mask": further_mask(params["mask"], objective.delta, rng)}


class FourierFamily(ObjectiveFamily):
    """k-space line operators (multi-coil MRI): Fourier-space Ambient Diffusion (docs/method.md §9)."""

    name = "fourier"
    objectives = ("ambient_fourier",)
    needs = ("mask", "maps")

    def loss(self, objective, net, y, params, sigma, loss_on):
        """:func:`ambient_fourier_loss` with the operator's projections."""
        return ambient_fourier_loss(net, y, objective.measurement.op, params, objective.noise_sigma, sigma=sigma, loss_on=loss_on)

    def further(self, objective, params, rng):
        """``mask`` less the operator's ``further_lines`` random non-ACS lines."""
        return {**params, "mask": objective.measurement.op.further_mask(params["mask"], rng)}


#: The objective families by ``Operator.objective_family``.
FAMILIES: dict[str, ObjectiveFamily] = {f.name: f for f in (TweedieFamily(), MaskFamily(), FourierFamily())}

#: Every teacher objective name (``teacher.objective`` without ``auto``).
OBJECTIVES: tuple[str, ...] = tuple(name for f in FAMILIES.values() for name in f.objectives)


def family_of(op) -> ObjectiveFamily:
    """The :class:`ObjectiveFamily` of an operator (instance or class).

    Raises:
        ValueError: an ``objective_family`` that is not one of :data:`FAMILIES`.
    """
    family = getattr(op, "objective_family", None)
    if family not in FAMILIES:
        raise ValueError(
            f"objective_family {family!r} of operator {getattr(op, 'name', '') or type(op).__name__!r}: allowed {', '.join(FAMILIES)}"
        )
    return FAMILIES[family]


@dataclass(frozen=True)
class Objective:
    """The denoising objective a run trains its teacher with, and its fake score in Phase II.

    Args:
        name: one of the operator family's objectives (:class:`ObjectiveFamily`): ``"edm"`` (treats y as
            clean: the naive baseline), ``"ambient_tweedie"`` (accounts for σ_c, docs/method.md §2.2),
            ``"ambient_mask"`` (Ambient Diffusion for mask operators, §2.3) or ``"ambient_fourier"``
            (its Fourier-space form for multi-coil MRI, §9).
        measurement: the forward model the data came from (σ_c, and fresh masks for the networks).
        p_mean, p_std: training σ distribution, ln σ ~ N(p_mean, p_std²) (EDM: −1.2, 1.2).
        delta: δ ∈ [0, 1) of the Ambient further corruption Ã = A ⊙ B (``ambient_mask`` only; paper 0.1).
            A training setting of the objective, not part of A.
        above_noise: draw σ from the log-normal conditioned on σ > σ_c instead of clamping the draws
            below σ_c, where the loss is exactly 0 (``teacher.sigma_sampling``; the same objective up to
            a constant factor, docs/method.md §2.2).

    Raises:
        ValueError: δ outside [0, 1), an operator of an unknown family, or an objective its family does
            not allow.
    """

    name: str
    measurement: Measurement
    p_mean: float = -1.2
    p_std: float = 1.2
    delta: float = 0.0
    above_noise: bool = False

    def __post_init__(self):
        if not 0.0 <= self.delta < 1.0:
            raise ValueError(f"delta {self.delta}: must be in [0, 1)")
        family = family_of(self.measurement.op)
        if self.name not in family.objectives:
            raise ValueError(
                f"objective {self.name!r} does not fit operator {self.measurement.op.name!r} "
                f"(family {family.name}); allowed: {', '.join(family.objectives)}"
            )

    @property
    def family(self) -> ObjectiveFamily:
        """The operator's :class:`ObjectiveFamily`."""
        return family_of(self.measurement.op)

    @property
    def noise_sigma(self) -> float:
        """σ_c of the measurements, on the [-1, 1] scale."""
        return self.measurement.noise_sigma

    def loss(self, net: EDMPrecond, y: torch.Tensor, params: dict[str, torch.Tensor] | None = None, loss_on: str = "A") -> torch.Tensor:
        """Per-sample loss (B,) of ``net`` on measurements y (B, C', H', W'), σ drawn from torch's global RNG
        (:func:`sample_training_sigma`, conditioned on σ > σ_c when ``above_noise``).

        ``params`` are the measurements' operator parameters (:meth:`Measurement.frozen`), on y's
        device: the mask family uses ``"mask"`` (B, 1, H, W), the Fourier family ``"mask"`` and
        ``"maps"``; ``loss_on`` (``"A"`` for the teacher, ``"A_tilde"`` for the fake score, docs/method.md
        §3.2) applies to those two.

        Raises:
            ValueError: a mask objective without its parameters, or a bad ``loss_on``.
        """
        params = params or {}
        family = self.family
        missing = [k for k in family.needs if k not in params]
        if missing:
            raise ValueError(
                f"objective {self.name!r} needs the measurement parameters {', '.join(missing)} (objective.loss(net, y, params))"
            )
        floor = self.noise_sigma if self.above_noise else 0.0
        sigma = sample_training_sigma(y.shape[0], self.p_mean, self.p_std, device=y.device, floor=floor)
        return family.loss(self, net, y, params, sigma, loss_on)

    def network_condition(self, batch: int, rng: torch.Generator | None = None, device=None) -> Condition | None:
        """A fresh condition for the networks' mask input: measurement parameters drawn like the data's,
        the mask further corrupted by the family (δ of the surviving pixels erased for inpainting;
        ``further_lines`` lines removed for MRI) (docs/method.md §3.1, §9: the generator and the score
        networks see a random further-corrupted mask, and for MRI random coil maps); ``None`` when the
        networks take no mask.

        Args:
            batch: B.
            rng: source of every draw (``None`` → torch's global RNG, CPU).
            device: where the condition is returned.

        Returns:
            a :class:`~rsd_engine.operators.Condition` of B images (for random inpainting a mask of
            survival (1 − p)(1 − δ)), or ``None``.
        """
        op = self.measurement.op
        if not self.measurement.has_mask:
            return None
        params = self.family.further(self, op.sample_params(batch, rng), rng)
        return op.condition(**params).to(device)
