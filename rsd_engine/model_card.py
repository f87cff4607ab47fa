"""The model card (README.md) of an exported run (:mod:`rsd_engine.export`): what the model learned
from, how long it trained, its final metrics with their n and reference, and how to sample it."""

from __future__ import annotations

from . import assembly
from .evaluate.generate import ModelSampler
from .io import config as cfg
from .io.runs import GENERATOR, TEACHER_FULL, TEACHER_TRUNCATED

__all__ = ["model_card"]

_PIPELINE = {"generator": "RSDOneStepPipeline", "teacher": "RSDHeunPipeline"}
_METRIC_MODELS = {"generator": (GENERATOR,), "teacher": (TEACHER_TRUNCATED, TEACHER_FULL)}


def model_card(
    preset: cfg.Preset, metrics: dict, model: str, weights: str, states: dict[str, dict], sampler: ModelSampler, parameters: int
) -> str:
    """Markdown model card with a Hugging Face metadata header.

    Args:
        preset: the run's validated preset.
        metrics: the run's metrics.json ({model: record}; may be empty before the final evaluation).
        model: ``generator`` or ``teacher``.
        weights: ``ema`` or ``raw``.
        states: state.json of the run's final checkpoints by ``teacher`` / ``generator`` (images seen).
        sampler: the run's :class:`ModelSampler` (σ_init, Heun steps, truncation σ, batch size).
        parameters: the network's parameter count.
    """
    d, c, t, g = preset.data, preset.corruption, preset.teacher, preset.distill
    params = assembly.operator_params(preset)
    operator = f"`{c.operator}`" + (f" ({', '.join(f'{k} = {v}' for k, v in params.items())})" if params else "")
    title = "one-step RSD generator" if model == "generator" else "RSD teacher (EDM Heun sampler)"
    lines = [
        "---",
        "library_name: diffusers",
        "pipeline_tag: unconditional-image-generation",
        f"tags: [restoration-score-distillation, {'one-step' if model == 'generator' else 'edm'}, learned-from-corrupted-data]",
        "---",
        "",
        f"# {preset.run.name}: {title}",
        "",
    ]
    if preset.run.description:
        lines += [preset.run.description, ""]
    lines += [
        f"Learned from corrupted measurements only, y = A(x) + σ_c·ε with A = {operator} and σ_c = {c.noise_sigma} on the "
        f"[-1, 1] image scale. A diffusion teacher was trained on y with the `{assembly.resolve_objective(preset)}` objective, then "
        "distilled with Restoration Score Distillation (Zhang et al., ICLR 2026; Score identity Distillation through A) into "
        "a one-step generator x = G(σ_init·z; σ_init).",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        f"| data | `{d.source}`{' at `' + d.path + '`' if d.path else ''}, {d.resolution}×{d.resolution}, {d.channels} channel(s)"
        f"{', first ' + str(d.max_images) + ' training images' if d.max_images else ''} |",
        f"| operator A | {operator}, corruption seed {c.seed} |",
        f"| measurement noise σ_c | {c.noise_sigma} |",
        f"| teacher | `{assembly.resolve_objective(preset)}`, {_kimg(states.get('teacher'), t.kimg)}, batch {t.batch_size}, lr {t.lr}"
        f"{', from ' + t.checkpoint if t.checkpoint else ''} |",
    ]
    if model == "generator":
        lines.append(
            f"| distillation | {_kimg(states.get('generator'), g.kimg)}, batch {g.batch_size}, α = {g.alpha}, σ_init = {g.sigma_init}, "
            f"lr {g.lr_generator} (generator), {g.lr_fake_score} (fake score) |"
        )
    else:
        lines.append(f"| sampler | Heun, {sampler.steps} steps, ρ = {sampler.rho}, truncation σ = {sampler.truncation_sigma} |")
    lines += [
        f"| network | diffusers `UNet2DModel`, {parameters:,} parameters, block_out_channels {list(preset.network.block_out_channels)}, "
        f"EDM preconditioning σ_data = {preset.network.sigma_data}, σ ∈ [{preset.network.sigma_min}, {preset.network.sigma_max}] |",
        f"| weights | {_weights(model, weights)} |",
        f"| run seed | {preset.run.seed} |",
        "",
        "## Final metrics",
        "",
        *_metrics(metrics, model, weights),
        "",
        "## Use",
        "",
        *_usage(model, sampler),
        "",
        "## Files",
        "",
        f"- `model_index.json`: the pipeline class `{_PIPELINE[model]}` and its settings (EDM preconditioning"
        f"{', σ_init' if model == 'generator' else ', Heun steps, ρ, truncation σ'}).",
        '- `unet/`: the bare UNet; `diffusers.UNet2DModel.from_pretrained(DIR, subfolder="unet")` loads it with diffusers alone. '
        "It is F of D(x; σ) = c_skip·x + c_out·F(c_in·x; ¼ ln σ) (EDM, Karras et al. 2022, Table 1), not a noise predictor.",
        "- `preset.toml`: the run's effective preset.",
    ]
    return "\n".join(lines) + "\n"


def _kimg(state: dict | None, planned: float) -> str:
    """Images seen by a stage (thousands), from its final checkpoint, else the planned kimg."""
    if state and "images_seen" in state:
        return f"{state['images_seen'] / 1000:g} kimg ({state['images_seen']} images seen)"
    return f"{planned:g} kimg planned (final checkpoint not found)"


def _weights(model: str, weights: str) -> str:
    """Which weights the export holds, in words."""
    name = "generator" if model == "generator" else "teacher"
    return f"{name} EMA" if weights == "ema" else f"{name} raw weights of the last step (not averaged)"


def _metrics(metrics: dict, model: str, weights: str) -> list[str]:
    """A Markdown table of the model's records in metrics.json, or a line saying there are none."""
    rows = [(m, metrics[m]) for m in _METRIC_MODELS[model] if isinstance(metrics.get(m), dict)]
    if not rows:
        return ["No final metrics: the run's metrics.json holds none for this model yet (`rsd-engine evaluate RUN_DIR`)."]
    out = ["| model | FID | KID | n | seeds | reference | weights | NFE | images/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        fid = f"{r['fid']:.2f}" if isinstance(r.get("fid"), (int, float)) else "—"
        kid = f"{r['kid']:.4f}" if isinstance(r.get("kid"), (int, float)) else "—"
        seeds = "–".join(str(s) for s in r.get("seeds", [])) or "—"
        ips = f"{r['images_per_s']:.1f}" if isinstance(r.get("images_per_s"), (int, float)) else "—"
        out.append(
            f"| {name} | {fid} | {kid} | {r.get('n', '—')} | {seeds} | {r.get('reference', '—')} | {r.get('weights', '—')} | "
            f"{r.get('nfe', '—')} | {ips} |"
        )
    for name, r in rows:
        if isinstance(r.get("proximal_fid"), (int, float)):
            out += [
                "",
                f"Proximal FID of {name} (its samples passed through A, against {r.get('proximal_reference', 'the measurements')}): "
                f"{r['proximal_fid']:.2f}.",
            ]
        if r.get("note"):
            out += ["", f"{name}: {r['note']}"]
    out += ["", "FID at small n is biased upwards: compare only numbers with the same n and reference."]
    if weights == "raw":
        out += ["", "These metrics were measured with the EMA weights; this export holds the raw weights."]
    return out


def _usage(model: str, sampler: ModelSampler) -> list[str]:
    """The Python lines that sample the export, and how to match ``rsd-engine sample`` exactly."""
    pipeline, cli_model = _PIPELINE[model], ("generator" if model == "generator" else sampler.teacher_model)
    masked = sampler.objective.measurement.has_mask
    lines = [
        "```python",
        f"from rsd_engine.pipelines import {pipeline}",
        "",
        f'pipe = {pipeline}.from_pretrained("DIR")            # this folder; .to("cuda") for a GPU',
    ]
    if masked:
        lines += [
            "from rsd_engine.io import config",
            "from rsd_engine.evaluate.generate import ModelSampler",
            'mask = ModelSampler.from_preset(config.load("DIR/preset.toml")).seed_masks(range(16))  # the engine\'s masks of seeds 0–15',
            "images = pipe(seeds=range(16), mask=mask).images   # 16 PIL images",
        ]
    else:
        lines.append('images = pipe(seeds=range(16)).images   # 16 PIL images; output_type="pt" gives the [-1, 1] tensors')
    lines += [
        "```",
        "",
        f"Seeds are the engine's: image i starts from the latent of seed i, so `rsd-engine sample RUN_DIR --model {cli_model} "
        "--seed-start S --n N` "
        f"draws the same images as `seeds=range(S, S + N)` in calls of at most {sampler.batch_size} seeds (`eval.batch_size`, "
        "the engine's batch; other batch sizes can change the last float bits).",
    ]
    if masked:
        lines += [
            "",
            "This network was trained on masked measurements: every call needs `mask` (B, 1, H, W), 1 where the network sees "
            "its input, drawn like the training masks (the lines above draw the engine's own).",
        ]
    if model == "teacher":
        lines += ["", f"`stop_sigma=0` runs the sampler to σ = 0 (teacher-full); the default stops at σ = {sampler.truncation_sigma}."]
    return lines
