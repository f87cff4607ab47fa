"""Reproducible random streams: every seed the engine derives comes from :func:`mix_seed`.

A stream is named by a base seed and integer coordinates (image index, process rank, images seen,
epoch, evaluation sample). The rules below are the only places that turn coordinates into a seed;
their weights are distinct primes, so two streams of one run do not share a seed in practice. The
values are those every run folder so far was made with: changing a rule changes the frozen
measurements of a dataset (and the cached proximal-FID references keyed by the corruption), the data
order and the training noise, so bitwise resume of an existing run would no longer hold.

See docs/method.md §1 (one frozen measurement per image) and §5 (exact resume).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "mix_seed",
    "item_rng",
    "step_seed",
    "epoch_seed",
    "STAGE_STREAMS",
    "EVAL_NOISE_SEED",
    "PROXIMAL_NOISE_SEED",
    "EVAL_MASK_SEED",
    "RECONSTRUCTION_NOISE_SEED",
    "MRI_PHASE_SEED",
]

_MODULUS = 2**63 - 1

#: Stream number of each training stage in :func:`step_seed`.
STAGE_STREAMS = {"teacher": 1, "distill": 2}

#: Base seeds of the evaluation streams (never a corruption seed in practice): the noise of the noisy
#: copy of the test split (teacher-denoiser PSNR; the measurements of the MRI restoration baseline),
#: the corruption of generated samples (proximal FID), the network masks of evaluation samples (mask
#: operators) and the noise of the teacher's MRI reconstruction input.
EVAL_NOISE_SEED = 10_000_019
PROXIMAL_NOISE_SEED = EVAL_NOISE_SEED + 7
EVAL_MASK_SEED = 20_000_003
RECONSTRUCTION_NOISE_SEED = EVAL_NOISE_SEED + 13

#: Base seed of the smooth random phase each MRI slice simulated from a magnitude volume is given
#: (index = the slice's position, :mod:`rsd_engine.data.mri`): part of the data, not of the corruption.
MRI_PHASE_SEED = 30_000_001


def mix_seed(parts: Sequence[int], weights: Sequence[int]) -> int:
    """Σ parts[i]·weights[i] mod (2⁶³ − 1): a non-negative seed for ``torch.Generator.manual_seed``.

    Args:
        parts: integer coordinates of the stream (any sign; Python integers do not overflow).
        weights: one positive multiplier per part.

    Raises:
        ValueError: ``parts`` and ``weights`` differ in length.
    """
    if len(parts) != len(weights):
        raise ValueError(f"{len(parts)} seed parts for {len(weights)} weights")
    return sum(int(p) * int(w) for p, w in zip(parts, weights)) % _MODULUS


def item_rng(base: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for item ``index`` of a collection seeded by ``base``.

    Seed = base·1 000 003 + index·7 919 + 12 345 (mod 2⁶³ − 1). Used for the frozen measurement of
    training image ``index`` (``base`` = ``corruption.seed``) and for the evaluation streams
    (``base`` = :data:`EVAL_NOISE_SEED` …, ``index`` = sample seed).
    """
    return torch.Generator().manual_seed(mix_seed((base, index, 1), (1_000_003, 7_919, 12_345)))


def step_seed(run_seed: int, stage: str, rank: int, images_seen: int) -> int:
    """Seed of torch's global RNG for one training step: (run seed, stage, process rank, images seen).

    Seed = run_seed·1 000 003 + stream·999 983 + rank·7 919 + images_seen (mod 2⁶³ − 1), stream from
    :data:`STAGE_STREAMS`. A function of the position only, so a resumed run draws what an
    uninterrupted one would have.

    Raises:
        KeyError: unknown stage.
    """
    return mix_seed((run_seed, STAGE_STREAMS[stage], rank, images_seen), (1_000_003, 999_983, 7_919, 1))


def epoch_seed(run_seed: int, epoch: int) -> int:
    """Seed of the data permutation of one epoch: run_seed·100 003 + epoch (mod 2⁶³ − 1)."""
    return mix_seed((run_seed, epoch), (100_003, 1))
