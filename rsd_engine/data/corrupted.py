"""The corrupted view of a dataset: one frozen measurement y_i = A(x_i) + σε_i per image index.

The operator's random parts and the noise of image i are drawn from an RNG seeded by
(corruption seed, i) (:meth:`rsd_engine.operators.measurement.Measurement.frozen`; docs/method.md §1 and
§7, pitfall 1), so every epoch, every process and every resumed run sees the same measurement of image
i, and two images get independent draws.
"""

from __future__ import annotations

import torch

from ..operators.measurement import Measurement
from ..seeding import epoch_seed

__all__ = ["CorruptedDataset", "to_float", "IndexStream"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Images as float32 on the [-1, 1] scale: uint8 (any shape) via u/127.5 − 1; images that are
    already floating point (the MRI sources' complex slices) are returned as float32 unchanged."""
    if images.is_floating_point():
        return images.to(torch.float32)
    return images.to(torch.float32) / 127.5 - 1.0


class CorruptedDataset:
    """Measurements of a clean collection, computed on demand and identical on every call.

    Args:
        clean_u8: clean images (N, C, H, W), uint8 (or float32 complex MRI slices, see
            :func:`to_float`). Kept private: training code only sees :meth:`measurements`.
        measurement: the forward model y = A(x) + σ_c ε and its per-index seeding rule.
    """

    def __init__(self, clean_u8: torch.Tensor, measurement: Measurement):
        self._clean = clean_u8
        self.measurement = measurement

    def __len__(self) -> int:
        return self._clean.shape[0]

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        """Shape (C', H', W') of one measurement, as the operator states it."""
        return self.measurement.output_shape

    @torch.no_grad()
    def measurements(self, indices) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The frozen measurements of the given image indices.

        Args:
            indices: 1-D sequence or tensor of ints in [0, N).

        Returns:
            (y of shape (B, C', H', W') float32, never clipped; operator parameters such as masks,
            each (B, …)).

        Raises:
            IndexError: an index outside [0, N).
        """
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"image index out of range [0, {len(self)})")
        return self.measurement.frozen(to_float(self._clean[idx]), idx.tolist())


class IndexStream:
    """Deterministic data order addressed by images seen: a fresh permutation of [0, N) per epoch,
    seeded by (seed, epoch), consumed as one stream of global batches.

    Because the order is a function of the position, resuming at ``images_seen`` continues the
    exact same sequence with no saved sampler state. With P processes the global batch is split
    into P contiguous shards.

    Args:
        n: dataset size N ≥ 1.
        seed: run seed.
    """

    def __init__(self, n: int, seed: int):
        self.n = int(n)
        self.seed = int(seed)
        self._epoch = -1
        self._perm = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            rng = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._perm = torch.randperm(self.n, generator=rng)
            self._epoch = epoch
        return self._perm

    def batch(self, images_seen: int, global_batch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Indices of this process's share of the global batch starting at stream position ``images_seen``.

        Returns:
            LongTensor of shape (global_batch // world,).
        """
        per = global_batch // world
        start = images_seen + rank * per
        out = []
        pos = start
        while len(out) < per:
            epoch, offset = divmod(pos, self.n)
            take = min(per - len(out), self.n - offset)
            out.extend(self._permutation(epoch)[offset : offset + take].tolist())
            pos += take
        return torch.tensor(out, dtype=torch.long)
