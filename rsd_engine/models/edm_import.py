"""Published teachers: EDM-format pickles into the engine's DDPM++ / NCSN++ denoiser and a run folder.

An EDM training snapshot (``network-snapshot-*.pkl``, also SiD's and Ambient Diffusion's) is a dict
whose ``ema`` entry is the network: a persistence record of ``EDMPrecond`` (Karras et al. 2022,
Table 1) holding a ``SongUNet`` (DDPM++ or NCSN++, appendix F.2). :func:`load_edm_teacher` reads it
with the restricted reader of :mod:`rsd_engine.models.edm_pickle` (no code of the file runs), takes the
constructor arguments from the records (``_init_kwargs``) and the weights from their parameters, and
returns a :class:`~rsd_engine.models.networks.SongUNetPrecond` whose ``net(x, σ)`` is EDM's D(x; σ).
:func:`import_teacher` writes a run folder whose ``teacher-final`` is that network, so that
``rsd-engine run --resume RUN_DIR`` distils it with the preset's operator and σ_c.

Refused by name: other preconditionings (``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond``: their
c_skip/c_out/c_in/c_noise differ from the engine's EDM preconditioning), other backbones
(``DhariwalUNet``, ADM), class-conditional networks, the ``skip`` encoder/decoder variants and any
constructor argument this reader does not know.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import tomli
import torch

from .. import assembly
from ..io import config as cfg
from ..io.runs import FINAL_NETWORK, TEACHER_FINAL, RunDir
from ..train.checkpoints import save_checkpoint
from .edm_pickle import EDMPickleError, PersistentRecord, module_tensors, read_pickle
from .networks import SongUNetPrecond

__all__ = ["EDMPickleError", "load_edm_teacher", "read_edm_teacher", "import_teacher"]

#: Preconditioning classes that are refused, and why.
_OTHER_PRECONDS = {
    "VPPrecond": "variance-preserving preconditioning (c_skip = 1, c_out = −σ, c_noise = 999·t(σ))",
    "VEPrecond": "variance-exploding preconditioning (c_skip = 1, c_out = σ, c_noise = ln(σ/2))",
    "iDDPMPrecond": "improved-DDPM preconditioning (discrete σ grid, learned variance)",
}
#: EDM's SongUNet defaults (its constructor's documented defaults) for arguments a record leaves out.
_SONGUNET_DEFAULTS = {
    "label_dim": 0,
    "augment_dim": 0,
    "model_channels": 128,
    "channel_mult": [1, 2, 2, 2],
    "channel_mult_emb": 4,
    "num_blocks": 4,
    "attn_resolutions": [16],
    "dropout": 0.10,
    "label_dropout": 0,
    "embedding_type": "positional",
    "channel_mult_noise": 1,
    "encoder_type": "standard",
    "decoder_type": "standard",
    "resample_filter": [1, 1],
}
#: SongUNet arguments that are ours under the same name.
_SAME = (
    "model_channels",
    "channel_mult",
    "channel_mult_emb",
    "num_blocks",
    "attn_resolutions",
    "dropout",
    "embedding_type",
    "channel_mult_noise",
    "encoder_type",
    "resample_filter",
    "augment_dim",
)
#: EDM's sampler defaults, for an EDMPrecond recorded with σ_min = 0, σ_max = ∞ (its constructor's defaults).
_SAMPLER_SIGMAS = (0.002, 80.0)


def _network_record(data: Any) -> PersistentRecord:
    """The network of a snapshot: ``data["ema"]`` (EDM, SiD, Ambient), or ``data`` itself when it is a record."""
    net = data.get("ema") if isinstance(data, dict) else data
    if not isinstance(net, PersistentRecord):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise EDMPickleError(f"no network under 'ema' (found {keys}); an EDM training snapshot holds dict(ema=network, …)")
    return net


def _plain(v: Any) -> Any:
    """Numbers and lists of the records as Python values (numpy scalars → float/int)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v.item() if hasattr(v, "item") and not isinstance(v, torch.Tensor) else v


def read_edm_teacher(
    path: str | Path, sigma_min: float | None = None, sigma_max: float | None = None
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The :class:`~rsd_engine.models.networks.SongUNetPrecond` arguments and state dict of an EDM-format pickle.

    Args:
        path: the pickle.
        sigma_min, sigma_max: the noise range to record (default: the pickle's, or EDM's sampler range
            0.002…80 where it records 0 and ∞).

    Raises:
        EDMPickleError: a refused or unreadable file, a refused class or argument (named).
    """
    path = Path(path)
    rec = _network_record(read_pickle(path))
    if rec.class_name in _OTHER_PRECONDS:
        raise EDMPickleError(
            f"{path}: {rec.class_name} ({_OTHER_PRECONDS[rec.class_name]}) is not supported; the engine's networks "
            "use EDM's preconditioning (EDMPrecond)"
        )
    if rec.class_name != "EDMPrecond":
        raise EDMPickleError(f"{path}: network class {rec.class_name!r} is not supported; allowed: EDMPrecond around a SongUNet")
    s = rec.state
    model = (s.get("_modules") or {}).get("model")
    if not isinstance(model, PersistentRecord) or model.class_name != "SongUNet":
        name = model.class_name if isinstance(model, PersistentRecord) else type(model).__name__
        raise EDMPickleError(f"{path}: backbone {name!r} is not supported; allowed: SongUNet (DDPM++, NCSN++)")
    kwargs = model.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or model.state.get("_init_args"):
        raise EDMPickleError(f"{path}: the SongUNet record holds no keyword constructor arguments (_init_kwargs)")
    known = {"img_resolution", "in_channels", "out_channels", *_SONGUNET_DEFAULTS}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise EDMPickleError(f"{path}: SongUNet argument(s) {', '.join(unknown)} not supported")
    a = {**_SONGUNET_DEFAULTS, **{k: _plain(v) for k, v in kwargs.items()}}
    refusals = [
        (a["label_dim"] != 0, f"label_dim = {a['label_dim']} (class-conditional networks are not supported)"),
        (a["decoder_type"] != "standard", f"decoder_type = {a['decoder_type']!r} (allowed: 'standard')"),
        (a["encoder_type"] not in ("standard", "residual"), f"encoder_type = {a['encoder_type']!r} (allowed: 'standard', 'residual')"),
        (
            a["embedding_type"] not in ("positional", "fourier"),
            f"embedding_type = {a['embedding_type']!r} (allowed: 'positional', 'fourier')",
        ),
        (a["in_channels"] < a["out_channels"], f"in_channels {a['in_channels']} < out_channels {a['out_channels']}"),
    ]
    bad = [why for refused, why in refusals if refused]
    if bad:
        raise EDMPickleError(f"{path}: {'; '.join(bad)}")
    lo, hi = float(_plain(s.get("sigma_min", 0))), float(_plain(s.get("sigma_max", math.inf)))
    arguments = {
        "resolution": int(a["img_resolution"]),
        "channels": int(a["out_channels"]),
        "cond_channels": int(a["in_channels"] - a["out_channels"]),
        **{k: a[k] for k in _SAME},
        "sigma_data": float(_plain(s.get("sigma_data", 0.5))),
        "sigma_min": sigma_min if sigma_min is not None else (lo if lo > 0 else _SAMPLER_SIGMAS[0]),
        "sigma_max": sigma_max if sigma_max is not None else (hi if math.isfinite(hi) else _SAMPLER_SIGMAS[1]),
        "cond_kind": "pixel_mask",
    }
    return arguments, module_tensors(rec)


def _build(path: Path, arguments: dict, tensors: dict[str, torch.Tensor]) -> SongUNetPrecond:
    try:
        net = SongUNetPrecond(**arguments)
    except ValueError as e:
        raise EDMPickleError(f"{path}: {e}") from None
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EDMPickleError(f"{path}: weights do not match the recorded architecture; missing {missing[:5]}, unexpected {unexpected[:5]}")
    return net.eval().requires_grad_(False)


def load_edm_teacher(path: str | Path, sigma_min: float | None = None, sigma_max: float | None = None) -> SongUNetPrecond:
    """An EDM-format pickle's network (under ``ema``) as the engine's denoiser, read without running its code.

    ``net(x, sigma)`` with x of shape (B, C, H, W) (images in [-1, 1] plus noise of std σ) and sigma
    of shape (B,) returns the denoised D(x; σ) (B, C, H, W), as EDM's network does (EDM Table 1).

    Args:
        path: the pickle (EDM, SiD, Ambient-Diffusion snapshot layout).
        sigma_min, sigma_max: the noise range the samplers use (default: the pickle's, or 0.002…80).

    Returns:
        a :class:`~rsd_engine.models.networks.SongUNetPrecond` in eval mode, gradients off, on the CPU.

    Raises:
        EDMPickleError: a refused name, class or argument, an unreadable file, weights that do not
            fit the recorded architecture.
    """
    path = Path(path)
    arguments, tensors = read_edm_teacher(path, sigma_min, sigma_max)
    return _build(path, arguments, tensors)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_teacher(pkl: str | Path, preset_path: str | Path, out: str | Path, overrides: list[str] | None = None) -> RunDir:
    """Write a run folder whose ``teacher-final`` is an EDM-format pickle's network, ready for
    ``rsd-engine run --resume OUT`` (distillation with the preset's operator and σ_c, then evaluation).

    The run's preset is ``preset_path`` (with ``overrides``) whose ``[network]`` is set to the imported
    network (architecture ``ddpmpp`` or ``ncsnpp`` and its sizes, σ_data); the preset's σ_min/σ_max are
    kept as the samplers' range.

    Args:
        pkl: the pickle.
        preset_path: a preset whose data shape matches the network.
        out: the new run folder.
        overrides: ``section.key=value`` overrides of the preset.

    Returns:
        the run folder.

    Raises:
        EDMPickleError: as :func:`load_edm_teacher`.
        PresetError: a bad preset, or one whose data shape or operator's mask channels differ from the
            network's (named fields).
        FileExistsError: ``out`` already holds a run.
    """
    pkl = Path(pkl)
    preset = assembly.load(preset_path, overrides)
    arguments, tensors = read_edm_teacher(pkl, preset.network.sigma_min, preset.network.sigma_max)
    op = assembly.operator_class(preset)
    wanted = {
        "data.resolution": (preset.data.resolution, arguments["resolution"]),
        "data.channels": (preset.data.channels, arguments["channels"]),
    }
    problems = [(k, f"{mine}: the teacher in {pkl} takes {theirs}") for k, (mine, theirs) in wanted.items() if mine != theirs]
    if int(op.cond_channels) != arguments["cond_channels"]:
        problems.append(
            (
                "corruption.operator",
                f"{preset.corruption.operator!r} gives the networks {op.cond_channels} mask channel(s); "
                f"the teacher in {pkl} takes {arguments['cond_channels']}",
            )
        )
    if problems:
        raise cfg.PresetError(problems, str(preset_path))
    variant = "ncsnpp" if arguments["embedding_type"] == "fourier" else "ddpmpp"
    if {k: arguments[k] for k in SongUNetPrecond.VARIANTS[variant]} != SongUNetPrecond.VARIANTS[variant]:
        raise EDMPickleError(
            f"{pkl}: a SongUNet mixing the DDPM++ and NCSN++ settings "
            f"({ {k: arguments[k] for k in SongUNetPrecond.VARIANTS[variant]} }) is not supported"
        )
    data = tomli.loads(cfg.dumps(preset))
    data["network"].update(
        architecture=variant,
        sigma_data=arguments["sigma_data"],
        **{
            k: arguments[k]
            for k in ("model_channels", "channel_mult", "channel_mult_emb", "num_blocks", "attn_resolutions", "dropout", "augment_dim")
        },
    )
    preset = assembly.check(cfg.from_dict(data, str(preset_path)), str(preset_path))
    net = _build(pkl, arguments, tensors)
    preset_toml = assembly.frozen_text(preset)
    run = RunDir.create(out, preset_toml)
    digest = _sha256(pkl)
    save_checkpoint(
        run.checkpoint(TEACHER_FINAL),
        {FINAL_NETWORK[TEACHER_FINAL]: net},
        {"images_seen": 0, "imported_from": str(pkl.resolve()), "imported_sha256": digest},
        preset_toml,
    )
    run.append_event(
        "teacher",
        "teacher_imported",
        source=str(pkl.resolve()),
        sha256=digest,
        parameters=sum(p.numel() for p in net.parameters()),
        architecture=variant,
    )
    run.write_status(state="stopped", stage="teacher", progress=1.0, error=None)
    return run
