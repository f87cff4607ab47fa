"""One run of the method: teacher → RSD distillation → evaluation, with resume (docs/architecture.md).

:class:`Experiment` builds the run's parts once from the preset: the forward model
(:class:`rsd_engine.operators.measurement.Measurement`), the frozen training measurements, the objective, the
model sampler and the evaluation; then hands the stages of :mod:`rsd_engine.train.training` to the one
loop, :class:`rsd_engine.train.stage.StageRunner`.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from . import assembly
from .data import training_measurements
from .evaluate.evaluation import Evaluation
from .evaluate.generate import ModelSampler
from .io import config as cfg
from .io.runs import GENERATOR_FINAL, MODELS, RunDir
from .io.signals import StopPolicy
from .train.checkpoints import checkpoint_exists
from .train.stage import StageRunner
from .train.training import rsd_stage, teacher_stage

__all__ = ["Experiment", "make_accelerator"]


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


class Experiment:
    """One run: teacher training, RSD distillation and evaluation, with resume.

    Args:
        preset: validated preset (the run folder's frozen one when resuming).
        run: the run folder.
        accelerator: from :func:`make_accelerator`.

    Raises:
        rsd_engine.data.DataError: missing or malformed training data.
    """

    def __init__(self, preset: cfg.Preset, run: RunDir, accelerator: Accelerator):
        self.preset = preset
        self.run = run
        self.acc = accelerator
        self.measurement = assembly.build_measurement(preset).to(accelerator.device)
        self.dataset = training_measurements(preset, self.measurement)
        self.objective = assembly.build_objective(preset, self.measurement)
        self.sampler = ModelSampler.from_preset(preset, self.objective)
        self.stops = StopPolicy(accelerator)

        def stop() -> bool:
            """:meth:`stop_requested`, looked up at each call (so a test may replace the method)."""
            return self.stop_requested()

        self.evaluation = Evaluation(preset, run, accelerator, self.dataset, self.sampler, self.stops)
        self.runner = StageRunner(
            accelerator=accelerator,
            run_dir=run,
            seed=preset.run.seed,
            preset_toml=cfg.dumps(preset),
            state={"objective": self.objective.name},
            stop=stop,
        )

    def stop_requested(self) -> bool:
        """Whether any process received SIGTERM/SIGINT (all processes agree, so they stop together): the
        stage loop's check of :class:`~rsd_engine.io.signals.StopPolicy`, a collective."""
        return self.stops.agreed()

    def teacher_final(self):
        """Folder of the trained teacher EMA (``teacher.checkpoint`` when set, else this run's teacher-final)."""
        return self.run.teacher_final(self.preset.teacher.checkpoint)

    def train_teacher(self) -> None:
        """Phase I (docs/method.md §2): train the teacher and its EMA; writes ``teacher-final``.

        Raises:
            StopRequested: after SIGTERM/SIGINT, with ``teacher-latest`` written.
        """
        if self.acc.is_main_process:
            self.run.write_status(stage="teacher")
        self.runner.run(teacher_stage(self.preset, self.dataset, self.objective, self.evaluation.live))

    def distill(self) -> None:
        """Phase II (docs/method.md §3): RSD from the teacher EMA; writes ``generator-final``. First the
        teacher's live-FID baseline that the generator's live FIDs are compared with
        (:meth:`rsd_engine.evaluate.evaluation.Evaluation.teacher_baseline`), then, on a fresh start, the live
        evaluation (grid, live FID) of the initialised generator at 0 kimg, so the race starts where
        RSD starts.

        Raises:
            StopRequested: after SIGTERM/SIGINT, with ``distill-latest`` written.
            FileNotFoundError, ValueError: no teacher, or one of another network (see :func:`rsd_stage`).
        """
        if self.acc.is_main_process:  # what fails from here on fails in distillation
            self.run.write_status(stage="distill")
        stage = rsd_stage(self.preset, self.teacher_final(), self.objective, self.evaluation.live, self.acc.device)
        self.evaluation.teacher_baseline()
        if not checkpoint_exists(self.run.latest(stage.name)) and not self._evaluated_at_start(stage.name):
            stage.evaluate(0, 0.0)  # the initialised generator (a copy of the teacher EMA) at 0 kimg: where RSD starts
        self.runner.run(stage)

    def _evaluated_at_start(self, stage: str) -> bool:
        """Whether the live evaluation at 0 kimg of ``stage`` is already in events.jsonl (a resume
        before the stage's first checkpoint does not measure it twice)."""
        return any(e.get("stage") == stage and e.get("kind") == "grid" and e.get("kimg") == 0 for e in self.run.read_events())

    def evaluate(self, models: tuple[str, ...] = MODELS, reuse: bool = True) -> dict:
        """Final evaluation of ``models`` into metrics.json (:meth:`rsd_engine.evaluate.evaluation.Evaluation.final`;
        ``reuse=False`` computes every FID again)."""
        return self.evaluation.final(models, reuse)

    def run_all(self) -> None:
        """Teacher (unless already final or given), distillation (unless final), evaluation of
        ``eval.models``; status ``done``.

        Raises:
            StopRequested: after SIGTERM/SIGINT, with a checkpoint written.
            FileNotFoundError: ``teacher.checkpoint`` is set but holds no teacher.
        """
        if not checkpoint_exists(self.teacher_final()):
            if self.preset.teacher.checkpoint:
                raise FileNotFoundError(
                    f"teacher.checkpoint = {self.preset.teacher.checkpoint!r}: no teacher checkpoint found at {self.teacher_final()}"
                )
            self.train_teacher()
        if not checkpoint_exists(self.run.checkpoint(GENERATOR_FINAL)):
            self.distill()
        self.evaluate(tuple(self.preset.eval.models))
        if self.acc.is_main_process:
            self.run.write_status(state="done", stage="evaluate", progress=1.0, eta_s=0)
