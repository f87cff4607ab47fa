"""Whether a valid preset fits this machine's memory, checked before any work starts.

The preset schema bounds every size field (:mod:`rsd_engine.io.config`); this module checks what follows
from the machine: the memory that one training step, one evaluation batch and the evaluation's held
samples need at the very least, against the memory of the device they run on (GPU memory on a GPU,
else the host's RAM, shared by all processes of the run).

Every estimate is a *lower bound*, so a refusal is certain and a preset that passes may still run
out of memory on a smaller margin:

- a trained network: its 3×3 convolutions of the UNet's down path alone (``layers_per_block`` blocks
  of two convolutions per level, 9·c² weights each), times 4 bytes for the weights, the gradient and
  Adam's two moments, plus 4 bytes for its EMA (20 bytes a weight);
- activations of one image: the input and the two convolution outputs of each residual block on the
  down path, which backpropagation keeps (4 bytes a value, 2 under mixed precision);
- the final and live evaluation hold all their samples (float32) and Inception features (2048 float32
  each) in host memory; one feature batch holds ``eval.batch_size`` 3×299×299 float32 images.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["memory_bytes", "fit_problems", "FEATURE_DIM", "INCEPTION_SIDE"]

#: Size of a TF-Inception pool3 feature and the side its input is resized to.
FEATURE_DIM = 2048
INCEPTION_SIDE = 299
_GIB = 2**30


def memory_bytes(device: str) -> tuple[int, str]:
    """Memory available to the run on this machine: (bytes, what it is).

    Args:
        device: ``accelerate.device`` of the preset (``auto`` | ``cpu`` | ``cuda``).

    Returns:
        the first GPU's total memory when the run would use a GPU, else the host's physical RAM (the
        cgroup limit when lower, as in a container).
    """
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory), "GPU memory"
    return _host_ram(), "RAM"


def _host_ram() -> int:
    """Physical RAM in bytes, or the cgroup (v2) memory limit of this process when that is lower."""
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return ram
    return min(ram, int(limit)) if limit.isdigit() else ram


def _conv_weights(net) -> int:
    """Lower bound on the weights of the UNet: two 3×3 convolutions per residual block on the down path."""
    return sum(net.layers_per_block * 2 * 9 * c * c for c in net.block_out_channels)


def _activations_per_image(preset) -> int:
    """Lower bound on the activation values one image keeps for backpropagation (see the module docstring)."""
    net, res = preset.network, preset.data.resolution
    values = preset.data.channels * res * res
    for level, c in enumerate(net.block_out_channels):
        side = max(res >> level, 1)
        values += net.layers_per_block * 2 * c * side * side
    return values


def _gib(n: float) -> str:
    return f"{n / _GIB:,.1f} GiB" if n >= _GIB else f"{n / 2**20:,.1f} MiB"


def fit_problems(preset, num_processes: int | None = None) -> list[tuple[str, str]]:
    """The size fields of a valid preset that cannot fit this machine's memory (lower bounds, see the
    module docstring), each with what it needs, what the machine has and what is allowed here.

    Args:
        preset: a validated :class:`rsd_engine.io.config.Preset`.
        num_processes: processes of the run (default ``accelerate.num_processes``); each takes an equal
            share of a global batch, on its own GPU or all in the host's RAM.

    Returns:
        ``(dotted field, message)`` pairs; empty when everything fits.
    """
    procs = max(int(num_processes or preset.accelerate.num_processes), 1)
    memory, what = memory_bytes(preset.accelerate.device)
    ram = _host_ram()
    on_gpu = what == "GPU memory"
    share = 1 if on_gpu else procs  # processes that share one memory
    value_bytes = 2 if preset.accelerate.mixed_precision != "no" else 4
    per_image = _activations_per_image(preset) * value_bytes
    weights = _conv_weights(preset.network)
    problems: list[tuple[str, str]] = []

    # one training step: (trained networks × 20 + frozen or averaged networks × 4) bytes a weight, per process
    for field, stage, batch, weight_bytes in (
        ("teacher.batch_size", "teacher", preset.teacher.batch_size, 20),
        ("distill.batch_size", "distillation", preset.distill.batch_size, 2 * 20 + 4 + 4),
    ):
        fixed = weights * weight_bytes * share
        if fixed > memory:
            problems.append(
                (
                    "network.block_out_channels",
                    f"{preset.network.block_out_channels}: the {stage} networks alone need at least "
                    f"{_gib(fixed)} and this machine has {_gib(memory)} of {what}; choose fewer channels or layers",
                )
            )
            break
        need = fixed + per_image * batch * share / procs
        if need > memory:
            most = int((memory - fixed) // per_image * procs / share)
            problems.append(
                (
                    field,
                    f"{batch}: one {stage} step needs at least {_gib(need)} and this machine has {_gib(memory)} of {what}"
                    f" ({procs} process{'es' if procs > 1 else ''}); allowed here: at most {most}",
                )
            )

    e, image_values = preset.eval, preset.data.channels * preset.data.resolution**2
    # a sampling batch keeps at least its input and the first convolution's output; a feature batch
    # (main process, only with FID) its images resized for Inception
    sample_image = (preset.data.channels + preset.network.block_out_channels[0]) * preset.data.resolution**2 * value_bytes
    feature_image = 3 * INCEPTION_SIDE**2 * 4 if e.final_fid_n >= 2 or e.live_fid_n >= 2 else 0
    batch_need = e.batch_size * max(sample_image * share / procs, feature_image)
    if batch_need > memory:
        most = int(memory // max(sample_image * share / procs, feature_image))
        problems.append(
            (
                "eval.batch_size",
                f"{e.batch_size}: one sampling or feature batch needs at least {_gib(batch_need)} and this "
                f"machine has {_gib(memory)} of {what}; allowed here: at most {most}",
            )
        )
    held = image_values * 4 + FEATURE_DIM * 4  # a sample and its features, host memory
    for field, n in (("eval.final_fid_n", e.final_fid_n), ("eval.live_fid_n", e.live_fid_n)):
        if n * held > ram:
            problems.append(
                (
                    field,
                    f"{n}: the evaluation holds its samples and their features, at least {_gib(n * held)}, and this "
                    f"machine has {_gib(ram)} of RAM; allowed here: at most {ram // held}",
                )
            )
    ref_held = image_values + FEATURE_DIM * 4  # uint8 reference images and their features
    if e.reference_n * ref_held > ram:
        problems.append(
            (
                "eval.reference_n",
                f"{e.reference_n}: the reference statistics hold at least {_gib(e.reference_n * ref_held)}, and "
                f"this machine has {_gib(ram)} of RAM; allowed here: at most {ram // ref_held}",
            )
        )
    if e.psnr_n * image_values * 4 * 3 > ram:
        problems.append(
            (
                "eval.psnr_n",
                f"{e.psnr_n}: the PSNR/SSIM images (clean, noisy, denoised) need at least "
                f"{_gib(e.psnr_n * image_values * 12)}, and this machine has {_gib(ram)} of RAM; allowed here: at most "
                f"{ram // (image_values * 12)}",
            )
        )
    return problems
