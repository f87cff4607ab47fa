"""The linear-Gaussian experiment: teacher from noisy measurements, linear generator by RSD/SiD
(docs/method.md §8).

Setting. Clean x ~ N(μ, Σ), Σ = U Λ Uᵀ of rank r in R^d, U a random orthonormal (d, r) basis.
The study sees only N measurements y = A x + σ_c ε, for A the identity, a fixed 0/1 pixel mask
(the same diagonal matrix for every sample) or a circulant Gaussian blur.

- Teacher "gauss": the exact denoiser of the clean measurement law N(Aμ, AΣAᵀ) at every σ (the check).
- Teacher "mlp": an EDM-preconditioned MLP trained on the N measurements with the engine's
  :func:`rsd_engine.train.objectives.ambient_tweedie_loss` (σ clamped to ≥ σ_c), whose minimiser is
  E[Ax | Ax + s n] for s > σ_c only: the teacher never sees σ < σ_c.
- Teacher samples: the engine's :func:`rsd_engine.evaluate.sampling.heun_sample` (EDM Heun, 18 steps),
  run to σ = 0 ("teacher-full") or stopped at σ_c with the denoiser's output ("teacher-truncated").
- Generator G(z) = W z + b, W of shape (d, d) or (d, r), distilled with the engine's
  :func:`rsd_engine.train.distill.sid_generator_loss` (u = A G(z) without noise, σ_t =
  :func:`rsd_engine.evaluate.sampling.karras_sigma` of 1 − t, t ~ U[0, t_max/1000], α = 1.2 as in the paper, or 1.0;
  RSD arXiv 2505.13377 and SiD, Zhou et al. 2024) against a fake score that is either the exact
  denoiser of the generator's clean measurement law N(Ab, AWWᵀAᵀ) ("gauss") or an MLP trained by
  ambient_tweedie_loss on A G(z) + σ_c ε, initialised from the teacher ("mlp"), one fake step per
  generator step. A diagnostic variant draws σ_t ≥ σ_c only (not the engine's rule).
- :func:`null_direction_drift`: the sign of the expected SiD update on variance off the clean subspace.

Global torch RNG: every setting seeds it (``cfg.seed·1000 + index``; the engine's losses draw their
noise from it), so the results do not depend on the number of worker processes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from ..evaluate.sampling import heun_sample, karras_position, karras_sigma
from ..models.networks import frozen
from ..train.distill import sid_generator_loss
from ..train.objectives import ambient_tweedie_loss
from .gaussian import (
    GaussianDenoiser,
    ambient_affine_minimiser,
    gaussian_w2,
    off_subspace_variance,
    principal_angles_deg,
    psd_sqrt,
    top_eigenspace,
)
from .models import LinearGenerator, MLPDenoiser

__all__ = [
    "TheoryConfig",
    "GeneratorSpec",
    "null_direction_drift",
    "denoiser_error",
    "CleanLaw",
    "make_clean_law",
    "measurement_matrix",
    "observe",
    "train_teacher",
    "distill_linear",
    "teacher_samples",
    "law_metrics",
    "run_theory",
]

OPERATORS = ("identity", "mask", "blur")


@dataclass(frozen=True)
class GeneratorSpec:
    """One distilled generator of the study.

    Attributes:
        teacher: ``"gauss"`` (exact teacher and exact fake score) or ``"mlp"`` (trained ones).
        rank: latent size k of W (d, k); ``None`` means d (a full-rank W).
        alpha: SiD's α.
        floor: draw σ_t ≥ σ_c only (t ~ U[t(σ_c), t_max/1000]) instead of the engine's
            t ~ U[0, t_max/1000]: a diagnostic of the draws below σ_c, where the Ambient-Tweedie
            loss never trains either score network.
    """

    teacher: str
    rank: int | None
    alpha: float
    floor: bool = False

    def label(self, dim: int) -> str:
        """Row name, e.g. ``generator W 24×24 α=1.2`` or ``generator W 24×24 α=1.2 σ_t≥σ_c``."""
        return f"generator W {dim}×{self.rank or dim} α={self.alpha:g}" + (" σ_t≥σ_c" if self.floor else "")


DEFAULT_GENERATORS = (
    GeneratorSpec("gauss", None, 1.2),
    GeneratorSpec("gauss", None, 1.2, floor=True),
    GeneratorSpec("gauss", None, 1.0),
    GeneratorSpec("gauss", 3, 1.2),
    GeneratorSpec("mlp", None, 1.2),
    GeneratorSpec("mlp", None, 1.2, floor=True),
    GeneratorSpec("mlp", 3, 1.2),
)


@dataclass(frozen=True)
class TheoryConfig:
    """Every knob of the study (defaults: the full run, ≈ 1 min on 2 CPU cores).

    Attributes:
        dim, rank: d and r.
        eigenvalues: Λ (r values). (4, 2, 1) in d = 24 gives a per-coordinate std ≈ 0.54, the
            magnitude of [-1, 1] images (σ_d = 0.5), so no rescaling is applied.
        mean_scale: μ ~ mean_scale · N(0, I).
        n_obs: N measurements.
        noise_sigmas: σ_c values.
        operators: subset of ("identity", "mask", "blur").
        mask_keep: fraction of coordinates the fixed mask observes.
        blur_std, blur_taps: circulant Gaussian kernel (std in coordinates, odd number of taps).
        hidden, depth: MLP sizes (teacher and fake score).
        batch: minibatch of every optimisation step.
        teacher_steps, teacher_lr: Adam on the teacher (β = 0.9, 0.999), lr held for 70% of the steps, then decayed linearly to 0.
        generators: the distilled generators (:class:`GeneratorSpec`; rank ``None`` = d).
        distill_steps: generator steps with the MLP fake score (each after one fake-score step).
        lr_generator, lr_fake: Adam learning rates with the MLP fake score, equal as in RSD's release
            (generator β = 0.9, 0.999; fake β = 0, 0.999), held for 70% of the steps, then decayed
            linearly to 0. A generator rate
            of 1e-2 lets W outrun the fake score and diverge at σ_c = 0.5 (for α = 1.0 and 1.2).
        gauss_distill_steps, lr_generator_gauss: the same with the exact Gaussian fake score (which
            needs no tracking, so a larger rate converges).
        t_max, rho: t ~ U[0, t_max/1000] and the ρ of σ_t (RSD: 800, 7).
        heun_steps: Heun steps of the teacher samplers (the engine's default 18).
        n_samples: samples drawn from each teacher.
        drift_variances, drift_batch: the null-direction drift diagnostic (:func:`null_direction_drift`).
        seed: seeds the problem (U, μ, mask, data) and torch.
    """

    dim: int = 24
    rank: int = 3
    eigenvalues: tuple[float, ...] = (4.0, 2.0, 1.0)
    mean_scale: float = 0.3
    n_obs: int = 8000
    noise_sigmas: tuple[float, ...] = (0.2, 0.5)
    operators: tuple[str, ...] = OPERATORS
    mask_keep: float = 0.75
    blur_std: float = 1.0
    blur_taps: int = 5
    hidden: int = 128
    depth: int = 3
    batch: int = 256
    teacher_steps: int = 1500
    teacher_lr: float = 2e-3
    generators: tuple[GeneratorSpec, ...] = DEFAULT_GENERATORS
    distill_steps: int = 1000
    lr_generator: float = 1e-3
    lr_fake: float = 1e-3
    gauss_distill_steps: int = 500
    lr_generator_gauss: float = 1e-2
    t_max: float = 800.0
    rho: float = 7.0
    heun_steps: int = 18
    n_samples: int = 4000
    drift_variances: tuple[float, ...] = (1e-3, 1e-2, 0.04, 0.25)
    drift_batch: int = 40000
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> "TheoryConfig":
        """A few-second smoke configuration (same settings and rows, far fewer steps and samples)."""
        base = dict(
            n_obs=2000,
            teacher_steps=60,
            distill_steps=30,
            gauss_distill_steps=30,
            n_samples=500,
            hidden=32,
            depth=2,
            batch=128,
            drift_batch=2000,
        )
        base.update(overrides)
        return cls(**base)

    def __post_init__(self):
        if len(self.eigenvalues) != self.rank or self.rank > self.dim:
            raise ValueError(f"rank {self.rank} with {len(self.eigenvalues)} eigenvalues in d = {self.dim}")
        bad = [o for o in self.operators if o not in OPERATORS]
        if bad:
            raise ValueError(f"unknown operators {bad}; allowed {OPERATORS}")
        if self.blur_taps % 2 == 0 or self.blur_taps < 1:
            raise ValueError(f"blur_taps {self.blur_taps}: must be odd and ≥ 1")
        for g in self.generators:
            if g.teacher not in ("gauss", "mlp") or not (g.rank is None or 1 <= g.rank <= self.dim):
                raise ValueError(f"generator {g}: teacher must be 'gauss' or 'mlp' and rank None or 1 … {self.dim}")


@dataclass
class CleanLaw:
    """x ~ N(mean, U diag(eigenvalues) Uᵀ): mean (d,), basis U (d, r) orthonormal, eigenvalues (r,), float64."""

    mean: np.ndarray
    basis: np.ndarray
    eigenvalues: np.ndarray
    cov: np.ndarray = field(init=False)

    def __post_init__(self):
        self.cov = (self.basis * self.eigenvalues) @ self.basis.T


def make_clean_law(cfg: TheoryConfig, rng: np.random.Generator) -> CleanLaw:
    """Random orthonormal U (QR of a Gaussian matrix), μ ~ mean_scale·N(0, I), Λ from the config."""
    q, _ = np.linalg.qr(rng.standard_normal((cfg.dim, cfg.dim)))
    return CleanLaw(cfg.mean_scale * rng.standard_normal(cfg.dim), q[:, : cfg.rank], np.asarray(cfg.eigenvalues, dtype=np.float64))


def measurement_matrix(name: str, cfg: TheoryConfig, rng: np.random.Generator) -> np.ndarray:
    """A as a (d, d) float64 matrix.

    - ``identity``: I.
    - ``mask``: diag(m), m ∈ {0, 1}^d fixed (drawn once, ``mask_keep`` of the coordinates kept, at
      least r + 1 of them). Every sample hides the same coordinates, so their mean, their variance and
      their covariance with the observed ones never reach the data: only the observed block of (μ, Σ)
      is identifiable.
    - ``blur``: circulant convolution with a normalised Gaussian kernel (``blur_std``, ``blur_taps``).
      A is invertible (its DFT is > 0), so the clean law is identifiable in principle, but the
      highest frequencies are attenuated by min|DFT| (≈ 0.02 for std 1, 5 taps).

    Raises:
        ValueError: unknown name.
    """
    d = cfg.dim
    if name == "identity":
        return np.eye(d)
    if name == "mask":
        keep = max(cfg.rank + 1, int(round(cfg.mask_keep * d)))
        m = np.zeros(d)
        m[rng.choice(d, size=keep, replace=False)] = 1.0
        return np.diag(m)
    if name == "blur":
        half = cfg.blur_taps // 2
        taps = np.exp(-0.5 * (np.arange(-half, half + 1) / cfg.blur_std) ** 2)
        taps /= taps.sum()
        a = np.zeros((d, d))
        for i in range(d):
            for k, w in zip(range(-half, half + 1), taps):
                a[i, (i + k) % d] += w
        return a
    raise ValueError(f"unknown operator {name!r}; allowed {OPERATORS}")


def observe(law: CleanLaw, a: np.ndarray, noise_sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """N measurements y = A x + σ_c ε, x ~ N(μ, Σ): (n, d) float64 (one frozen noise draw per x)."""
    x = law.mean + (rng.standard_normal((n, law.basis.shape[1])) * np.sqrt(law.eigenvalues)) @ law.basis.T
    return x @ a.T + noise_sigma * rng.standard_normal((n, a.shape[0]))


def _linear_decay(opt: torch.optim.Optimizer, steps: int, hold: float = 0.7) -> torch.optim.lr_scheduler.LambdaLR:
    """Constant rate for the first ``hold`` of the steps, then linear decay to 0 at the last step."""
    start = hold * steps
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 if i < start else max(0.0, (steps - i) / max(steps - start, 1)))


def _as_images(v: torch.Tensor) -> torch.Tensor:
    """(B, d) → (B, d, 1, 1): a d-vector as d channels of a 1×1 image (the engine's NCHW)."""
    return v.reshape(v.shape[0], -1, 1, 1)


def train_teacher(y: np.ndarray, noise_sigma: float, cfg: TheoryConfig, tick: Callable[[], None] = lambda: None) -> MLPDenoiser:
    """Train an :class:`MLPDenoiser` on the frozen measurements y (N, d) with the engine's
    :func:`rsd_engine.train.objectives.ambient_tweedie_loss` (EDM log-normal σ, clamped to ≥ σ_c).

    Adam(β = 0.9, 0.999), lr ``teacher_lr`` held for 70% of ``teacher_steps`` then decayed linearly to 0, minibatches
    of ``batch`` rows drawn with replacement. Calls ``tick`` after every step. Returns the net in eval mode.
    """
    data = torch.as_tensor(y, dtype=torch.float32)
    net = MLPDenoiser(cfg.dim, cfg.hidden, cfg.depth)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.teacher_lr, betas=(0.9, 0.999))
    sched = _linear_decay(opt, cfg.teacher_steps)
    for _ in range(cfg.teacher_steps):
        batch = data[torch.randint(0, data.shape[0], (cfg.batch,))]
        loss = ambient_tweedie_loss(net, _as_images(batch), noise_sigma).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        tick()
    return net.eval().requires_grad_(False)


def distill_linear(
    teacher: torch.nn.Module,
    a: np.ndarray,
    noise_sigma: float,
    rank: int,
    fake: str,
    cfg: TheoryConfig,
    tick: Callable[[], None] = lambda: None,
    *,
    alpha: float = 1.2,
    steps: int | None = None,
    lr: float | None = None,
    sigma_t_min: float = 0.0,
) -> LinearGenerator:
    """Distil G(z) = W z + b (W of shape (d, rank)) from ``teacher`` with the engine's SiD/RSD loss.

    Per step (RSD arXiv 2505.13377 §3 / SiD; docs/method.md, distillation):
    1. fake ``"mlp"`` only: one Adam step of the fake score on ambient_tweedie_loss(f_ψ, A G(z) + σ_c ε);
    2. u = A G(z) (no noise), t ~ U[0, t_max/1000], σ_t = karras_sigma(1 − t), u_t = u + σ_t n,
       L = mean sid_generator_loss(u, f_φ(u_t; σ_t), f_ψ(u_t; σ_t), α); one Adam step on (W, b).
    Fake ``"gauss"`` uses the exact denoiser of the current N(Ab, AWWᵀAᵀ) (the minimiser of step 1),
    rebuilt from the detached (W, b) every step: its parameters are frozen, its input is not.

    Args:
        teacher: ``net(x, sigma)`` on (B, d, 1, 1) with ``sigma_min``/``sigma_max``/``sigma_data``; frozen here.
        a: A (d, d).
        noise_sigma: σ_c of the fake score's ambient loss.
        rank: k, the latent size (d or r). W starts at σ_d times orthonormal columns
            (:class:`LinearGenerator`), b at 0.
        fake: ``"mlp"`` (initialised as a copy of an :class:`MLPDenoiser` teacher) or ``"gauss"``.
        tick: called after every generator step.
        alpha: SiD α.
        steps: generator steps (default ``cfg.distill_steps`` or ``cfg.gauss_distill_steps``).
        lr: generator Adam rate (default ``cfg.lr_generator`` or ``cfg.lr_generator_gauss``).
        sigma_t_min: > 0 draws t ~ U[t(σ_t_min), t_max/1000] instead, so that σ_t ≥ σ_t_min (not the
            engine's rule: a diagnostic of the draws below σ_c, where neither score network was trained).

    Returns:
        the trained :class:`LinearGenerator`.

    Raises:
        ValueError: unknown ``fake``, or ``"mlp"`` with a teacher that is not an :class:`MLPDenoiser`.
    """
    if fake not in ("mlp", "gauss"):
        raise ValueError(f"fake {fake!r}: allowed 'mlp', 'gauss'")
    if fake == "mlp" and not isinstance(teacher, MLPDenoiser):
        raise ValueError("fake 'mlp' is initialised from the teacher, which must be an MLPDenoiser")
    if steps is None:
        steps = cfg.distill_steps if fake == "mlp" else cfg.gauss_distill_steps
    if lr is None:
        lr = cfg.lr_generator if fake == "mlp" else cfg.lr_generator_gauss
    t_floor = 0.0 if not sigma_t_min else 1.0 - karras_position(sigma_t_min, teacher.sigma_min, teacher.sigma_max, cfg.rho)
    d = a.shape[0]
    a_t = torch.as_tensor(a, dtype=torch.float32)
    a64 = torch.as_tensor(a, dtype=torch.float64)
    teacher.requires_grad_(False)
    g = LinearGenerator(d, rank, init_scale=teacher.sigma_data, rng=torch.Generator().manual_seed(cfg.seed + 17))
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.9, 0.999))
    sched_g = _linear_decay(opt_g, steps)
    if fake == "mlp":
        f_psi = copy.deepcopy(teacher).train().requires_grad_(True)
        opt_f = torch.optim.Adam(f_psi.parameters(), lr=cfg.lr_fake, betas=(0.0, 0.999))
        sched_f = _linear_decay(opt_f, steps)
    for _ in range(steps):
        if fake == "mlp":
            with torch.no_grad():
                y_g = g(torch.randn(cfg.batch, rank)) @ a_t.T + noise_sigma * torch.randn(cfg.batch, d)
            loss_f = ambient_tweedie_loss(f_psi, _as_images(y_g), noise_sigma).mean()
            opt_f.zero_grad(set_to_none=True)
            loss_f.backward()
            opt_f.step()
            sched_f.step()
            fake_net = f_psi
        else:
            mean, cov = g.moments()
            fake_net = GaussianDenoiser(a64 @ mean, a64 @ cov @ a64.T)
        u = _as_images(g(torch.randn(cfg.batch, rank)) @ a_t.T)
        t = t_floor + torch.rand(cfg.batch) * (cfg.t_max / 1000.0 - t_floor)
        sigma_t = karras_sigma(1 - t, teacher.sigma_min, teacher.sigma_max, cfg.rho)
        u_t = u + sigma_t.reshape(-1, 1, 1, 1) * torch.randn_like(u)
        with frozen(fake_net):
            loss_g = sid_generator_loss(u, teacher(u_t, sigma_t), fake_net(u_t, sigma_t), alpha).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        opt_g.step()
        sched_g.step()
        tick()
    return g


def teacher_samples(net: torch.nn.Module, n: int, steps: int, stop_sigma: float | None, seed: int) -> np.ndarray:
    """n samples of the engine's Heun sampler (EDM Algorithm 1 with S_churn = 0) on ``net``.

    ``stop_sigma`` None runs to σ = 0 (teacher-full); σ_c returns D(x_i; σ_i) at the last σ_i ≥ σ_c
    (teacher-truncated, :func:`rsd_engine.evaluate.sampling.heun_sample`). Returns (n, d) float64.
    """
    dim = net.dim
    noise = torch.randn(n, dim, 1, 1, generator=torch.Generator().manual_seed(seed))
    out = heun_sample(net, noise, steps=steps, stop_sigma=stop_sigma).images
    return out.reshape(n, dim).double().numpy()


def law_metrics(mean: np.ndarray, cov: np.ndarray, target_mean: np.ndarray, target_cov: np.ndarray, basis: np.ndarray) -> dict:
    """Distances of N(mean, cov) to the target law N(target_mean, target_cov) whose covariance spans ``basis`` (d, r).

    Returns a dict of floats:
        ``angle_deg``: largest principal angle between the top-r eigenspace of ``cov`` and span(basis);
        ``fro``: ‖cov − target_cov‖_F;
        ``w2``: Gaussian Wasserstein-2 distance;
        ``var_perp``: tr of cov outside span(basis) (target: 0);
        ``eigs``: the r largest eigenvalues of cov, descending (target: those of target_cov).
    """
    r = basis.shape[1]
    return {
        "eigs": [float(e) for e in np.sort(np.linalg.eigvalsh(0.5 * (cov + cov.T)))[::-1][:r]],
        "angle_deg": float(principal_angles_deg(top_eigenspace(cov, r), basis).max()),
        "fro": float(np.linalg.norm(cov - target_cov)),
        "w2": gaussian_w2(mean, cov, target_mean, target_cov),
        "var_perp": off_subspace_variance(cov, basis),
    }


def _row(
    model: str, teacher: str, clean: tuple[np.ndarray, np.ndarray], meas: tuple[np.ndarray, np.ndarray], law: CleanLaw, a: np.ndarray
) -> dict:
    basis_meas, _ = np.linalg.qr(a @ law.basis)
    return {
        "model": model,
        "teacher": teacher,
        "clean": law_metrics(*clean, law.mean, law.cov, law.basis),
        "measurement": law_metrics(*meas, a @ law.mean, a @ law.cov @ a.T, basis_meas),
    }


def _sample_moments(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return v.mean(0), np.cov(v, rowvar=False, bias=True)


DENOISER_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0, 80.0)


@torch.no_grad()
def denoiser_error(
    net: torch.nn.Module, exact: torch.nn.Module, law: CleanLaw, a: np.ndarray, sigmas=DENOISER_SIGMAS, n: int = 2000, seed: int = 0
) -> list[float]:
    """Per-coordinate RMS of D_net(v; s) − D_exact(v; s) on v = A x + s n, x ~ N(μ, Σ), per s in ``sigmas``.

    Shows where the trained teacher is the Tweedie denoiser and where (s < σ_c, never trained by the
    Ambient-Tweedie loss) it is not. Returns one float per σ, on the [-1, 1] image scale.
    """
    rng = np.random.default_rng(seed)
    x = law.mean + (rng.standard_normal((n, law.basis.shape[1])) * np.sqrt(law.eigenvalues)) @ law.basis.T
    ax = torch.as_tensor(x @ a.T, dtype=torch.float32)
    out = []
    torch_rng = torch.Generator().manual_seed(seed)
    for s in sigmas:
        v = _as_images(ax + s * torch.randn(ax.shape, generator=torch_rng))
        diff = net(v, s).double() - exact(v, s).double()
        out.append(float(diff.pow(2).mean().sqrt()))
    return out


def null_direction_drift(
    law: CleanLaw,
    alpha: float,
    variance: float,
    *,
    sigma_floor: float = 0.0,
    batch: int = 40000,
    chunks: int = 8,
    t_max: float = 800.0,
    rho: float = 7.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Expected drift of the engine's SiD generator loss on the variance a generator puts off the clean subspace (A = I).

    The generator is x = μ + (Σ^½ + √v P⊥) z, z ~ N(0, I_d), P⊥ = I − UUᵀ: the clean law plus variance
    v in each of the d − r directions the clean law lacks (v = σ_c² is the noisy data law). Teacher
    and fake score are the exact denoisers of N(μ, Σ) and N(μ, Σ + v P⊥) (the fake's parameters
    frozen, its input differentiable, as in the engine's generator step). Returns the Monte-Carlo
    estimate of d E[L_G] / d ln v with L_G = :func:`rsd_engine.train.distill.sid_generator_loss` (per-sample
    weight included) and σ_t = :func:`rsd_engine.evaluate.sampling.karras_sigma` of 1 − t, t ~ U[0, t_max/1000], and its
    standard error over ``chunks`` batches.

    Sign: > 0 means gradient descent shrinks v (the generator drops the σ²I component); < 0 means it
    grows. Per direction, with k_b = v/(v + s²) the fake's gain and the teacher's gain 0, the
    unweighted expected gradient on the scale of the direction is ∝ k_b (1 − α k_b): negative
    wherever s² < (α − 1) v, so α > 1 pushes v up at the smallest σ_t (docs/method.md §8). ``sigma_floor`` drops the draws with σ_t <
    floor (as if teacher and fake
    agreed there, which is what two networks never trained below σ_c approximately do).

    Args:
        law: the clean law; alpha: SiD α; variance: v > 0.
        batch, chunks, seed: Monte-Carlo size and RNG.

    Returns:
        (drift, standard error).

    Raises:
        ValueError: v ≤ 0.
    """
    if not variance > 0:
        raise ValueError(f"variance {variance} must be > 0")
    d = law.mean.size
    f64 = torch.float64
    basis = torch.as_tensor(law.basis, dtype=f64)
    perp = torch.eye(d, dtype=f64) - basis @ basis.T
    mean = torch.as_tensor(law.mean, dtype=f64)
    root = torch.as_tensor(psd_sqrt(law.cov), dtype=f64)
    teacher = GaussianDenoiser(mean, torch.as_tensor(law.cov, dtype=f64))
    fake = GaussianDenoiser(mean, torch.as_tensor(law.cov, dtype=f64) + variance * perp)
    log_v = torch.tensor(float(np.log(variance)), dtype=f64, requires_grad=True)
    rng = torch.Generator().manual_seed(seed)
    n = max(batch // chunks, 1)
    grads = []
    for _ in range(chunks):
        w = root + torch.exp(0.5 * log_v) * perp
        z = torch.randn(n, d, generator=rng, dtype=f64)
        u = _as_images(mean + z @ w.T)
        s = karras_sigma(1 - torch.rand(n, generator=rng, dtype=f64) * (t_max / 1000.0), teacher.sigma_min, teacher.sigma_max, rho)
        u_t = u + s.reshape(-1, 1, 1, 1) * torch.randn(u.shape, generator=rng, dtype=f64)
        per = sid_generator_loss(u, teacher(u_t, s), fake(u_t, s), alpha) * (s >= sigma_floor)
        (g,) = torch.autograd.grad(per.mean(), log_v)
        grads.append(float(g))
    return float(np.mean(grads)), float(np.std(grads, ddof=1) / np.sqrt(chunks)) if chunks > 1 else float("nan")


def run_setting(
    law: CleanLaw,
    op: str,
    a: np.ndarray,
    noise_sigma: float,
    cfg: TheoryConfig,
    rng: np.random.Generator,
    tick: Callable[[], None] = lambda: None,
) -> tuple[list[dict], dict]:
    """One (A, σ_c): draw the N measurements, train the MLP teacher, sample both teachers, distil the
    generators of ``cfg.generators``. Returns (rows, diagnostics) as described in :func:`run_theory`."""
    y = observe(law, a, noise_sigma, cfg.n_obs, rng)
    rows = []
    ym = _sample_moments(y)
    rows.append(_row("data y", "-", ym, ym, law, a))
    m_hat, c_hat = ambient_affine_minimiser(y, noise_sigma)
    w, q = np.linalg.eigh(c_hat)
    c_plus = (q * np.clip(w, 0, None)) @ q.T
    rows.append(_row("moments (Ĉ_y−σ²I)₊", "-", (m_hat, c_plus), (m_hat, c_plus), law, a))

    exact = GaussianDenoiser(torch.as_tensor(a @ law.mean), torch.as_tensor(a @ law.cov @ a.T))
    mlp = train_teacher(y, noise_sigma, cfg, tick)
    diag = {
        "operator": op,
        "noise_sigma": noise_sigma,
        "sigmas": list(DENOISER_SIGMAS),
        "teacher_rms_error": denoiser_error(mlp, exact, law, a, seed=cfg.seed),
    }
    for name, net in (("gauss", exact), ("mlp", mlp)):
        seed = cfg.seed * 1000 + 7
        full = _sample_moments(teacher_samples(net, cfg.n_samples, cfg.heun_steps, None, seed))
        trunc = _sample_moments(teacher_samples(net, cfg.n_samples, cfg.heun_steps, noise_sigma, seed))
        rows.append(_row("teacher-full", name, full, full, law, a))
        rows.append(_row("teacher-truncated", name, trunc, trunc, law, a))
        for spec in (g for g in cfg.generators if g.teacher == name):
            g = distill_linear(
                net, a, noise_sigma, spec.rank or cfg.dim, name, cfg, tick, alpha=spec.alpha, sigma_t_min=noise_sigma if spec.floor else 0.0
            )
            b, ww = (t.numpy() for t in g.moments())
            rows.append(_row(spec.label(cfg.dim), name, (b, ww), (a @ b, a @ ww @ a.T), law, a))
    for r in rows:
        r.update(operator=op, noise_sigma=noise_sigma)
    return rows, diag


def total_steps(cfg: TheoryConfig) -> int:
    """Optimisation steps of :func:`run_theory` (the progress bar's total)."""
    per = cfg.teacher_steps + sum(cfg.distill_steps if g.teacher == "mlp" else cfg.gauss_distill_steps for g in cfg.generators)
    return per * len(cfg.operators) * len(cfg.noise_sigmas)


def run_theory(cfg: TheoryConfig, progress: bool = True, workers: int = 2) -> dict:
    """Run every (A, σ_c) of the config and return the results (the content of theory.json).

    Rows per setting: "data y" and "moments (Ĉ_y−σ²I)₊" (references: the measurements and the
    clipped moment estimate of the clean measurement law); for each teacher ("gauss", "mlp"):
    "teacher-full", "teacher-truncated" and the generators of ``cfg.generators``. Each row holds
    ``clean`` metrics (against N(μ, Σ); teacher samples live in measurement space and are compared
    as they are) and ``measurement`` metrics (against N(Aμ, AΣAᵀ); the generator as A G(z)), see
    :func:`law_metrics`.

    Args:
        cfg: the configuration.
        progress: draw a tqdm bar on stderr (one tick per optimisation step).
        workers: settings run in parallel in this many spawned processes (1: in this process). The
            results do not depend on it: every setting has its own seeds (``cfg.seed`` and its index).

    Returns:
        dict with ``config``, ``problem`` (μ, U, Λ, mask, blur kernel row and its smallest DFT gain),
        ``rows`` (dicts with operator, noise_sigma, model, teacher, clean, measurement),
        ``teacher_error`` (per setting, :func:`denoiser_error` of the MLP teacher), ``drift``
        (:func:`null_direction_drift` for each α of the generators, each v, with and without the
        floor σ_t ≥ σ_c for each σ_c), ``workers`` and ``wall_s``.

    Every process runs torch single-threaded (this one restored afterwards): the networks are tiny
    and extra threads only contend (10× slower on a busy 2-core machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_theory(cfg, progress, max(1, int(workers)))
    finally:
        torch.set_num_threads(threads)


_TICKS = None  # a worker's shared step counter (set by _init_worker)


def _init_worker(counter) -> None:
    global _TICKS
    _TICKS = counter
    torch.set_num_threads(1)


def _worker_tick(state={"n": 0}) -> None:  # noqa: B006 - a per-process batch of ticks
    state["n"] += 1
    if state["n"] >= 20:
        with _TICKS.get_lock():
            _TICKS.value += state["n"]
        state["n"] = 0


def _run_job(job: tuple, tick: Callable[[], None] | None = None) -> tuple[list[dict], dict]:
    """One setting with its own seeds: torch ``cfg.seed·1000 + index``, numpy (cfg.seed, index)."""
    cfg, law, op, a, s, index = job
    torch.manual_seed(cfg.seed * 1000 + index)
    rng = np.random.default_rng([cfg.seed, index])
    return run_setting(law, op, a, s, cfg, rng, tick=tick or _worker_tick)


def _run_theory(cfg: TheoryConfig, progress: bool, workers: int) -> dict:
    from tqdm import tqdm

    t0 = time.time()
    rng = np.random.default_rng(cfg.seed)
    law = make_clean_law(cfg, rng)
    mats = {op: measurement_matrix(op, cfg, rng) for op in cfg.operators}
    jobs = [(cfg, law, op, mats[op], s, i) for i, (op, s) in enumerate((op, s) for op in cfg.operators for s in cfg.noise_sigmas)]
    with tqdm(total=total_steps(cfg), desc="theory", unit="step", disable=not progress, mininterval=0.5) as bar:
        if workers == 1:
            results = []
            for job in jobs:
                bar.set_postfix_str(f"A={job[2]} σ={job[4]}")
                results.append(_run_job(job, tick=lambda: bar.update(1)))
        else:
            import multiprocessing as mp
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            ctx = mp.get_context("spawn")
            counter = ctx.Value("q", 0)
            bar.set_postfix_str(f"{len(jobs)} settings on {workers} processes")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(counter,)) as pool:
                futures = [pool.submit(_run_job, job) for job in jobs]
                pending = set(futures)
                while pending:
                    _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    bar.update(counter.value - bar.n)
                results = [f.result() for f in futures]
            bar.update(bar.total - bar.n)
    rows = [row for r, _ in results for row in r]
    diags = [dg for _, dg in results]
    drift = []
    for alpha in sorted({g.alpha for g in cfg.generators}):
        for floor in (0.0, *cfg.noise_sigmas):
            for v in cfg.drift_variances:
                m, se = null_direction_drift(
                    law, alpha, v, sigma_floor=floor, batch=cfg.drift_batch, t_max=cfg.t_max, rho=cfg.rho, seed=cfg.seed
                )
                drift.append({"alpha": alpha, "sigma_floor": floor, "variance": v, "drift": m, "stderr": se})
    blur_dft = np.abs(np.fft.fft(mats["blur"][0])) if "blur" in mats else None
    return {
        "config": asdict(cfg),
        "problem": {
            "mean": law.mean.tolist(),
            "basis": law.basis.tolist(),
            "eigenvalues": law.eigenvalues.tolist(),
            "mask": np.diag(mats["mask"]).tolist() if "mask" in mats else None,
            "blur_row": mats["blur"][0].tolist() if "blur" in mats else None,
            "blur_min_gain": float(blur_dft.min()) if blur_dft is not None else None,
        },
        "rows": rows,
        "teacher_error": diags,
        "drift": drift,
        "workers": workers,
        "wall_s": time.time() - t0,
    }
