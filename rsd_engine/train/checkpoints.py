"""Resumable checkpoints: safetensors weights, optimiser states, training state and the preset,
written atomically as one folder (each file with :func:`rsd_engine.io.runs.atomic_write_bytes`, the
folder swapped in by rename).

Folder layout (``run_dir/checkpoints/<name>/``)::

    <net>.safetensors   one per network (e.g. net, ema, generator, fake_score, generator_ema);
                        metadata "config" = the network's diffusers config (config.json of
                        ``save_pretrained``: the EDMPrecond arguments, ``_class_name``, version)
    optimizers.pt       {name: optimizer.state_dict()} — tensors and numbers only,
                        loaded with torch.load(weights_only=True)
    state.json          images seen, stage and any extra numbers
    preset.toml         the effective preset

A checkpoint loads in a fresh interpreter with only this package installed: no pickled classes.

Checkpoints written before the networks became diffusers models keep the same arguments under the
metadata key "network_config"; they load unchanged.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..io.runs import atomic_write_bytes, atomic_write_text, complete_checkpoint, partial_folder, replace_folder
from ..models.networks import EDMPrecond, SongUNetPrecond, network_from_config
from .finite import require_finite_weights

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_exists", "load_network", "Checkpoint", "CONFIG_KEY", "LEGACY_CONFIG_KEY"]

#: safetensors metadata key of a network's diffusers config (JSON).
CONFIG_KEY = "config"
#: The key older checkpoints used for the same arguments (without ``_class_name``).
LEGACY_CONFIG_KEY = "network_config"


def save_checkpoint(
    folder: Path,
    networks: dict[str, nn.Module],
    state: dict[str, Any],
    preset_toml: str,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> Path:
    """Write a checkpoint folder atomically: build it beside the target, fsync, swap by rename.

    A previous checkpoint of the same name is replaced only once the new one is complete; a crash
    leaves either the old or the new folder (``<name>.old`` is picked up by :func:`load_checkpoint`)
    and a partial ``.<name>.tmp-*`` folder, removed on resume (:meth:`rsd_engine.io.runs.RunDir.remove_partial_writes`).

    Args:
        folder: target folder, e.g. ``run_dir/checkpoints/teacher-latest``.
        networks: name → module (weights saved as float32 safetensors; a diffusers model's config,
            e.g. an :class:`~rsd_engine.models.networks.EDMPrecond`'s, is stored in its file's metadata).
        state: JSON-serialisable training state (``images_seen`` …).
        preset_toml: the effective preset.
        optimizers: name → optimizer, saved with their full state.

    Returns:
        the folder written.

    Raises:
        NonFiniteError: a network's weights are not finite (nothing is written).
    """
    folder = Path(folder)
    require_finite_weights(networks, f"checkpoint {folder.name}")
    tmp = partial_folder(folder)
    try:
        for name, module in networks.items():
            tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
            meta = {CONFIG_KEY: module.to_json_string()} if isinstance(module, ConfigMixin) else None
            atomic_write_bytes(tmp / f"{name}.safetensors", safetensors_bytes(tensors, metadata=meta))
        if optimizers:
            buf = io.BytesIO()
            torch.save({k: o.state_dict() for k, o in optimizers.items()}, buf)
            atomic_write_bytes(tmp / "optimizers.pt", buf.getvalue())
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=2, sort_keys=True))
        atomic_write_text(tmp / "preset.toml", preset_toml)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def checkpoint_exists(folder: Path) -> bool:
    """Whether a complete checkpoint (or its ``.old`` predecessor) is at ``folder``."""
    return complete_checkpoint(folder) is not None


class Checkpoint:
    """A loaded checkpoint folder: ``state`` (dict), ``preset_toml`` (str), ``path``; weights and
    optimiser states are read on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.state = json.loads((path / "state.json").read_text())
        self.preset_toml = (path / "preset.toml").read_text()

    def config(self, name: str) -> dict:
        """The diffusers config (the :class:`EDMPrecond` arguments) stored with network ``name``; from
        older checkpoints, the same arguments under their ``network_config`` key.

        Raises:
            FileNotFoundError: the checkpoint holds no network ``name``.
            ValueError: the file holds no network config (a module that is no diffusers model).
        """
        path = self.path / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {self.path} holds no network {name!r} ({path.name} is missing)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        text = meta.get(CONFIG_KEY) or meta.get(LEGACY_CONFIG_KEY)
        if text is None:
            raise ValueError(f"{path} holds no network config (metadata {CONFIG_KEY!r}); it was not written by rsd_engine for a network")
        return json.loads(text)

    def load_weights(self, name: str, module: nn.Module) -> None:
        """Copy the weights of network ``name`` into ``module`` (strict).

        Raises:
            RuntimeError: shapes or keys differ (e.g. the preset's network changed).
            NonFiniteError: the stored weights are not finite (``"checkpoint <path>: non-finite weights in <name> …"``).
        """
        module.load_state_dict(load_file(str(self.path / f"{name}.safetensors")), strict=True)
        require_finite_weights({name: module}, f"checkpoint {self.path}")

    def build(self, name: str) -> EDMPrecond | SongUNetPrecond:
        """A new network of the stored config's class (:meth:`config`, :func:`rsd_engine.models.networks.network_from_config`),
        with the stored weights.

        Raises:
            FileNotFoundError, ValueError: as :meth:`config`; an unknown network class.
            NonFiniteError: as :meth:`load_weights`.
        """
        net = network_from_config(self.config(name))
        self.load_weights(name, net)
        return net

    def load_optimizers(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Restore the optimisers' running state (Adam moments, step counts) saved under the same names.

        The hyperparameters of every param group (lr, betas, eps, weight decay) stay those the
        optimisers were built with, i.e. the current preset's: ``load_state_dict`` would bring back
        the saved ones, so a run resumed after editing ``distill.lr_generator`` would silently keep
        the old learning rate.
        """
        states = torch.load(self.path / "optimizers.pt", map_location="cpu", weights_only=True)
        for k, opt in optimizers.items():
            configured = [{key: v for key, v in g.items() if key != "params"} for g in opt.param_groups]
            opt.load_state_dict(states[k])
            for group, hyper in zip(opt.param_groups, configured):
                group.update(hyper)


def load_checkpoint(folder: Path) -> Checkpoint:
    """Open a checkpoint folder (falls back to ``<folder>.old`` after an interrupted swap).

    Raises:
        FileNotFoundError: no complete checkpoint at ``folder``.
    """
    path = complete_checkpoint(folder)
    if path is None:
        raise FileNotFoundError(f"no checkpoint at {folder} (expected state.json and *.safetensors)")
    return Checkpoint(path)


def load_network(folder: Path, name: str) -> EDMPrecond | SongUNetPrecond:
    """Shortcut: build network ``name`` from the checkpoint at ``folder`` (eval mode, no grad).

    Raises:
        FileNotFoundError: no checkpoint there.
    """
    net = load_checkpoint(folder).build(name)
    return net.eval().requires_grad_(False)
