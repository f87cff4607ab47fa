"""``rsd-engine export``: a run's one-step generator (or its teacher) as a diffusers pipeline folder.

Layout of an export (``DIR``)::

    DIR/model_index.json   the pipeline class (RSDOneStepPipeline | RSDHeunPipeline) and its settings:
                           σ_init or the Heun steps, ρ and truncation σ; the EDM preconditioning
                           (σ_data, σ_min, σ_max, mask channels)
    DIR/unet/              the bare diffusers UNet2DModel (config.json, diffusion_pytorch_model.safetensors)
    DIR/README.md          model card: the run's preset, operator, σ, kimg and final metrics
    DIR/preset.toml        the run's effective preset

``diffusers.UNet2DModel.from_pretrained(DIR, subfolder="unet")`` loads the UNet with diffusers alone;
``rsd_engine.pipelines.RSDOneStepPipeline.from_pretrained(DIR)`` loads the generator with its
preconditioning. The folder is written beside the target under a temporary name and renamed into
place at the end (:func:`rsd_engine.io.runs.replace_folder`), so a failed export leaves nothing behind;
what an export killed outright left beside the same target is removed by the next export there.

Runs whose networks take a k-space mask (``multicoil_mri``) are refused: their generator's input is
P_Ã(σ_init z), a projection through a line mask and coil maps that only the engine's operator
computes (docs/method.md §9), so a pipeline of the bare UNet and the pixel-mask preconditioning would
produce wrong images. Sample such runs with ``rsd-engine sample``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import assembly
from .evaluate.generate import ModelSampler
from .io import config as cfg
from .io.runs import (
    EXPORT_MODELS,
    EXPORT_WEIGHTS,
    FINAL_NETWORK,
    GENERATOR_FINAL,
    RAW_NETWORK,
    TEACHER_FINAL,
    OutputError,
    RunDir,
    partial_folder,
    remove_partial_folders,
    replace_folder,
)
from .model_card import model_card
from .models.networks import EDMPrecond, count_parameters
from .pipelines import RSDHeunPipeline, RSDOneStepPipeline
from .train.checkpoints import checkpoint_exists, load_checkpoint

__all__ = ["ExportError", "export_run", "export_network"]


class ExportError(ValueError):
    """An export was refused or its inputs could not be read; ``str(err)`` says what to do."""


def export_run(run_dir: str | Path, out: str | Path, model: str = "generator", weights: str = "ema", force: bool = False) -> Path:
    """Write the pipeline folder of a run's generator or teacher at ``out``.

    Args:
        run_dir: the run folder (holding preset.toml and checkpoints/).
        out: the export folder to write; missing parent folders are created.
        model: ``generator`` (:class:`RSDOneStepPipeline`) or ``teacher`` (:class:`RSDHeunPipeline`).
        weights: ``ema`` (the weights every metric of the run is measured with) or ``raw`` (the trained
            weights at the last step, from the stage's ``<stage>-latest`` checkpoint).
        force: replace ``out`` when it exists and is not empty.

    Returns:
        ``out``.

    Raises:
        ExportError: no run at ``run_dir``; no final checkpoint of ``model`` (the stage has not
            finished); raw weights that were not kept; ``out`` is a file, a symbolic link, the run
            folder, a folder holding it or one of its checkpoints/ and samples/ folders; ``out`` is
            not empty and ``force`` is off; unreadable checkpoint files; a run whose operator's
            networks take a k-space mask (``multicoil_mri``, see the module docstring); ``out``
            cannot be written (read-only or full disk: one line naming the folder).
    """
    if model not in EXPORT_MODELS or weights not in EXPORT_WEIGHTS:
        raise ExportError(
            f"model {model!r}, weights {weights!r}: allowed models {', '.join(EXPORT_MODELS)}; weights {', '.join(EXPORT_WEIGHTS)}"
        )
    run = RunDir(run_dir)
    if not run.exists():
        raise ExportError(f"{run_dir} holds no run (no preset.toml)")
    out = _target(run, Path(out), force)
    try:
        preset = assembly.load(run.preset_path)
    except cfg.PresetError as e:
        raise ExportError(f"the run's preset cannot be read: {e}") from None
    op = assembly.operator_class(preset)
    if op.cond_kind != "pixel_mask":
        raise ExportError(
            f"{run.preset_path}: corruption.operator = {op.name!r} cannot be exported: its networks take the "
            "k-space projection P_Ã(·) through a line mask and coil maps, which the diffusers pipelines do not "
            f"compute; sample the run with `rsd-engine sample {run.path}` instead"
        )
    net, states = _network(run, preset, model, weights)
    sampler = ModelSampler.from_preset(preset)
    pipe = export_network(net, model, sampler)
    card = model_card(preset, run.read_metrics(), model, weights, states, sampler, count_parameters(net))
    return _write(out, pipe, {"README.md": card, "preset.toml": run.preset_path.read_text(encoding="utf-8")})


def export_network(net: EDMPrecond, model: str, sampler: ModelSampler) -> RSDOneStepPipeline | RSDHeunPipeline:
    """The pipeline of ``net`` (its UNet shared, not copied) with the sampler settings of the run.

    Args:
        net: the generator (``model="generator"``) or the teacher (``model="teacher"``).
        model: one of :data:`rsd_engine.io.runs.EXPORT_MODELS`.
        sampler: the run's :class:`ModelSampler` (σ_init; Heun steps, ρ and truncation σ).

    Raises:
        ExportError: a network with a k-space mask (``cond_kind = "kspace_mask"``), which the
            pipelines cannot drive; a DDPM++/NCSN++ network (``network.architecture`` other than
            ``"unet2d"``), whose backbone is no diffusers ``UNet2DModel``.
    """
    c = net.config
    if not isinstance(net, EDMPrecond):
        raise ExportError(
            f"a {type(net).__name__} (network.architecture ddpmpp/ncsnpp) cannot be exported as a diffusers pipeline: "
            "the pipelines drive a UNet2DModel; sample the run with `rsd-engine sample RUN_DIR` instead"
        )
    if c.cond_kind != "pixel_mask":
        raise ExportError(f"a network with cond_kind = {c.cond_kind!r} (multi-coil MRI) cannot be exported as a diffusers pipeline")
    precond = {"sigma_data": c.sigma_data, "sigma_min": c.sigma_min, "sigma_max": c.sigma_max, "cond_channels": c.cond_channels}
    if model == "generator":
        return RSDOneStepPipeline(net.unet, sigma_init=sampler.sigma_init, **precond)
    return RSDHeunPipeline(net.unet, num_inference_steps=sampler.steps, rho=sampler.rho, stop_sigma=sampler.truncation_sigma, **precond)


def _target(run: RunDir, out: Path, force: bool) -> Path:
    """``out`` made absolute after the refusals of :func:`export_run`."""
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link; give the folder itself")
    target = out.resolve()
    home = run.path.resolve()
    if target == home or target in home.parents:
        raise ExportError(f"{out} is the run folder or holds it; export into a new folder such as {run.export_folder('generator')}")
    for own in (run.checkpoints, run.samples):
        own = own.resolve()
        if target == own or own in target.parents:
            raise ExportError(
                f"{out} is inside the run's {own.name}/ folder; export into a new folder such as {run.export_folder('generator')}"
            )
    if target.exists() and not target.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; choose another folder or replace it with --force")
    return target


def _network(run: RunDir, preset, model: str, weights: str) -> tuple[EDMPrecond, dict[str, dict]]:
    """The network to export and the states (images seen …) of the final checkpoints the model card cites:
    ``{"teacher": …, "generator": …}``, those that exist."""
    checkpoints = {
        "teacher": (run.teacher_final(preset.teacher.checkpoint), TEACHER_FINAL, "teacher"),
        "generator": (run.checkpoint(GENERATOR_FINAL), GENERATOR_FINAL, "distill"),
    }
    states = {name: load_checkpoint(folder).state for name, (folder, _, _) in checkpoints.items() if checkpoint_exists(folder)}
    folder, final, stage = checkpoints[model]
    if model not in states:
        what = "distillation" if stage == "distill" else "teacher training"
        raise ExportError(
            f"run {run.path} has no final {model} ({folder} is missing): its {what} has not finished; "
            f"resume it with `rsd-engine run --resume {run.path}` and export once it is done"
        )
    name = FINAL_NETWORK[final]
    if weights == "raw":
        if model == "teacher" and preset.teacher.checkpoint:
            raise ExportError(f"this run's teacher comes from {preset.teacher.checkpoint}; export the raw teacher from that run")
        folder, name = run.latest(stage), RAW_NETWORK[final]
        latest = load_checkpoint(folder).state.get("images_seen") if checkpoint_exists(folder) else None
        if latest != states[model].get("images_seen"):
            raise ExportError(
                f"the raw {model} weights of the last step are not kept ({folder} is at {latest} images, "
                f"{checkpoints[model][0].name} at {states[model].get('images_seen')}); export --weights ema"
            )
    try:
        net = load_checkpoint(folder).build(name)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one message naming it
        raise ExportError(f"cannot load network {name!r} from {folder}: {e}") from e
    return net.eval(), states


def _write(out: Path, pipe, files: dict[str, str]) -> Path:
    """Save ``pipe`` and the text ``files`` in a temporary folder beside ``out``, then swap it in; on any
    failure the temporary folder and the parent folders created for ``out`` are removed again. Partial
    folders of earlier, killed exports to ``out`` are removed first.

    Raises:
        ExportError: ``out`` or its parent cannot be written (the system's reason, naming the folder).
    """
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_partial_folders(out)
        tmp = partial_folder(out)
        try:
            tmp.chmod(0o755)  # a folder to share, not mkdtemp's private 0700
            pipe.save_pretrained(tmp)
            for file_name, text in files.items():
                (tmp / file_name).write_text(text, encoding="utf-8")
            replace_folder(tmp, out, old=tmp.with_name(tmp.name.replace(".tmp-", ".old-")))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after a swap; the partial folder after a failure
    except BaseException as e:
        for folder in created:
            if folder.exists() and not any(folder.iterdir()):
                os.rmdir(folder)
        if isinstance(e, OSError):
            raise ExportError(str(OutputError.of(out, "the export folder", e))) from None
        raise
    return out
