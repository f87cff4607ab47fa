"""Samples of the evaluated models from fixed seeds, on one process or split across several.

The models (:data:`rsd_engine.io.runs.MODELS`): ``teacher-full`` (EDM Heun to σ = 0),
``teacher-truncated`` (Heun stopped at the truncation σ, returning the denoiser output) and
``generator`` (one step, G_ema) (docs/method.md §4.1). Sample ``s`` always starts from the latent of
seed ``s`` (and, for mask operators, the network condition of seed ``s``), whatever batch or process it
is drawn in, so the same weights, n and seeds give the same images and the same FID.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .. import assembly
from ..io.runs import GENERATOR, MODELS, TEACHER_FULL, TEACHER_TRUNCATED
from ..io.signals import StopPolicy, StopRequested
from ..models.networks import EDMPrecond
from ..operators import Condition
from ..seeding import EVAL_MASK_SEED, item_rng
from ..train.finite import require_finite
from ..train.objectives import Objective
from .sampling import heun_sample, one_step_generate

__all__ = ["latents", "Samples", "ModelSampler", "WEIGHTS"]

#: Which weights draw each model's samples (stated in every metric record).
WEIGHTS = {TEACHER_FULL: "teacher EMA", TEACHER_TRUNCATED: "teacher EMA", GENERATOR: "generator EMA"}


def latents(seeds, shape: tuple[int, int, int], device=None) -> torch.Tensor:
    """Standard-normal latents, one per seed, each from its own RNG: (len(seeds), C, H, W).

    The same seed always gives the same latent, whatever the batch it is drawn in.
    """
    if len(seeds) == 0:
        return torch.empty(0, *shape, device=device)
    z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return z.to(device)


@dataclass
class Samples:
    """Generated images (N, C, H, W) float32 in ≈[-1, 1] on the CPU, denoiser evaluations per image
    (``None`` when no sample was drawn), wall seconds."""

    images: torch.Tensor
    nfe: int | None
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Sampling throughput (images per wall-clock second)."""
        return self.images.shape[0] / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class ModelSampler:
    """How each evaluated model draws images, with the derived settings in one place.

    Args:
        objective: the run's objective: its measurement fixes whether the networks take a mask, its δ
            the masks' further corruption.
        shape: (C, H, W) of one image.
        batch_size: images per network call.
        steps: Heun steps N of the teacher sampler (NFE 2N − 1 when run to σ = 0).
        rho: ρ of the Karras schedule.
        truncation_sigma: σ at which ``teacher-truncated`` stops (0: it is not truncated).
        sigma_init: σ_init of the generator.
    """

    objective: Objective
    shape: tuple[int, int, int]
    batch_size: int
    steps: int = 18
    rho: float = 7.0
    truncation_sigma: float = 0.0
    sigma_init: float = 2.5

    @classmethod
    def from_preset(cls, preset, objective: Objective | None = None) -> "ModelSampler":
        """The sampler of a validated preset. The truncation σ is ``eval.stop_sigma`` when set, else the
        data noise σ_c (docs/method.md §4.1: stop when the next σ falls below σ_c).

        Args:
            preset: a validated :class:`rsd_engine.io.config.Preset`.
            objective: the run's objective; default: the preset's own (its measurement included).
        """
        if objective is None:
            objective = assembly.build_objective(preset, assembly.build_measurement(preset))
        e = preset.eval
        stop = e.stop_sigma if e.stop_sigma is not None else objective.noise_sigma
        shape = (preset.data.channels, preset.data.resolution, preset.data.resolution)
        return cls(objective, shape, e.batch_size, e.teacher_steps, preset.network.rho, float(stop), preset.distill.sigma_init)

    @property
    def truncated(self) -> bool:
        """Whether ``teacher-truncated`` differs from ``teacher-full`` (a truncation σ > 0)."""
        return self.truncation_sigma > 0

    @property
    def teacher_model(self) -> str:
        """The teacher model shown during training: ``teacher-truncated`` when truncated, else ``teacher-full``."""
        return TEACHER_TRUNCATED if self.truncated else TEACHER_FULL

    def models(self, requested: tuple[str, ...] = MODELS) -> tuple[str, ...]:
        """``requested`` without ``teacher-truncated`` when it would equal ``teacher-full``.

        Raises:
            ValueError: an unknown model name.
        """
        unknown = [m for m in requested if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model {', '.join(unknown)}; allowed: {', '.join(MODELS)}")
        return tuple(m for m in requested if m != TEACHER_TRUNCATED or self.truncated)

    def seed_conditions(self, seeds, device=None) -> Condition | None:
        """Network conditions (masks, and MRI coil maps) fixed by seed (one RNG per seed, apart from
        the latents' seeds) for ``len(seeds)`` images, or ``None`` when the networks take no mask."""
        if not self.objective.measurement.has_mask or len(seeds) == 0:
            return None
        parts = [self.objective.network_condition(1, item_rng(EVAL_MASK_SEED, s)) for s in seeds]
        return type(parts[0]).cat(parts).to(device)

    @torch.no_grad()
    def generate(self, model: str, net: EDMPrecond, seeds, device=None, stop: Callable[[], bool] | None = None) -> Samples:
        """Sample ``len(seeds)`` images of ``model`` on this process (net in eval mode meanwhile).

        Args:
            model: ``teacher-full`` | ``teacher-truncated`` | ``generator``.
            net: teacher EMA for the teacher models, generator EMA for ``generator``.
            seeds: sequence of int seeds (a range, or this process's share of one).
            device: where the networks run.
            stop: asked before each batch (a local check, e.g. :meth:`rsd_engine.io.signals.StopPolicy.local`);
                ``True`` abandons the sampling.

        Raises:
            ValueError: unknown model.
            StopRequested: ``stop()`` said so before a batch.
            NonFiniteError: a sample is not finite (no metric may score it).
        """
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
        was_training = net.training
        net.eval()
        outs, nfe = [], (1 if model == GENERATOR else None)
        start = time.perf_counter()
        try:
            for s in range(0, len(seeds), self.batch_size):
                if stop is not None and stop():
                    raise StopRequested()
                chunk = seeds[s : s + self.batch_size]
                z = latents(chunk, self.shape, device)
                cond = self.seed_conditions(chunk, device)
                if model == GENERATOR:
                    outs.append(one_step_generate(net, z, self.sigma_init, cond).float().cpu())
                else:
                    stop_sigma = self.truncation_sigma if model == TEACHER_TRUNCATED else None
                    res = heun_sample(net, z, self.steps, self.rho, stop_sigma, cond)
                    outs.append(res.images.cpu())
                    nfe = res.nfe
        finally:
            net.train(was_training)
        images = torch.cat(outs) if outs else torch.empty(0, *self.shape)
        if len(seeds):
            require_finite(images, f"{model} samples (seeds {seeds[0]}…{seeds[-1]})")
        return Samples(images, nfe, time.perf_counter() - start)

    def generate_across(self, accelerator, model: str, net: EDMPrecond, seeds: range, stops: StopPolicy | None = None) -> Samples:
        """Sample ``len(seeds)`` images of ``model`` with every process of ``accelerator`` drawing a
        contiguous share of the seeds (``split_between_processes``), collected on every process in
        seed order with ``gather_for_metrics``: exactly ``len(seeds)`` images, no padded duplicates.

        Every process must call it with the same arguments. ``seconds`` is this process's wall time
        including the gather; ``nfe`` is the main process's (it always holds a share when n ≥ 1).

        Args:
            stops: the run's stop policy: when given, each process asks its own flag before each of
                its batches (:meth:`StopPolicy.local`, see :meth:`generate`) and the processes agree
                after sampling, before the gather, whether to stop (:meth:`StopPolicy.agree`).

        Raises:
            ValueError: unknown model.
            StopRequested: a stop on some process; no samples are returned.
            NonFiniteError: a sample of this process's share is not finite.
        """
        start = time.perf_counter()
        with stops.agree() if stops is not None else nullcontext():
            with accelerator.split_between_processes(list(seeds)) as mine:
                local = self.generate(model, net, mine, accelerator.device, stops.local if stops is not None else None)
        images = _gather_rows(accelerator, local.images) if accelerator.num_processes > 1 else local.images
        return Samples(images, local.nfe, time.perf_counter() - start)


def _gather_rows(accelerator, local: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows in rank order (shares may differ by one row). Each share is
    padded to the largest for the collective and the padding dropped again, so no row repeats."""
    device = accelerator.device
    counts = accelerator.gather_for_metrics(torch.tensor([local.shape[0]], device=device)).tolist()
    most = max(counts)
    if most == 0:
        return local
    padded = torch.cat([local, local.new_zeros(most - local.shape[0], *local.shape[1:])]).to(device)
    everything = accelerator.gather_for_metrics(padded).cpu()
    return torch.cat([everything[r * most : r * most + c] for r, c in enumerate(counts)])
