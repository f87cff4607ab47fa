"""Non-finite guards: the error a run stops with when a loss, gradient, weight, sample or metric input
is NaN or ±Inf, and the checks that find them.

Training skips a step whose loss or gradient is not finite (:meth:`rsd_engine.train.stage.StepContext.update`)
and stops after a run of such steps or on non-finite weights; checkpoints, samples and metrics refuse
non-finite values, so a model that is not finite never gets a final checkpoint, a FID or a PSNR.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NonFiniteError", "require_finite", "grads_finite", "require_finite_weights"]


class NonFiniteError(ValueError):
    """A value that must be finite is NaN or ±Inf. The message names where (stage and kimg, checkpoint,
    network, samples or metric input) and what went non-finite."""


def require_finite(values: torch.Tensor, what: str) -> None:
    """Check that every entry of a tensor is finite.

    Args:
        values: a tensor of any shape and dtype (integer tensors are always finite).
        what: names the tensor in the message, e.g. ``"generator samples"``.

    Raises:
        NonFiniteError: ``"<what>: k of n values are not finite (NaN or ±Inf)"``.
    """
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(f"{what}: {bad} of {values.numel()} values are not finite (NaN or ±Inf)")


def grads_finite(module: nn.Module) -> bool:
    """Whether every gradient of ``module``'s parameters is finite (parameters without a gradient count
    as finite). One host synchronisation."""
    flags = [torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None]
    return bool(torch.stack(flags).all()) if flags else True


def require_finite_weights(modules: dict[str, nn.Module], where: str) -> None:
    """Check the parameters and buffers of named networks (one host synchronisation per network).

    Args:
        modules: name → module (trained networks, EMAs, a network read from a checkpoint).
        where: names the place in the message, e.g. ``"teacher stage at 0.048 kimg"`` or a checkpoint.

    Raises:
        NonFiniteError: ``"<where>: non-finite weights in <name> (k tensors, e.g. <tensor name>)"``.
    """
    for name, module in modules.items():
        tensors = module.state_dict()
        if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors.values()]).all()):
            continue
        bad = [key for key, t in tensors.items() if not bool(torch.isfinite(t).all())]
        raise NonFiniteError(f"{where}: non-finite weights in {name} ({len(bad)} tensor{'s' if len(bad) > 1 else ''}, e.g. {bad[0]})")
