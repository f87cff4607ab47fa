"""The Accelerate training loop shared by both stages, and the run pipeline teacher → distill → evaluate.

Exact resume (CASES.md 8): every step reseeds torch from (run seed, stage, process rank, images seen)
and the data order is a function of images seen (:class:`rsd_engine.data.IndexStream`), so a run
stopped at any checkpoint and resumed continues bit for bit. Networks, EMA and Adam states are saved.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import config as cfg
from .checkpoints import checkpoint_exists, load_checkpoint, save_checkpoint
from .data import IndexStream, clean_reference, to_float, training_measurements
from .distill import fake_score_step_loss, generator_step_loss
from .ema import ema_beta, update_ema
from .evaluation import MODELS, Evaluator, generate
from .grids import save_grid
from .networks import EDMPrecond, build_network, count_parameters, network_config
from .objectives import teacher_loss
from .runs import RunDir, atomic_write_json
from .signals import STOP

__all__ = ["StopRequested", "Pipeline", "make_accelerator", "teacher_checkpoint_dir"]

log = logging.getLogger("rsd_engine")
_STAGE_IDS = {"teacher": 1, "distill": 2}


class StopRequested(Exception):
    """Raised inside a stage after SIGTERM/SIGINT, once the final checkpoint is written."""


def make_accelerator(preset) -> Accelerator:
    """An ``Accelerator`` for the preset: CPU (gloo across processes) when no GPU or device = cpu.

    Raises:
        ValueError: mixed precision requested on a CPU (normally refused earlier by validation).
    """
    a = preset.accelerate
    cpu = a.device == "cpu" or not torch.cuda.is_available()
    if cpu and a.mixed_precision != "no":
        raise ValueError(f"accelerate.mixed_precision = {a.mixed_precision!r} needs a GPU; allowed on CPU: 'no'")
    return Accelerator(cpu=cpu, mixed_precision=a.mixed_precision)


def teacher_checkpoint_dir(preset, run: RunDir) -> Path:
    """Where a run's teacher EMA lives: ``teacher.checkpoint`` when set (a run folder or a checkpoint
    folder), else ``run_dir/checkpoints/teacher-final``."""
    src = preset.teacher.checkpoint
    if src:
        path = Path(src)
        return path / "checkpoints" / "teacher-final" if (path / "checkpoints").is_dir() else path
    return run.checkpoints / "teacher-final"


def _step_seed(seed: int, stage: str, rank: int, images_seen: int) -> int:
    return (seed * 1_000_003 + _STAGE_IDS[stage] * 999_983 + rank * 7_919 + images_seen) % (2**63 - 1)


def _sanitise_grads(module: torch.nn.Module) -> None:
    """Replace NaN/±Inf gradient entries by 0 (EDM's ``nan_to_num`` on gradients)."""
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0.0, posinf=0.0, neginf=0.0, out=p.grad)


@dataclass
class _Clock:
    """Throughput and ETA bookkeeping of one stage."""

    start_images: int
    total: int
    t0: float = field(default_factory=time.perf_counter)

    def rates(self, images_seen: int) -> tuple[float, float]:
        """(images per second since the stage (re)started, seconds left; ∞ before the first image)."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        ips = (images_seen - self.start_images) / dt
        eta = (self.total - images_seen) / ips if ips > 0 else math.inf
        return ips, eta


class Pipeline:
    """One run: teacher training, RSD distillation and evaluation, with resume.

    Args:
        preset: validated preset (the run folder's frozen one when resuming).
        run: the run folder.
        accelerator: from :func:`make_accelerator`.
    """

    def __init__(self, preset: cfg.Preset, run: RunDir, accelerator: Accelerator):
        self.p = preset
        self.run = run
        self.acc = accelerator
        self.preset_toml = cfg.dumps(preset)
        self.objective = cfg.resolve_objective(preset)
        self.dataset = training_measurements(preset)
        self.op = self.dataset.op.to(accelerator.device)
        self.shape = (preset.data.channels, preset.data.resolution, preset.data.resolution)
        self.net_config = network_config(preset, self.op.cond_channels)
        self.evaluator = Evaluator(preset, self.dataset, accelerator.device)

    # ---------------------------------------------------------------- helpers
    @property
    def main(self) -> bool:
        """Whether this is the main process (the one that writes files and evaluates)."""
        return self.acc.is_main_process

    def _event(self, stage: str, kind: str, **fields) -> None:
        if self.main:
            self.run.append_event(stage, kind, **fields)

    def _status(self, **fields) -> None:
        if self.main:
            self.run.write_status(**fields)

    def _stop_requested(self) -> bool:
        """Whether any process received SIGTERM/SIGINT (all processes agree, so they stop together)."""
        stop = STOP.is_set()
        if self.acc.num_processes == 1:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, reduction="sum").item() > 0)

    def _ckpt(self, name: str) -> Path:
        return self.run.checkpoints / name

    def _boundaries(self, before: int, after: int, every_kimg: float) -> bool:
        every = max(int(every_kimg * 1000), 1)
        return before // every != after // every

    # ---------------------------------------------------------------- teacher
    def teacher_final(self) -> Path:
        """Folder of the trained teacher EMA (see :func:`teacher_checkpoint_dir`)."""
        return teacher_checkpoint_dir(self.p, self.run)

    def train_teacher(self) -> None:
        """Phase I: the corruption-aware teacher (METHOD.md §2) with EMA; writes ``teacher-final``."""
        t = self.p.teacher
        acc = self.acc
        total = int(round(t.kimg * 1000))
        torch.manual_seed(self.p.run.seed)  # identical initial weights on every process and every try
        net = build_network(self.net_config)
        ema = copy.deepcopy(net).eval().requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=t.lr, betas=(0.9, 0.999), eps=1e-8)
        images_seen = 0
        latest = self._ckpt("teacher-latest")
        if checkpoint_exists(latest):
            ck = load_checkpoint(latest)
            ck.load_weights("net", net)
            ck.load_weights("ema", ema)
            ck.load_optimizers({"net": opt})
            images_seen = int(ck.state["images_seen"])
            log.info("teacher: resumed at %.3f kimg from %s", images_seen / 1000, ck.path)
        log.info("teacher: %s parameters, objective %s, σ_c = %g, %g kimg", f"{count_parameters(net):,}", self.objective, self.p.corruption.noise_sigma, t.kimg)
        net, opt = acc.prepare(net, opt)
        ema.to(acc.device)
        stream = IndexStream(len(self.dataset), self.p.run.seed)
        world, rank = acc.num_processes, acc.process_index
        batch = t.batch_size
        if batch % world:
            raise ValueError(f"teacher.batch_size = {batch} must be divisible by the number of processes ({world})")
        clock = _Clock(images_seen, total)
        bar = tqdm(total=total, initial=images_seen, unit="img", unit_scale=True, desc="teacher", disable=not self.main, dynamic_ncols=True)
        losses: list[float] = []
        last_report = time.perf_counter()
        self._status(state="running", stage="teacher", kimg=images_seen / 1000, kimg_total=total / 1000, progress=images_seen / max(total, 1))
        while images_seen < total:
            torch.manual_seed(_step_seed(self.p.run.seed, "teacher", rank, images_seen))
            idx = stream.batch(images_seen, batch, rank, world)
            y, params = self.dataset.measurements(idx)
            y = y.to(acc.device)
            mask = params["mask"].to(acc.device) if "mask" in params else None
            lr = t.lr * min(images_seen / max(t.lr_warmup_kimg * 1000, 1e-8), 1.0) if t.lr_warmup_kimg > 0 else t.lr
            for g in opt.param_groups:
                g["lr"] = lr
            net.train()
            with acc.autocast():
                loss = teacher_loss(self.objective, net, y, self.p.corruption.noise_sigma, t.p_mean, t.p_std,
                                    mask=mask, delta=self.op.delta).mean()
            acc.backward(loss)
            _sanitise_grads(net)
            if t.grad_clip:
                acc.clip_grad_norm_(net.parameters(), t.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            update_ema(ema, acc.unwrap_model(net), ema_beta(batch, images_seen, t.ema_halflife_kimg, t.ema_rampup_ratio))
            before, images_seen = images_seen, images_seen + batch
            losses.append(float(loss.detach()))
            bar.update(batch)
            stop = self._stop_requested()
            done = images_seen >= total
            if time.perf_counter() - last_report > 5 or done or stop:
                ips, eta = clock.rates(images_seen)
                mean_loss = sum(losses) / len(losses)
                bar.set_postfix(loss=f"{mean_loss:.4g}", img_s=f"{ips:.1f}")
                self._report("teacher", images_seen, total, batch, ips, eta, loss=mean_loss, lr=lr)
                losses.clear()
                last_report = time.perf_counter()
            self._after_step("teacher", before, images_seen, done, stop, bar, t.checkpoint_every_kimg, self.p.eval.teacher_every_kimg,
                             {"net": acc.unwrap_model(net), "ema": ema}, {"net": opt}, ema)
        bar.close()
        if self.main:
            save_checkpoint(self._ckpt("teacher-final"), {"ema": ema}, self.net_config, {"stage": "teacher", "images_seen": images_seen, "objective": self.objective}, self.preset_toml)
        acc.wait_for_everyone()

    def _report(self, stage: str, images_seen: int, total: int, batch: int, ips: float, eta: float, **losses) -> None:
        """A ``progress`` event with the stage's losses, and the status line (kimg, progress, speed, ETA)."""
        self._event(stage, "progress", kimg=images_seen / 1000, images_per_s=ips, **losses)
        self._status(kimg=images_seen / 1000, progress=images_seen / total, it_per_s=ips / batch, images_per_s=ips,
                     eta_s=None if math.isinf(eta) else eta)

    def _after_step(self, stage: str, before: int, images_seen: int, done: bool, stop: bool, bar, every_ckpt: float,
                    every_eval: float, nets: dict, opts: dict, eval_net: EDMPrecond) -> None:
        """Checkpoint (every ``every_ckpt`` kimg, at the end and on stop), live evaluation of ``eval_net``
        (every ``every_eval`` kimg and at the end), and the stop itself.

        Raises:
            StopRequested: after the checkpoint, when a stop was requested.
        """
        if self._boundaries(before, images_seen, every_ckpt) or done or stop:
            self._save(f"{stage}-latest", nets, opts, stage, images_seen)
        if (self._boundaries(before, images_seen, every_eval) or done) and not stop:
            self._live_eval(stage, eval_net, images_seen)
        if stop:
            bar.close()
            raise StopRequested()

    def _save(self, name: str, nets: dict, opts: dict, stage: str, images_seen: int) -> None:
        if self.main:
            save_checkpoint(self._ckpt(name), nets, self.net_config, {"stage": stage, "images_seen": images_seen, "objective": self.objective}, self.preset_toml, opts)
            self._event(stage, "checkpoint", kimg=images_seen / 1000, name=name)
        self.acc.wait_for_everyone()

    # ---------------------------------------------------------------- live evaluation
    def _live_eval(self, stage: str, net: EDMPrecond, images_seen: int) -> None:
        """Grid from fixed seeds and a small-n live FID (labelled with n) on the main process."""
        if self.main:
            e = self.p.eval
            model = "teacher-truncated" if stage == "teacher" and self.p.corruption.noise_sigma > 0 else ("teacher-full" if stage == "teacher" else "generator")
            kimg = images_seen / 1000
            grid = self._generate(model, net, range(e.grid_n))
            save_grid(grid.images, self.run.samples / f"{model}.png")
            save_grid(grid.images, self.run.samples / f"{model}-kimg{int(kimg):06d}.png")
            self._event(stage, "grid", kimg=kimg, model=model, file=f"samples/{model}.png")
            if e.live_fid_n >= 2:
                seeds = range(e.live_fid_n)
                samples = grid if e.live_fid_n == e.grid_n else self._generate(model, net, seeds)
                rec = self.evaluator.fid_record(model, samples, seeds)
                if rec["fid"] is not None:
                    log.info("%s live FID %.2f (n=%d) at %.1f kimg", model, rec["fid"], rec["n"], kimg)
                    self._event(stage, "fid", kimg=kimg, model=model, fid=rec["fid"], kid=rec["kid"], n=rec["n"],
                                seeds=rec["seeds"], weights=rec["weights"], reference=rec["reference"])
        self.acc.wait_for_everyone()

    def _generate(self, model: str, net: EDMPrecond, seeds: range):
        e = self.p.eval
        stop = e.stop_sigma if e.stop_sigma is not None else self.p.corruption.noise_sigma
        was_training = net.training
        net.eval()
        try:
            return generate(model, net, seeds, self.shape, batch_size=e.batch_size, steps=e.teacher_steps, rho=self.p.network.rho,
                            stop_sigma=stop, sigma_init=self.p.distill.sigma_init, op=self.op, device=self.acc.device)
        finally:
            net.train(was_training)

    # ---------------------------------------------------------------- distillation
    def distill(self) -> None:
        """Phase II: RSD (METHOD.md §3). Fake score, generator and generator EMA start from the teacher EMA."""
        d = self.p.distill
        acc = self.acc
        total = int(round(d.kimg * 1000))
        teacher_ck = load_checkpoint(self.teacher_final())
        stored = teacher_ck.network_config("ema")
        if stored != self.net_config:
            diff = {k: (stored.get(k), self.net_config.get(k)) for k in set(stored) | set(self.net_config) if stored.get(k) != self.net_config.get(k)}
            raise ValueError(f"teacher checkpoint {teacher_ck.path} was trained with another network/preconditioning: {diff} (stored, preset)")
        teacher = teacher_ck.build("ema").eval().requires_grad_(False)
        fake = copy.deepcopy(teacher).train().requires_grad_(True)
        gen = copy.deepcopy(teacher).train().requires_grad_(True)
        gen_ema = copy.deepcopy(teacher).eval()
        opt_f = torch.optim.Adam(fake.parameters(), lr=d.lr_fake_score, betas=(d.fake_score_beta1, 0.999), eps=1e-8)
        opt_g = torch.optim.Adam(gen.parameters(), lr=d.lr_generator, betas=(d.generator_beta1, 0.999), eps=1e-8)
        images_seen = 0
        latest = self._ckpt("distill-latest")
        if checkpoint_exists(latest):
            ck = load_checkpoint(latest)
            for name, m in (("fake_score", fake), ("generator", gen), ("generator_ema", gen_ema)):
                ck.load_weights(name, m)
            ck.load_optimizers({"fake_score": opt_f, "generator": opt_g})
            images_seen = int(ck.state["images_seen"])
            log.info("distill: resumed at %.3f kimg from %s", images_seen / 1000, ck.path)
        fake, gen, opt_f, opt_g = acc.prepare(fake, gen, opt_f, opt_g)
        teacher.to(acc.device)
        gen_ema.to(acc.device)
        world, rank = acc.num_processes, acc.process_index
        batch = d.batch_size
        if batch % world:
            raise ValueError(f"distill.batch_size = {batch} must be divisible by the number of processes ({world})")
        local = batch // world
        sigma_c = self.p.corruption.noise_sigma
        clock = _Clock(images_seen, total)
        bar = tqdm(total=total, initial=images_seen, unit="img", unit_scale=True, desc="distill", disable=not self.main, dynamic_ncols=True)
        acc_f, acc_g, nan_total, steps = 0.0, 0.0, 0, 0
        last_report = time.perf_counter()
        self._status(state="running", stage="distill", kimg=images_seen / 1000, kimg_total=total / 1000, progress=images_seen / max(total, 1))
        log.info("distill: α = %g, σ_init = %g, t_max = %g, %g kimg, batch %d", d.alpha, d.sigma_init, d.t_max, d.kimg, batch)
        fake_raw, gen_raw = acc.unwrap_model(fake), acc.unwrap_model(gen)
        while images_seen < total:
            torch.manual_seed(_step_seed(self.p.run.seed, "distill", rank, images_seen))
            # fake-score step: the teacher's objective on A(x_g) + σ_c ε, no gradient to G
            fake.train()
            gen_raw.eval()
            z = torch.randn(local, *self.shape, device=acc.device)
            with acc.autocast():
                loss_f = fake_score_step_loss(gen_raw, fake, self.op, z, objective=self.objective, noise_sigma=sigma_c,
                                              sigma_init=d.sigma_init, p_mean=self.p.teacher.p_mean, p_std=self.p.teacher.p_std)
            acc.backward(loss_f)
            _sanitise_grads(fake)
            if d.grad_clip_fake_score:
                acc.clip_grad_norm_(fake.parameters(), d.grad_clip_fake_score)
            opt_f.step()
            opt_f.zero_grad(set_to_none=True)
            # generator step: SiD through A, fake-score parameters frozen, inputs differentiable
            fake_raw.eval().requires_grad_(False)
            gen.train()
            z = torch.randn(local, *self.shape, device=acc.device)
            with acc.autocast():
                step = generator_step_loss(gen, teacher, fake_raw, self.op, z, sigma_init=d.sigma_init, alpha=d.alpha,
                                           t_max=d.t_max, rho=self.p.network.rho, loss_scale=d.loss_scale_generator)
            acc.backward(step.loss)
            _sanitise_grads(gen)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            fake_raw.requires_grad_(True)
            update_ema(gen_ema, gen_raw, ema_beta(batch, images_seen, d.ema_halflife_kimg, d.ema_rampup_ratio))
            before, images_seen = images_seen, images_seen + batch
            acc_f += float(loss_f.detach())
            acc_g += float(step.loss.detach())
            nan_total += step.nan_count
            steps += 1
            bar.update(batch)
            stop = self._stop_requested()
            done = images_seen >= total
            if time.perf_counter() - last_report > 5 or done or stop:
                ips, eta = clock.rates(images_seen)
                bar.set_postfix(loss_f=f"{acc_f / steps:.4g}", loss_g=f"{acc_g / steps:.4g}", img_s=f"{ips:.1f}")
                self._report("distill", images_seen, total, batch, ips, eta, loss_fake_score=acc_f / steps, loss_generator=acc_g / steps, nan_count=nan_total)
                if nan_total:
                    log.warning("distill: %d generator samples with non-finite loss dropped so far", nan_total)
                acc_f, acc_g, steps = 0.0, 0.0, 0
                last_report = time.perf_counter()
            self._after_step("distill", before, images_seen, done, stop, bar, d.checkpoint_every_kimg, self.p.eval.distill_every_kimg,
                             {"fake_score": fake_raw, "generator": gen_raw, "generator_ema": gen_ema},
                             {"fake_score": opt_f, "generator": opt_g}, gen_ema)
        bar.close()
        if self.main:
            save_checkpoint(self._ckpt("generator-final"), {"generator_ema": gen_ema}, self.net_config,
                            {"stage": "distill", "images_seen": images_seen, "sigma_init": d.sigma_init}, self.preset_toml)
        acc.wait_for_everyone()

    # ---------------------------------------------------------------- final evaluation
    def evaluate(self, models: tuple[str, ...] = MODELS) -> dict:
        """Final metrics of the given models (default teacher-full, teacher-truncated, generator), their
        grids, the teacher-denoiser PSNR/SSIM; merged into metrics.json (other models' records are kept).

        Proximal FID is computed for the generator, the model it selects checkpoints of (METHOD.md §4).

        Raises:
            StopRequested: SIGTERM/SIGINT arrived; checked before each model.
        """
        metrics: dict = self.run.read_metrics()
        if self.main:
            self._status(state="running", stage="evaluate", progress=0.0)
            e = self.p.eval
            teacher = load_checkpoint(self.teacher_final()).build("ema").eval().requires_grad_(False).to(self.acc.device)
            gen_path = self._ckpt("generator-final")
            generator = load_checkpoint(gen_path).build("generator_ema").eval().requires_grad_(False).to(self.acc.device) if checkpoint_exists(gen_path) else None
            save_grid(self.dataset.measurements(range(min(e.grid_n, len(self.dataset))))[0], self.run.samples / "measurements.png")
            clean_u8, _ = clean_reference(self.p, e.grid_n)
            save_grid(to_float(clean_u8), self.run.samples / "clean.png")
            models = [m for m in models if not (m == "teacher-truncated" and self.p.corruption.noise_sigma == 0 and e.stop_sigma is None)]
            for i, model in enumerate(models):
                if STOP.is_set():  # evaluation restarts from scratch on resume; nothing to checkpoint
                    raise StopRequested()
                net = generator if model == "generator" else teacher
                if net is None:
                    continue
                seeds = range(e.final_fid_n)
                samples = self._generate(model, net, seeds)
                grid = samples.images[: e.grid_n] if e.final_fid_n >= e.grid_n else self._generate(model, net, range(e.grid_n)).images
                save_grid(grid, self.run.samples / f"{model}.png")
                if e.final_fid_n >= 2:
                    rec = self.evaluator.fid_record(model, samples, seeds, proximal=model == "generator")
                else:
                    rec = {"model": model, "n": e.final_fid_n, "nfe": samples.nfe, "images_per_s": round(samples.images_per_s, 3),
                           "weights": "generator EMA" if model == "generator" else "teacher EMA", "fid": None, "note": "final FID disabled (eval.final_fid_n < 2)"}
                metrics[model] = rec
                log.info("%s: FID %s KID %s (n=%d, NFE %s, %.1f img/s)", model, _fmt(rec.get("fid")), _fmt(rec.get("kid")), rec["n"], rec["nfe"], rec["images_per_s"])
                self._status(progress=(i + 1) / (len(models) + 1))
            den = self.evaluator.denoiser_psnr(teacher)
            if den:
                metrics["teacher-denoiser"] = den
                log.info("teacher denoiser D(y; σ_c): PSNR %.2f dB, SSIM %.3f (noisy input %.2f dB), n=%d", den["psnr"], den["ssim"], den["psnr_noisy_input"], den["n"])
            atomic_write_json(self.run.metrics_path, metrics)
            self._event("evaluate", "metrics", **{"metrics": metrics})
        self.acc.wait_for_everyone()
        return metrics

    # ---------------------------------------------------------------- pipeline
    def run_all(self) -> None:
        """Teacher (unless already final or given), distillation (unless final), evaluation.

        Raises:
            StopRequested: after SIGTERM/SIGINT, with a checkpoint written and status ``stopped``.
        """
        if not checkpoint_exists(self.teacher_final()):
            if self.p.teacher.checkpoint:
                raise FileNotFoundError(f"teacher.checkpoint = {self.p.teacher.checkpoint!r}: no teacher checkpoint found at {self.teacher_final()}")
            self.train_teacher()
        if not checkpoint_exists(self._ckpt("generator-final")):
            self.distill()
        self.evaluate()
        self._status(state="done", stage="evaluate", progress=1.0, eta_s=0)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
