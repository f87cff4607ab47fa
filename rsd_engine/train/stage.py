"""The one training loop of the engine: a :class:`Stage` (its step function, networks, optimisers
and EMAs) run by a :class:`StageRunner`.

Per step: reseed torch from (run seed, stage, rank, images seen) → learning rate → the stage's step
(which updates its networks through :meth:`StepContext.update`, skipping an update whose loss or
gradient is not finite) → EMA → non-finite guard → report → checkpoint → live evaluation → stop.
Around the loop: resume from ``<stage>-latest``, ``accelerator.prepare``, and the final checkpoint.
A run of skipped steps, or non-finite weights, stops the stage with
:class:`~rsd_engine.train.finite.NonFiniteError` naming the stage, the kimg and what went non-finite, before
any checkpoint or evaluation of those weights. Because the data order and every random draw are
functions of the position in images seen, a stage stopped at a checkpoint and resumed continues bit
for bit (docs/method.md §5).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..io.runs import RunDir
from ..io.signals import StopRequested
from ..seeding import step_seed
from .checkpoints import checkpoint_exists, load_checkpoint, save_checkpoint
from .ema import ema_beta, update_ema
from .finite import NonFiniteError, grads_finite, require_finite_weights

__all__ = ["SKIPPED", "sanitise_grads", "StepContext", "EMA", "Stage", "StageRunner"]

log = logging.getLogger("rsd_engine")


#: Stat (a total over the stage) counting the updates skipped for a non-finite loss or gradient.
SKIPPED = "skipped_steps"


def sanitise_grads(module: nn.Module) -> None:
    """Replace NaN/±Inf gradient entries by 0 (EDM's ``nan_to_num`` on gradients): the part of the
    gradient that flowed through samples dropped from a loss (:meth:`StepContext.update`'s ``dropped``)."""
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0.0, posinf=0.0, neginf=0.0, out=p.grad)


class StepContext:
    """What a step function sees: the prepared networks, their optimisers and this process's share.

    Attributes:
        nets: name → prepared network (wrapped for data parallelism where there are several processes).
        unwrapped: name → the bare network inside (for EMA, checkpoints and calls without gradient sync).
        optimizers: name → prepared optimiser.
        global_batch: images per step over all processes; ``local_batch`` = global_batch / processes.
        rank, world: this process's index and the number of processes.
        device: the accelerator's device.
        skipped: why each update of the current step was skipped (``"<network>: <reason>"``); the
            runner empties it before every step.
    """

    def __init__(self, accelerator, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], global_batch: int):
        self.accelerator = accelerator
        self.nets = nets
        self.unwrapped = {name: accelerator.unwrap_model(net) for name, net in nets.items()}
        self.optimizers = optimizers
        self.global_batch = global_batch
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.local_batch = global_batch // self.world
        self.device = accelerator.device
        self.skipped: list[str] = []

    def autocast(self):
        """The accelerator's autocast context (mixed precision when configured)."""
        return self.accelerator.autocast()

    def latents(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard-normal latents (local_batch, *shape) from torch's global RNG, on the device."""
        return torch.randn(self.local_batch, *shape, device=self.device)

    def update(self, name: str, loss: torch.Tensor, clip: float | None = None, dropped: int = 0) -> None:
        """One optimiser step of network ``name`` on the scalar ``loss``: backward, the non-finite
        guard, gradient-norm clipping to ``clip`` (if set), the step, gradients cleared.

        The only place where the networks of a stage change. Every process calls backward (which
        averages the gradients across processes), then one all-reduce sums two flags over the
        processes: "the loss is not finite here" and the samples dropped here. The decision is then
        the same on every process (the gradients are equal after backward, so is their check):

        ==========================================================  =====================================
        case, checked in this order                                 action
        ==========================================================  =====================================
        the loss is not finite on some process                      skip (reason ``loss = …`` with one
                                                                    process, else ``loss not finite``)
        every sample of the global batch was dropped                skip
        fp16 loss scaling (Accelerate's gradient scaler is on)      step: the scaler skips an overflowing
                                                                    step itself (no gradient check here)
        gradient not finite, some samples dropped (``dropped``)     sanitise: the non-finite entries come
                                                                    from the dropped samples' paths and
                                                                    are set to 0 (:func:`sanitise_grads`),
                                                                    then clip and step
        gradient not finite, no sample dropped                      skip (``gradient not finite``)
        otherwise                                                   clip (if ``clip``) and step
        ==========================================================  =====================================

        A skip clears the gradients, leaves the weights and the optimiser state untouched and adds
        ``"<name>: <reason>"`` to :attr:`skipped`; a step clears the gradients after it. A network that
        appears in this loss without being trained by it is frozen by the caller
        (:func:`rsd_engine.models.networks.frozen`), so no gradient is left in it.

        Args:
            name: key of :attr:`nets`.
            loss: scalar tensor, this process's mean loss.
            clip: max gradient norm, or ``None``.
            dropped: samples of this process's share left out of ``loss`` for a non-finite value.
        """
        net, opt = self.nets[name], self.optimizers[name]
        flags = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0, float(dropped)], device=self.device)
        self.accelerator.backward(loss)
        if self.world > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        bad_loss, dropped_all = bool(flags[0] > 0), int(flags[1])
        reason = None
        if bad_loss:
            reason = f"loss = {loss.item():g}" if self.world == 1 else "loss not finite"
        elif dropped_all >= self.global_batch:
            reason = "every sample dropped for a non-finite loss"
        elif self.accelerator.scaler is None and not grads_finite(net):
            if dropped_all:
                sanitise_grads(net)
            else:
                reason = "gradient not finite"
        if reason is not None:
            opt.zero_grad(set_to_none=True)
            self.skipped.append(f"{name}: {reason}")
            return
        if clip:
            self.accelerator.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)


@dataclass
class EMA:
    """An exponential moving average of one trained network (EDM's half-life rule with ramp-up,
    :func:`rsd_engine.train.ema.ema_beta`).

    Args:
        module: the average (eval mode, no gradients); starts as given.
        source: name of the trained network it follows (a key of :attr:`Stage.trained`).
        halflife_kimg: half-life in thousands of images.
        rampup_ratio: half-life ≤ ratio × images seen (0 = off).
    """

    module: nn.Module
    source: str
    halflife_kimg: float
    rampup_ratio: float

    def update(self, source: nn.Module, batch: int, images_seen: int) -> None:
        """Average in ``source`` after a step of ``batch`` images taken at ``images_seen``."""
        update_ema(self.module, source, ema_beta(batch, images_seen, self.halflife_kimg, self.rampup_ratio))


@dataclass
class Stage:
    """One training stage for :class:`StageRunner`.

    Args:
        name: ``"teacher"`` or ``"distill"`` (checkpoint ``<name>-latest``, events, status, seeds).
        kimg: length in thousands of images seen (one global batch per step).
        batch_size: global batch, divisible by the number of processes.
        step: ``step(ctx, images_seen) -> stats``: one optimisation step at stream position
            ``images_seen``; ``stats`` maps names to scalars (tensors or numbers) for the reports.
        trained: name → (network, optimiser), bare modules; prepared in this order.
        emas: name → :class:`EMA`; all are saved in the final checkpoint.
        checkpoint_every_kimg: resumable checkpoint period (also written at the end and on stop).
        evaluate_every_kimg: live-evaluation period (also at the end, never on stop).
        evaluate: ``evaluate(images_seen, train_seconds)``, the live evaluation (every process calls
            it); ``train_seconds`` is the stage's wall time spent in steps so far (evaluation and
            checkpoints excluded, carried across resumes).
        final_checkpoint: name of the checkpoint written at the end (the EMAs only).
        final_state: extra numbers for the final checkpoint's state.json.
        lr: optional schedule ``lr(images_seen)`` applied to every optimiser before each step
            (reported as ``lr``).
        totals: stat name → what it counts, for stats summed over the stage (e.g. dropped samples)
            instead of averaged over a report window; a non-zero total is logged as a warning.
    """

    name: str
    kimg: float
    batch_size: int
    step: Callable[["StepContext", int], dict[str, Any]]
    trained: dict[str, tuple[nn.Module, torch.optim.Optimizer]]
    emas: dict[str, EMA]
    checkpoint_every_kimg: float
    evaluate_every_kimg: float
    evaluate: Callable[[int, float], Any]
    final_checkpoint: str
    final_state: dict[str, Any] = field(default_factory=dict)
    lr: Callable[[int], float] | None = None
    totals: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class StageRunner:
    """Runs stages of one run folder with one accelerator (keyword arguments only).

    Args:
        accelerator: the run's ``Accelerator``.
        run_dir: the run folder (checkpoints, events, status).
        seed: run seed (per-step seeds, :func:`rsd_engine.seeding.step_seed`).
        preset_toml: the effective preset, stored with every checkpoint.
        state: extra numbers for every ``<stage>-latest`` state.json (e.g. the objective).
        stop: whether a stop was requested, the same answer on every process
            (:meth:`rsd_engine.io.signals.StopPolicy.agreed`, a collective); asked once per step.
        max_skipped_in_a_row: consecutive steps with a skipped update (non-finite loss or gradient)
            after which the stage stops with :class:`~rsd_engine.train.finite.NonFiniteError`.
    """

    accelerator: Any
    run_dir: RunDir
    seed: int
    preset_toml: str
    state: dict
    stop: Callable[[], bool]
    max_skipped_in_a_row: int = 10

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files."""
        return self.accelerator.is_main_process

    def run(self, stage: Stage) -> int:
        """Train ``stage`` from its latest checkpoint (or from scratch) to ``stage.kimg``; write
        ``<name>-latest`` on schedule and ``stage.final_checkpoint`` at the end.

        Returns:
            images seen at the end.

        Raises:
            StopRequested: after the checkpoint of the step during which a stop was requested.
            NonFiniteError: ``max_skipped_in_a_row`` steps in a row skipped an update, a network's
                weights (trained or EMA) are not finite, or a live evaluation drew non-finite samples;
                the message starts with ``"<stage> stage at <kimg> kimg"``. Nothing of that step is
                checkpointed or evaluated.
            ValueError: a batch not divisible by the number of processes.
        """
        acc = self.accelerator
        if stage.batch_size % acc.num_processes:
            raise ValueError(
                f"{stage.name}.batch_size = {stage.batch_size} must be divisible by the number of processes ({acc.num_processes})"
            )
        total = int(round(stage.kimg * 1000))
        images_seen, train_seconds = self._resume(stage)
        if images_seen and self._evaluation_lost(stage, images_seen, total):
            log.info(
                "%s: redoing the live evaluation at %.3f kimg, which the interrupted run did not record", stage.name, images_seen / 1000
            )
            stage.evaluate(images_seen, train_seconds)
        names = list(stage.trained)
        prepared = acc.prepare(*(m for m, _ in stage.trained.values()), *(o for _, o in stage.trained.values()))
        ctx = StepContext(acc, dict(zip(names, prepared[: len(names)])), dict(zip(names, prepared[len(names) :])), stage.batch_size)
        for ema in stage.emas.values():
            ema.module.to(acc.device)
        saved = {**ctx.unwrapped, **{name: ema.module for name, ema in stage.emas.items()}}
        self._status(
            state="running",
            stage=stage.name,
            kimg=images_seen / 1000,
            kimg_total=total / 1000,
            progress=min(images_seen / max(total, 1), 1.0),
        )
        report = _Report(stage, images_seen, total, train_seconds, disable=not self.main)
        in_a_row = 0
        while images_seen < total:
            started = time.perf_counter()
            torch.manual_seed(step_seed(self.seed, stage.name, ctx.rank, images_seen))
            lr = self._set_lr(stage, ctx, images_seen)
            ctx.skipped = []
            stats = stage.step(ctx, images_seen)
            for ema in stage.emas.values():
                ema.update(ctx.unwrapped[ema.source], stage.batch_size, images_seen)
            before, images_seen = images_seen, images_seen + stage.batch_size
            in_a_row = in_a_row + 1 if ctx.skipped else 0
            report.add({**stats, SKIPPED: len(ctx.skipped)}, time.perf_counter() - started)
            failure = self._nonfinite(stage, ctx, saved, images_seen, in_a_row)
            stop, done = self.stop(), images_seen >= total
            if report.due() or done or stop or failure:
                self._report(stage, report.flush(images_seen, lr), images_seen, total, report.rates(images_seen))
            if failure:
                report.close()
                raise failure
            self._after_step(stage, ctx, saved, before, images_seen, done, stop, report)
        report.close()
        if self.main:
            started = time.perf_counter()
            state = {"stage": stage.name, "images_seen": images_seen, "train_seconds": report.train_seconds, **stage.final_state}
            save_checkpoint(
                self.run_dir.checkpoint(stage.final_checkpoint), {n: e.module for n, e in stage.emas.items()}, state, self.preset_toml
            )
            self.run_dir.append_event(
                stage.name,
                "checkpoint",
                kimg=images_seen / 1000,
                name=stage.final_checkpoint,
                seconds=round(time.perf_counter() - started, 3),
            )
        acc.wait_for_everyone()
        return images_seen

    def _resume(self, stage: Stage) -> tuple[int, float]:
        """Load ``<stage>-latest`` into the bare networks, EMAs and optimisers; returns its images seen
        and training seconds (``(0, 0.0)`` without one; checkpoints written before the seconds were
        recorded count 0 seconds)."""
        latest = self.run_dir.latest(stage.name)
        if not checkpoint_exists(latest):
            return 0, 0.0
        ck = load_checkpoint(latest)
        for name, (module, _) in stage.trained.items():
            ck.load_weights(name, module)
        for name, ema in stage.emas.items():
            ck.load_weights(name, ema.module)
        ck.load_optimizers({name: opt for name, (_, opt) in stage.trained.items()})
        images_seen = int(ck.state["images_seen"])
        log.info("%s: resumed at %.3f kimg from %s", stage.name, images_seen / 1000, ck.path)
        return images_seen, float(ck.state.get("train_seconds", 0.0))

    def _evaluation_lost(self, stage: Stage, images_seen: int, total: int) -> bool:
        """Whether the live evaluation due at the resumed position ``images_seen`` (the step of the
        checkpoint) is missing from events.jsonl: the previous process was killed or stopped after the
        checkpoint and before the evaluation's ``grid`` event. The main process decides for all."""
        lost = [False]
        if self.main:
            due = _crossed(images_seen - stage.batch_size, images_seen, stage.evaluate_every_kimg) or images_seen >= total
            kimg = images_seen / 1000
            lost[0] = due and not any(
                e.get("kind") == "grid" and e.get("stage") == stage.name and e.get("kimg") == kimg for e in self.run_dir.read_events()
            )
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(lost)
        return lost[0]

    def _nonfinite(self, stage: Stage, ctx: StepContext, saved: dict, images_seen: int, in_a_row: int) -> NonFiniteError | None:
        """The error that stops the stage after this step, naming the stage, the kimg and what went
        non-finite: ``in_a_row`` ≥ ``max_skipped_in_a_row`` steps that skipped an update, or a saved
        network (trained or EMA) that is not finite; else ``None``."""
        where = _where(stage, images_seen)
        if in_a_row >= self.max_skipped_in_a_row:
            return NonFiniteError(
                f"{where}: {in_a_row} steps in a row skipped for a non-finite loss or gradient (last: {'; '.join(ctx.skipped)})"
            )
        try:
            require_finite_weights(saved, where)
        except NonFiniteError as e:
            return e
        return None

    @staticmethod
    def _set_lr(stage: Stage, ctx: StepContext, images_seen: int) -> float | None:
        if stage.lr is None:
            return None
        lr = stage.lr(images_seen)
        for opt in ctx.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def _after_step(
        self, stage: Stage, ctx: StepContext, saved: dict, before: int, images_seen: int, done: bool, stop: bool, report: "_Report"
    ) -> None:
        """Checkpoint (every ``checkpoint_every_kimg``, at the end and on stop), live evaluation (every
        ``evaluate_every_kimg`` and at the end, not on stop), and the stop itself. A stop that
        interrupts the live evaluation (between its batches) is a stop at this step: the checkpoint
        is written and the evaluation's FID is not recorded; the resumed run draws that evaluation
        again (as after a kill between the checkpoint and the evaluation's grid, :meth:`_evaluation_lost`).
        The evaluation's stop is already agreed by every process (:class:`~rsd_engine.io.signals.StopPolicy`).

        Raises:
            StopRequested: after the checkpoint, when a stop was requested.
        """
        saved_now = _crossed(before, images_seen, stage.checkpoint_every_kimg) or done or stop
        if saved_now:
            self._save_latest(stage, saved, ctx.optimizers, images_seen, report.train_seconds)
        if (_crossed(before, images_seen, stage.evaluate_every_kimg) or done) and not stop:
            try:
                stage.evaluate(images_seen, report.train_seconds)
            except StopRequested:
                log.warning("%s: live evaluation at %.3f kimg interrupted by a stop request; not recorded", stage.name, images_seen / 1000)
                stop = True
                if not saved_now:
                    self._save_latest(stage, saved, ctx.optimizers, images_seen, report.train_seconds)
            except NonFiniteError as e:
                report.close()
                raise NonFiniteError(f"{_where(stage, images_seen)}: live evaluation: {e}") from None
        if stop:
            report.close()
            raise StopRequested()

    def _save_latest(self, stage: Stage, networks: dict, optimizers: dict, images_seen: int, train_seconds: float) -> None:
        if self.main:
            started = time.perf_counter()
            name = self.run_dir.latest(stage.name).name
            state = {"stage": stage.name, "images_seen": images_seen, "train_seconds": train_seconds, **self.state}
            save_checkpoint(self.run_dir.latest(stage.name), networks, state, self.preset_toml, optimizers)
            self.run_dir.append_event(
                stage.name, "checkpoint", kimg=images_seen / 1000, name=name, seconds=round(time.perf_counter() - started, 3)
            )
        self.accelerator.wait_for_everyone()

    def _report(self, stage: Stage, values: dict, images_seen: int, total: int, rates: tuple[float, float]) -> None:
        """A ``progress`` event with the stage's stats, and the status line (kimg, progress, speed, ETA)."""
        ips, eta = rates
        for key, what in _report_totals(stage).items():
            if values.get(key):
                log.warning("%s: %d %s so far", stage.name, values[key], what)
        if self.main:
            self.run_dir.append_event(
                stage.name, "progress", kimg=images_seen / 1000, images_per_s=ips, train_seconds=values.pop("train_seconds"), **values
            )
        self._status(
            kimg=images_seen / 1000,
            progress=min(images_seen / total, 1.0),
            it_per_s=ips / stage.batch_size,
            images_per_s=ips,
            eta_s=None if math.isinf(eta) else eta,
        )

    def _status(self, **fields) -> None:
        if self.main:
            self.run_dir.write_status(**fields)


def _report_totals(stage: Stage) -> dict[str, str]:
    """Stats summed over ``stage`` (name → what it counts): the runner's skipped updates and the stage's own."""
    return {SKIPPED: "steps skipped for a non-finite loss or gradient", **stage.totals}


def _where(stage: Stage, images_seen: int) -> str:
    """``"<stage> stage at <kimg> kimg"``, how non-finite errors of a stage begin."""
    return f"{stage.name} stage at {images_seen / 1000:g} kimg"


def _crossed(before: int, after: int, every_kimg: float) -> bool:
    """Whether a multiple of ``every_kimg`` thousand images lies in (before, after]."""
    every = max(int(every_kimg * 1000), 1)
    return before // every != after // every


class _Report:
    """Progress bar, throughput clock, the stage's training seconds (wall time inside steps, carried
    across resumes) and the stats of the current report window of one stage."""

    def __init__(self, stage: Stage, images_seen: int, total: int, train_seconds: float, disable: bool):
        self.totals = {key: 0 for key in _report_totals(stage)}
        self.train_seconds = train_seconds
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.batch = stage.batch_size
        self.start_images, self.total = images_seen, total
        self.t0 = self.last = time.perf_counter()
        self.bar = tqdm(total=total, initial=images_seen, unit="img", unit_scale=True, desc=stage.name, disable=disable, dynamic_ncols=True)

    def add(self, stats: dict[str, Any], seconds: float) -> None:
        """Account one step's stats (tensors are read as Python numbers) and the wall seconds it took."""
        self.train_seconds += seconds
        for key, value in stats.items():
            if key in self.totals:
                self.totals[key] += int(value)
            else:
                self.sums[key] = self.sums.get(key, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
        self.steps += 1
        self.bar.update(self.batch)

    def due(self) -> bool:
        """Whether the last report is more than 5 s old."""
        return time.perf_counter() - self.last > 5

    def rates(self, images_seen: int) -> tuple[float, float]:
        """(images per second since the stage (re)started, seconds left; ∞ before the first image)."""
        ips = (images_seen - self.start_images) / max(time.perf_counter() - self.t0, 1e-9)
        return ips, ((self.total - images_seen) / ips if ips > 0 else math.inf)

    def flush(self, images_seen: int, lr: float | None) -> dict[str, float]:
        """The window's means, the stage's totals, the current ``lr`` and ``train_seconds``; starts a new window."""
        values = {key: total / self.steps for key, total in self.sums.items()}
        values.update(self.totals)
        if lr is not None:
            values["lr"] = lr
        self.bar.set_postfix({key: f"{v:.4g}" for key, v in values.items()}, img_s=f"{self.rates(images_seen)[0]:.1f}")
        values["train_seconds"] = round(self.train_seconds, 3)
        self.sums, self.steps, self.last = {}, 0, time.perf_counter()
        return values

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()
