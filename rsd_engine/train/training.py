"""The two training stages of RSD as :class:`rsd_engine.train.stage.Stage` objects: the teacher on the frozen
measurements (Phase I, docs/method.md §2) and the RSD iteration (Phase II, §3): a fake-score step
then a generator step, as in SiD. The loop itself is :class:`rsd_engine.train.stage.StageRunner`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ..data import CorruptedDataset, IndexStream
from ..io.runs import FINAL_NETWORK, GENERATOR_FINAL, TEACHER_FINAL
from ..models.networks import EDMPrecond, build_network, count_parameters, frozen, network_differences
from .checkpoints import load_checkpoint
from .distill import fake_score_loss, generator_loss
from .finite import NonFiniteError
from .objectives import Objective
from .stage import EMA, Stage, StepContext

__all__ = ["teacher_step", "rsd_iteration", "teacher_stage", "rsd_stage", "warmup"]

log = logging.getLogger("rsd_engine")


def teacher_step(
    ctx: StepContext, images_seen: int, *, data: CorruptedDataset, order: IndexStream, objective: Objective, grad_clip: float | None
) -> dict:
    """One teacher step: this process's share of the global batch at ``images_seen`` (frozen
    measurements y and their operator parameters: masks, MRI coil maps), the objective's mean loss, one
    update of ``net``.

    Returns:
        ``{"loss": scalar tensor}``.
    """
    idx = order.batch(images_seen, ctx.global_batch, ctx.rank, ctx.world)
    y, params = data.measurements(idx)
    params = {k: v.to(ctx.device) for k, v in params.items()}
    net = ctx.nets["net"]
    net.train()
    with ctx.autocast():
        loss = objective.loss(net, y.to(ctx.device), params).mean()
    ctx.update("net", loss, grad_clip)
    return {"loss": loss}


def rsd_iteration(
    ctx: StepContext,
    images_seen: int,
    *,
    teacher: EDMPrecond,
    objective: Objective,
    shape: tuple[int, int, int],
    sigma_init: float,
    alpha: float,
    t_max: float,
    rho: float,
    loss_scale: float,
    sigma_t_min: float | None,
    grad_clip_fake_score: float | None,
) -> dict:
    """One RSD iteration (docs/method.md §3; SiD's loop): a fake-score step, then a generator step.

    Fake score: the teacher's objective on A(x_g) + σ_c ε with G frozen. Generator: the SiD loss
    through A with the fake score's parameters frozen but its input differentiable. ``images_seen``
    is unused: latents come from torch's global RNG, reseeded by the runner.

    Which module each network is called through (the wrapped one of :attr:`StepContext.nets` for the
    network being updated, so that its gradients are averaged across processes; the bare one of
    :attr:`StepContext.unwrapped` otherwise, which skips the wrapper's gradient bookkeeping):

    =================  ===========================================  ==========================================
    step               generator G                                  fake score f_ψ
    =================  ===========================================  ==========================================
    fake-score update  bare, eval mode, under ``no_grad``           wrapped, train mode, updated
    generator update   wrapped, train mode, updated                 bare, eval mode, :func:`frozen` (parameters
                                                                    without gradient, input differentiable)
    =================  ===========================================  ==========================================

    Both updates go through :meth:`StepContext.update` (its table: skip, sanitise or step).

    Returns:
        ``{"loss_fake_score", "loss_generator"}`` (scalar tensors) and ``"nan_count"`` (generator
        samples dropped for a non-finite loss; their gradient paths are zeroed, a step with every
        sample dropped is skipped, :meth:`StepContext.update`).
    """
    fake, gen = ctx.nets["fake_score"], ctx.nets["generator"]
    fake_unwrapped, gen_unwrapped = ctx.unwrapped["fake_score"], ctx.unwrapped["generator"]
    fake.train()
    gen_unwrapped.eval()
    z = ctx.latents(shape)
    with ctx.autocast():
        loss_f = fake_score_loss(gen_unwrapped, fake, objective, z, sigma_init=sigma_init)
    ctx.update("fake_score", loss_f, grad_clip_fake_score)
    fake_unwrapped.eval()
    gen.train()
    z = ctx.latents(shape)
    with frozen(fake_unwrapped):
        with ctx.autocast():
            step = generator_loss(
                gen,
                teacher,
                fake_unwrapped,
                objective,
                z,
                sigma_init=sigma_init,
                alpha=alpha,
                t_max=t_max,
                rho=rho,
                loss_scale=loss_scale,
                sigma_t_min=sigma_t_min,
            )
        ctx.update("generator", step.loss, dropped=step.nan_count)
    return {"loss_fake_score": loss_f, "loss_generator": step.loss, "nan_count": step.nan_count}


def warmup(lr: float, warmup_kimg: float) -> Callable[[int], float]:
    """Linear learning-rate warm-up: lr·min(images_seen / (warmup_kimg·1000), 1); constant lr when
    ``warmup_kimg`` is 0 (EDM's schedule)."""
    if warmup_kimg <= 0:
        return lambda images_seen: lr
    return lambda images_seen: lr * min(images_seen / max(warmup_kimg * 1000, 1e-8), 1.0)


def teacher_stage(preset, data: CorruptedDataset, objective: Objective, evaluate: Callable[[str, EDMPrecond, int, float], object]) -> Stage:
    """Phase I: the corruption-aware teacher (docs/method.md §2) and its EMA, from fresh weights.

    The initial weights depend on ``run.seed`` only (the same on every process and every try).

    Args:
        preset: validated preset (``[teacher]``, ``run.seed``, ``eval.teacher_every_kimg``).
        data: the frozen training measurements.
        objective: the teacher objective (its operator fixes the network's mask channels).
        evaluate: live evaluation ``evaluate(stage, net, images_seen, train_seconds)``, given the teacher EMA.
    """
    t = preset.teacher
    torch.manual_seed(preset.run.seed)
    net = build_network(preset, objective.measurement.op.cond_channels, objective.measurement.op.cond_kind)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)
    log.info(
        "teacher: %s parameters, objective %s, σ_c = %g, %g kimg",
        f"{count_parameters(net):,}",
        objective.name,
        objective.noise_sigma,
        t.kimg,
    )
    step = partial(teacher_step, data=data, order=IndexStream(len(data), preset.run.seed), objective=objective, grad_clip=t.grad_clip)
    ema_name = FINAL_NETWORK[TEACHER_FINAL]
    return Stage(name="teacher", kimg=t.kimg, batch_size=t.batch_size, step=step, trained={"net": (net, opt)},
                 emas={ema_name: EMA(ema, "net", t.ema_halflife_kimg, t.ema_rampup_ratio)},
                 checkpoint_every_kimg=t.checkpoint_every_kimg, evaluate_every_kimg=preset.eval.teacher_every_kimg,
                 evaluate=lambda images_seen, seconds: evaluate("teacher", ema, images_seen, seconds), final_checkpoint=TEACHER_FINAL,
                 final_state={"objective": objective.name}, lr=warmup(t.lr, t.lr_warmup_kimg))  # fmt: skip


def rsd_stage(
    preset, teacher_checkpoint: Path, objective: Objective, evaluate: Callable[[str, EDMPrecond, int, float], object], device=None
) -> Stage:
    """Phase II: RSD (docs/method.md §3). Fake score, generator and generator EMA start from the teacher EMA.

    Args:
        preset: validated preset (``[distill]``, ``network.rho``, ``eval.distill_every_kimg``).
        teacher_checkpoint: folder of the teacher EMA (``teacher-final``).
        objective: the teacher's objective (the fake score trains with it).
        evaluate: live evaluation ``evaluate(stage, net, images_seen, train_seconds)``, given the generator EMA.
        device: where the frozen teacher runs.

    Raises:
        FileNotFoundError: no teacher checkpoint there.
        NonFiniteError: the teacher's weights are not finite (``"distill stage: teacher checkpoint …"``).
        ValueError: the teacher was trained with another network or preconditioning than the preset's.
    """
    d = preset.distill
    teacher_ck = load_checkpoint(teacher_checkpoint)
    try:
        teacher = teacher_ck.build(FINAL_NETWORK[TEACHER_FINAL])
    except NonFiniteError as e:
        raise NonFiniteError(f"distill stage: teacher {e}") from None
    diff = network_differences(teacher, preset, objective.measurement.op.cond_channels, objective.measurement.op.cond_kind)
    if diff:
        raise ValueError(f"teacher checkpoint {teacher_ck.path} was trained with another network/preconditioning: {diff} (stored, preset)")
    teacher = teacher.eval().requires_grad_(False).to(device)
    fake = copy.deepcopy(teacher).train().requires_grad_(True)
    gen = copy.deepcopy(teacher).train().requires_grad_(True)
    gen_ema = copy.deepcopy(teacher).eval()
    opt_f = torch.optim.Adam(fake.parameters(), lr=d.lr_fake_score, betas=(d.fake_score_beta1, 0.999), eps=1e-8)
    opt_g = torch.optim.Adam(gen.parameters(), lr=d.lr_generator, betas=(d.generator_beta1, 0.999), eps=1e-8)
    log.info(
        "distill: α = %g, σ_init = %g, t_max = %g, σ_t ≥ %g, %g kimg, batch %d",
        d.alpha,
        d.sigma_init,
        d.t_max,
        d.sigma_t_min or teacher.sigma_min,
        d.kimg,
        d.batch_size,
    )
    shape = (preset.data.channels, preset.data.resolution, preset.data.resolution)
    step = partial(
        rsd_iteration,
        teacher=teacher,
        objective=objective,
        shape=shape,
        sigma_init=d.sigma_init,
        alpha=d.alpha,
        t_max=d.t_max,
        rho=preset.network.rho,
        loss_scale=d.loss_scale_generator,
        sigma_t_min=d.sigma_t_min,
        grad_clip_fake_score=d.grad_clip_fake_score,
    )
    ema_name = FINAL_NETWORK[GENERATOR_FINAL]
    return Stage(name="distill", kimg=d.kimg, batch_size=d.batch_size, step=step,
                 trained={"fake_score": (fake, opt_f), "generator": (gen, opt_g)},
                 emas={ema_name: EMA(gen_ema, "generator", d.ema_halflife_kimg, d.ema_rampup_ratio)},
                 checkpoint_every_kimg=d.checkpoint_every_kimg, evaluate_every_kimg=preset.eval.distill_every_kimg,
                 evaluate=lambda images_seen, seconds: evaluate("distill", gen_ema, images_seen, seconds),
                 final_checkpoint=GENERATOR_FINAL, final_state={"sigma_init": d.sigma_init},
                 totals={"nan_count": "generator samples with a non-finite loss dropped"})  # fmt: skip
